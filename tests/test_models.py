import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxgan.models import ConvLayer, Darknet, ResLayer, WideResNet, count_params


def init_shapes(model, size=32):
  return jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0),
                                           jnp.zeros((1, size, size, 3)), train=False))


def darknet_param_count(num_blocks, num_classes, nf, bottleneck=0.5):
  """Independent count from the notebook's layer list (conv weights + BN scale/bias)."""
  conv = lambda ni, no, k: ni * no * k * k + 2 * no
  total = conv(3, nf, 3)
  for nb in num_blocks:
    total += conv(nf, 2 * nf, 3)
    nf *= 2
    hidden = int(nf * bottleneck)
    total += nb * (conv(nf, hidden, 1) + conv(hidden, nf, 3))
  return total + nf * num_classes + num_classes


def test_notebook_darknet_has_exact_parameter_count():
  v = init_shapes(Darknet((1, 2, 4, 6, 3), 10, nf=32))
  assert count_params(v["params"]) == 31_410_922
  # Running statistics are state, not parameters.
  assert set(v) == {"params", "batch_stats"}


@pytest.mark.parametrize("blocks,nf,bottleneck", [((1, 1), 8, 0.5), ((2, 0, 1), 4, 1.0),
                                                  ((1,), 16, 2.0)])
def test_parameter_count_matches_layer_arithmetic(blocks, nf, bottleneck):
  v = init_shapes(Darknet(blocks, 7, nf=nf, bottleneck=bottleneck))
  assert count_params(v["params"]) == darknet_param_count(blocks, 7, nf, bottleneck)


@pytest.mark.parametrize("size", [32, 64])
def test_full_darknet_output_shape_any_size(size):
  model = Darknet((1, 2, 4, 6, 3), 10, nf=32)
  v = init_shapes(model, 32)
  x = jnp.zeros((3, size, size, 3))
  out = jax.eval_shape(lambda v, x: model.apply(v, x), v, x)
  assert out.shape == (3, 10) and out.dtype == jnp.float32
  feats = jax.eval_shape(lambda v, x: model.apply(v, x, method=Darknet.features), v, x)
  assert feats.shape == (3, 1024)  # nf doubles in each of the five groups


def test_small_darknet_runs_on_32_and_64_pixels_with_same_weights():
  model = Darknet((1, 1), 5, nf=8)
  v = model.init(jax.random.PRNGKey(0), jnp.zeros((1, 32, 32, 3)))
  for size in (32, 64, 40):
    out = model.apply(v, jax.random.normal(jax.random.PRNGKey(1), (2, size, size, 3)))
    assert out.shape == (2, 5) and bool(jnp.all(jnp.isfinite(out)))


def test_bfloat16_compute_keeps_float32_params_and_stats():
  model = Darknet((1,), 10, nf=8, dtype=jnp.bfloat16)
  v = model.init(jax.random.PRNGKey(0), jnp.zeros((1, 16, 16, 3)))
  assert {x.dtype for x in jax.tree_util.tree_leaves(v)} == {jnp.dtype(jnp.float32)}
  out, upd = model.apply(v, jnp.ones((2, 16, 16, 3)), train=True, mutable=["batch_stats"])
  assert out.dtype == jnp.bfloat16
  assert {x.dtype for x in jax.tree_util.tree_leaves(upd)} == {jnp.dtype(jnp.float32)}


def test_conv_layer_batchnorm_uses_pytorch_momentum():
  layer = ConvLayer(4, kernel_size=1, bn_momentum=0.01)
  x = jax.random.normal(jax.random.PRNGKey(0), (16, 5, 5, 3))
  v = layer.init(jax.random.PRNGKey(1), x)
  _, upd = layer.apply(v, x, train=True, mutable=["batch_stats"])
  conv = np.einsum("nhwc,oc->nhwo", np.asarray(x, np.float64),
                   np.asarray(v["params"]["Conv_0"]["kernel"][:, 0, 0], np.float64))
  batch_mean, batch_var = conv.mean((0, 1, 2)), conv.var((0, 1, 2))
  stats = upd["batch_stats"]["BatchNorm_0"]
  np.testing.assert_allclose(stats["mean"], 0.01 * batch_mean, rtol=1e-4, atol=1e-6)
  np.testing.assert_allclose(stats["var"], 0.99 + 0.01 * batch_var, rtol=1e-4)


def test_conv_layer_output_is_leaky_relu_of_normalised_conv():
  layer = ConvLayer(3, kernel_size=3)
  x = jax.random.normal(jax.random.PRNGKey(0), (2, 6, 6, 2))
  v = layer.init(jax.random.PRNGKey(1), x)
  y, _ = layer.apply(v, x, train=True, mutable=["batch_stats"])
  k = np.asarray(v["params"]["Conv_0"]["kernel"], np.float64).transpose(1, 2, 3, 0)  # HWIO
  xp = np.pad(np.asarray(x, np.float64), ((0, 0), (1, 1), (1, 1), (0, 0)))  # ks // 2
  conv = np.zeros((2, 6, 6, 3))
  for i in range(3):
    for j in range(3):
      conv += np.einsum("nhwc,co->nhwo", xp[:, i:i + 6, j:j + 6], k[i, j])
  z = (conv - conv.mean((0, 1, 2))) / np.sqrt(conv.var((0, 1, 2)) + 1e-5)
  np.testing.assert_allclose(y, np.where(z > 0, z, 0.1 * z), rtol=1e-4, atol=1e-4)


