"""CycleGAN's generator and PatchGAN discriminator: counts, shapes, and their layers."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxgan.models import PatchDiscriminator, ResnetGenerator, count_params
from jaxgan.models.layers import instance_norm, reflect_pad


def shapes(model, size):
  v = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), jnp.zeros((1, size, size, 3))))
  out = jax.eval_shape(lambda v, x: model.apply(v, x), v, jnp.zeros((2, size, size, 3)))
  return v, out


def test_reference_parameter_counts_and_shapes():
  v, out = shapes(ResnetGenerator(), 256)
  assert count_params(v["params"]) == 11_378_179
  assert out.shape == (2, 256, 256, 3)
  v, out = shapes(PatchDiscriminator(), 256)
  assert count_params(v["params"]) == 2_764_737
  assert out.shape == (2, 30, 30, 1)
  for size, n_layers in ((256, 3), (24, 3), (20, 3), (36, 3), (12, 2), (8, 2)):
    model = PatchDiscriminator(ndf=2, n_layers=n_layers)
    grid = shapes(model, size)[1].shape[1] if model.grid_size(size) else 0
    assert model.grid_size(size) == grid, (size, n_layers)
  assert PatchDiscriminator().grid_size(20) == 0
  # Only parameters: instance norm has no affine weights and no running statistics.
  assert set(v) == {"params"}


def test_generator_output_range_and_other_sizes():
  model = ResnetGenerator(ngf=8, n_blocks=2)
  x = jax.random.uniform(jax.random.PRNGKey(0), (2, 32, 32, 3), minval=-1, maxval=1)
  v = model.init(jax.random.PRNGKey(1), x)
  y = model.apply(v, x)
  assert y.shape == (2, 32, 32, 3) and float(jnp.abs(y).max()) <= 1
  # Fully convolutional: a 20x28 input keeps its size (multiples of 4).
  assert model.apply(v, jnp.zeros((1, 20, 28, 3))).shape == (1, 20, 28, 3)


def test_init_is_normal_002_with_zero_biases():
  v = ResnetGenerator().init(jax.random.PRNGKey(0), jnp.zeros((1, 32, 32, 3)))
  kernels = [x for p, x in jax.tree_util.tree_flatten_with_path(v["params"])[0]
             if "kernel" in jax.tree_util.keystr(p)]
  biases = [x for p, x in jax.tree_util.tree_flatten_with_path(v["params"])[0]
            if "bias" in jax.tree_util.keystr(p)]
  allk = np.concatenate([np.ravel(k) for k in kernels])
  assert abs(allk.std() - 0.02) < 0.001 and abs(allk.mean()) < 0.001
  assert all(float(jnp.abs(b).max()) == 0 for b in biases)


def test_instance_norm_matches_numpy():
  x = np.random.default_rng(0).normal(3, 2, (2, 5, 6, 4)).astype(np.float32)
  mean = x.mean(axis=(1, 2), keepdims=True)
  var = x.var(axis=(1, 2), keepdims=True)
  np.testing.assert_allclose(instance_norm(jnp.asarray(x)), (x - mean) / np.sqrt(var + 1e-5),
                             rtol=1e-4, atol=1e-5)
  y = instance_norm(jnp.asarray(x, jnp.bfloat16))
  assert y.dtype == jnp.bfloat16
  # One-pass variance away from zero: a mean 10 standard deviations out (activations that
  # each layer normalises stay near 1).
  far = np.random.default_rng(1).normal(10, 1, (2, 16, 16, 3)).astype(np.float32)
  want = (far - far.mean(axis=(1, 2), keepdims=True)) / np.sqrt(
      far.astype(np.float64).var(axis=(1, 2), keepdims=True) + 1e-5)
  np.testing.assert_allclose(instance_norm(jnp.asarray(far)), want, atol=3e-4)


def _autodiff_instance_norm(x, eps=1e-5):
  """The forward formula alone (two-pass variance), for jax to differentiate."""
  mean = x.mean(axis=(1, 2), keepdims=True)
  var = jnp.mean(jnp.square(x - mean), axis=(1, 2), keepdims=True)
  return (x - mean) * jax.lax.rsqrt(var + eps)


def test_instance_norm_gradient_matches_autodiff():
  x = jax.random.normal(jax.random.PRNGKey(0), (2, 6, 5, 4)) * 2 + 0.5
  w = jax.random.normal(jax.random.PRNGKey(1), x.shape)
  loss = lambda norm: lambda x: jnp.sum(jnp.sin(norm(x)) * w)
  np.testing.assert_allclose(jax.grad(loss(instance_norm))(x),
                             jax.grad(loss(_autodiff_instance_norm))(x), rtol=1e-4, atol=1e-5)
  g = jax.grad(loss(instance_norm))(x.astype(jnp.bfloat16))
  assert g.dtype == jnp.bfloat16
  np.testing.assert_allclose(np.asarray(g, np.float32), jax.grad(loss(_autodiff_instance_norm))(x),
                             atol=0.1)
  # Second-order use (e.g. a gradient penalty) differentiates through the written-out rule.
  hvp = jax.grad(lambda x: jnp.sum(jax.grad(loss(instance_norm))(x) ** 2))(x)
  want = jax.grad(lambda x: jnp.sum(jax.grad(loss(_autodiff_instance_norm))(x) ** 2))(x)
  np.testing.assert_allclose(hvp, want, rtol=1e-3, atol=1e-4)


@pytest.mark.parametrize("model", [ResnetGenerator(ngf=4, n_blocks=1),
                                   PatchDiscriminator(ndf=4, n_layers=2)])
def test_cancelled_biases_are_exactly_those_with_zero_gradient(model):
  x = jax.random.uniform(jax.random.PRNGKey(0), (2, 32, 32, 3), minval=-1, maxval=1)
  params = model.init(jax.random.PRNGKey(1), x)["params"]
  params = jax.tree_util.tree_map(lambda p: p + 0.1, params)  # nonzero biases
  grads = jax.grad(lambda p: jnp.sum(jnp.sin(3 * model.apply({"params": p}, x))))(params)
  mask = model.cancelled_biases(params)
  flat = jax.tree_util.tree_flatten_with_path(grads)[0]
  masked = {jax.tree_util.keystr(p) for p, m in jax.tree_util.tree_flatten_with_path(mask)[0] if m}
  scale = max(float(jnp.abs(g).max()) for _, g in flat)
  for path, g in flat:
    name = jax.tree_util.keystr(path)
    if name in masked:
      assert float(jnp.abs(g).max()) < 1e-5 * scale, name
    elif "bias" in name:
      assert float(jnp.abs(g).max()) > 1e-3 * scale, name
  # Every bias but the head's (and the discriminator's first layer's) is cancelled.
  n_bias = sum("bias" in jax.tree_util.keystr(p) for p, _ in flat)
  assert len(masked) == n_bias - (1 if isinstance(model, ResnetGenerator) else 2)


@pytest.mark.parametrize("pad", [1, 3])
def test_reflection_pad_matches_numpy_and_pytorch_convention(pad):
  x = np.arange(2 * 5 * 4 * 3, dtype=np.float32).reshape(2, 5, 4, 3)
  np.testing.assert_array_equal(reflect_pad(jnp.asarray(x), pad),
                                np.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)), "reflect"))
  row = np.asarray(reflect_pad(jnp.arange(4.0).reshape(1, 1, 4, 1).repeat(2, 1), 2))[0, 2, :, 0]
  np.testing.assert_array_equal(row, [2, 1, 0, 1, 2, 3, 2, 1])  # ReflectionPad2d: no edge repeat
