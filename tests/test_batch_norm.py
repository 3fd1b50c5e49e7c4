"""jaxgan's BatchNorm (written-out gradient) against flax.linen.BatchNorm, which it replaces."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxgan.models.layers import BatchNorm, dcgan_bn_scale_init


def train_and_eval(cls, x, w, dtype, axis_name=None, **kwargs):
  """Outputs, gradients, new running statistics and an eval-mode pass of one layer."""
  layer = cls(momentum=0.9, epsilon=1e-5, dtype=dtype, axis_name=axis_name, **kwargs)
  one = x[0] if axis_name else x
  v = layer.init(jax.random.PRNGKey(0), one, use_running_average=False)
  params = jax.tree_util.tree_map(lambda a: a + 0.1, v["params"])

  def loss(params, x):
    y, new = layer.apply({"params": params, "batch_stats": v["batch_stats"]}, x,
                         use_running_average=False, mutable=["batch_stats"])
    return jnp.sum(jnp.sin(y.astype(jnp.float32)) * w), (y, new["batch_stats"])

  grad = jax.grad(loss, argnums=(0, 1), has_aux=True)
  if axis_name:
    stacked = jax.tree_util.tree_map(lambda a: jnp.stack([a] * x.shape[0]), params)
    (g_params, g_x), (y, stats) = jax.pmap(grad, axis_name=axis_name)(stacked, x)
    stats = jax.tree_util.tree_map(lambda a: a[0], stats)
  else:
    (g_params, g_x), (y, stats) = grad(params, x)
  evaluated = layer.apply({"params": params, "batch_stats": stats}, one,
                          use_running_average=True)
  return {"init": v, "y": y, "g_params": g_params, "g_x": g_x, "stats": stats,
          "eval": evaluated}


def assert_same(ours, flax_):
  for key in ours:
    a, b = jax.tree_util.tree_leaves(ours[key]), jax.tree_util.tree_leaves(flax_[key])
    assert len(a) == len(b), key
    for p, q in zip(a, b):
      assert p.dtype == q.dtype and p.shape == q.shape, key
      p, q = np.asarray(p, np.float32), np.asarray(q, np.float32)
      if key.startswith("g_"):  # the written-out gradient rounds differently
        tol = 1e-2 if a[0].dtype == jnp.bfloat16 else 1e-4
        np.testing.assert_allclose(p, q, rtol=tol, atol=tol / 5, err_msg=key)
      else:
        np.testing.assert_array_equal(p, q, err_msg=key)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
@pytest.mark.parametrize("kwargs", [{}, {"use_scale": False},
                                    {"scale_init": dcgan_bn_scale_init}])
def test_matches_flax_batch_norm(dtype, kwargs):
  x = jax.random.normal(jax.random.PRNGKey(1), (8, 5, 6, 3)) * 2 + 1
  w = jax.random.normal(jax.random.PRNGKey(2), x.shape)
  assert_same(train_and_eval(BatchNorm, x.astype(dtype), w, dtype, **kwargs),
              train_and_eval(nn.BatchNorm, x.astype(dtype), w, dtype, **kwargs))


def test_matches_flax_across_devices():
  n = jax.local_device_count()
  if n < 2:
    pytest.skip("needs several devices")
  x = jax.random.normal(jax.random.PRNGKey(1), (n, 2, 5, 6, 3)) * 2 + 1
  w = jax.random.normal(jax.random.PRNGKey(2), x.shape)
  ours = train_and_eval(BatchNorm, x, w, jnp.float32, axis_name="d")
  assert_same(ours, train_and_eval(nn.BatchNorm, x, w, jnp.float32, axis_name="d"))
  # Statistics over all devices: one device with the whole batch normalises the same way.
  whole = train_and_eval(BatchNorm, x.reshape(-1, 5, 6, 3), w.reshape(-1, 5, 6, 3),
                         jnp.float32)
  np.testing.assert_allclose(np.asarray(ours["y"]).reshape(-1, 5, 6, 3), whole["y"],
                             rtol=1e-5, atol=1e-5)
  for key in ("mean", "var"):
    np.testing.assert_allclose(ours["stats"][key], whole["stats"][key], rtol=1e-5)