def test_reslayer_knobs():
  x = jnp.zeros((1, 8, 8, 16))
  count = lambda **kw: count_params(ResLayer(**kw).init(jax.random.PRNGKey(0), x)["params"])
  assert count() == 16 * 8 + 2 * 8 + 8 * 16 * 9 + 2 * 16  # ni//2 bottleneck, ks (1, 3)
  assert count(bottleneck=1.0, kernel_sizes=(3, 3)) == 2 * (16 * 16 * 9 + 2 * 16)
  assert count(kernel_sizes=(1, 3, 3)) == count() + 8 * 8 * 9 + 2 * 8  # an extra conv
  y = ResLayer(features=32, strides=2, preact=True, bottleneck=1.0, kernel_sizes=(3, 3))
  v = y.init(jax.random.PRNGKey(0), x)
  assert y.apply(v, x).shape == (1, 4, 4, 32)
  assert "Conv_0" in v["params"]  # the 1x1 projection shortcut


def test_wide_resnet_matches_dawnbench_layout():
  model = WideResNet()
  v = init_shapes(model)
  # stem + 3 groups x 3 blocks x 2 convs + final 1x1 conv = 22 layers, plus 3 projections
  # (16->96, 96->192, 192->384).
  kernels = [x for p, x in jax.tree_util.tree_flatten_with_path(v["params"])[0]
             if "kernel" in jax.tree_util.keystr(p)]
  assert len(kernels) == 1 + 18 + 1 + 3
  widths = sorted({k.shape[0] for k in kernels})  # (out, kh, kw, in)
  assert widths == [10, 16, 96, 192, 384]
  # fastai's BasicBlock widens in its first conv (ni -> nf -> nf): 16 -> 96 -> 96.
  assert [k.shape for k in kernels if k.shape[1:3] == (3, 3)][1:3] == [(96, 3, 3, 16),
                                                                        (96, 3, 3, 96)]
  assert count_params(v["params"]) == 9_658_448  # counted by hand from fastai's wrn_22
  out = jax.eval_shape(lambda v, x: model.apply(v, x), v, jnp.zeros((2, 32, 32, 3)))
  assert out.shape == (2, 10)


@pytest.mark.parametrize("kernel,strides,padding,bias", [
    ((3, 3), 1, 1, True), ((4, 4), 2, 1, False), ((1, 1), 2, "SAME", False),
    ((2, 3), (1, 2), "VALID", True), ((3, 3), 2, "SAME", True)])
def test_conv_is_flax_conv_with_the_kernel_stored_out_h_w_in(kernel, strides, padding, bias):
  import flax.linen as nn
  from jaxgan.models.layers import Conv, torch_default_kernel_init
  x = jax.random.normal(jax.random.PRNGKey(0), (2, 9, 8, 5))
  kw = dict(strides=strides, padding=padding, use_bias=bias,
            kernel_init=torch_default_kernel_init, bias_init=jax.nn.initializers.normal(1.0))
  ours, theirs = Conv(7, kernel, **kw), nn.Conv(7, kernel, **kw)
  v, w = ours.init(jax.random.PRNGKey(1), x), theirs.init(jax.random.PRNGKey(1), x)
  # The same draw (the initialiser sees flax's HWIO shape, so its fans), stored (O, H, W, I).
  assert v["params"]["kernel"].shape == (7, *kernel, 5)
  np.testing.assert_array_equal(v["params"]["kernel"], w["params"]["kernel"].transpose(3, 0, 1, 2))
  if bias:
    np.testing.assert_array_equal(v["params"]["bias"], w["params"]["bias"])
  y = ours.apply(v, x)
  np.testing.assert_allclose(y, theirs.apply(w, x), rtol=1e-5, atol=1e-5)
  # Gradients too: the kernel's is flax's, transposed.
  g = lambda m, p: jax.grad(lambda p: jnp.sum(jnp.sin(m.apply(p, x))))(p)["params"]["kernel"]
  np.testing.assert_allclose(g(ours, v), g(theirs, w).transpose(3, 0, 1, 2), rtol=1e-4,
                             atol=1e-5)


def test_conv_rejects_an_unknown_padding_name():
  from jaxgan.models.layers import Conv
  with pytest.raises(ValueError, match="padding 'same'"):
    Conv(3, (3, 3), padding="same").init(jax.random.PRNGKey(0), jnp.zeros((1, 4, 4, 2)))
