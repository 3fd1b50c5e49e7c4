import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxgan.models import count_params
from jaxgan.models.dcgan import DCGANCritic, DCGANGenerator, generator_widths
from jaxgan.models.layers import torch_conv_transpose


def pytorch_conv_transpose_numpy(x, weight, stride, padding, output_padding=0):
  """PyTorch ConvTranspose2d by direct scatter-add. x: NHWC, weight: (in, out, k, k)."""
  n, h, w, _ = x.shape
  _, out_c, k, _ = weight.shape
  full_h, full_w = (h - 1) * stride + k, (w - 1) * stride + k
  y = np.zeros((n, full_h + output_padding, full_w + output_padding, out_c))
  for i in range(h):
    for j in range(w):
      # every input pixel stamps its kernel-weighted copy at (i*s, j*s)
      y[:, i * stride:i * stride + k, j * stride:j * stride + k, :] += np.einsum(
          "nc,coab->nabo", x[:, i, j, :], weight)
  out_h = (h - 1) * stride - 2 * padding + k + output_padding
  out_w = (w - 1) * stride - 2 * padding + k + output_padding
  return y[:, padding:padding + out_h, padding:padding + out_w, :]


@pytest.mark.parametrize("k,s,p,op,size", [(4, 2, 1, 0, 5), (4, 1, 0, 0, 1), (3, 1, 1, 0, 4),
                                           (3, 2, 1, 1, 5)])
def test_conv_transpose_equals_pytorch_semantics(k, s, p, op, size):
  x = jax.random.normal(jax.random.PRNGKey(0), (2, size, size, 3))
  layer = torch_conv_transpose(5, k, s, p, op, use_bias=False)
  v = layer.init(jax.random.PRNGKey(1), x)
  y = np.asarray(layer.apply(v, x))
  kernel = np.asarray(v["params"]["kernel"], np.float64)  # (in, k, k, out)
  weight = kernel.transpose(0, 3, 1, 2)  # PyTorch ConvTranspose2d layout (in, out, k, k)
  want = pytorch_conv_transpose_numpy(np.asarray(x, np.float64), weight, s, p, op)
  assert y.shape == want.shape == (2, (size - 1) * s - 2 * p + k + op,) * 1 + y.shape[2:]
  np.testing.assert_allclose(y, want, rtol=1e-5, atol=1e-5)
  # It is also the gradient of the matching PyTorch Conv2d(k, s, p) (the definition).
  conv = lambda z: jax.lax.conv_general_dilated(z, jnp.asarray(kernel, jnp.float32), (s, s),
                                                [(p, p), (p, p)],
                                                dimension_numbers=("NHWC", "OHWI", "NHWC"))
  _, vjp = jax.vjp(conv, jnp.zeros(y.shape))
  np.testing.assert_allclose(vjp(x)[0], y, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("k,s,p,op", [(4, 2, 1, 0), (3, 2, 1, 1), (4, 1, 0, 0)])
def test_conv_transpose_gradients_match_flax_input_dilated_form(k, s, p, op):
  import flax.linen as nn
  x = jax.random.normal(jax.random.PRNGKey(0), (2, 5, 5, 3))
  ours = torch_conv_transpose(4, k, s, p, op)
  v = ours.init(jax.random.PRNGKey(1), x)
  v = jax.tree_util.tree_map(lambda a: a + 0.3, v)
  lo = k - 1 - p
  theirs = nn.ConvTranspose(4, (k, k), (s, s), padding=((lo, lo + op),) * 2,
                            transpose_kernel=True)
  w = jax.random.normal(jax.random.PRNGKey(2), ours.apply(v, x).shape)
  loss = lambda layer: lambda v, x: jnp.sum(jnp.sin(layer.apply(v, x)) * w)
  # flax's transpose_kernel=True kernel is (k, k, out, in); ours is (in, k, k, out).
  to_flax = lambda v: {"params": {**v["params"], "kernel": v["params"]["kernel"].transpose(
      1, 2, 3, 0)}}
  theirs_grads = jax.grad(loss(theirs), argnums=(0, 1))(to_flax(v), x)
  theirs_grads = ({"params": {**theirs_grads[0]["params"], "kernel": theirs_grads[0]["params"][
      "kernel"].transpose(3, 0, 1, 2)}}, theirs_grads[1])
  for got, want in zip(jax.grad(loss(ours), argnums=(0, 1))(v, x), theirs_grads):
    for a, b in zip(jax.tree_util.tree_leaves(got), jax.tree_util.tree_leaves(want)):
      np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
  with pytest.raises(ValueError, match="output_padding"):
    torch_conv_transpose(4, 3, 2, 1, 2).init(jax.random.PRNGKey(0), x)


def test_same_padding_or_an_unflipped_kernel_is_not_pytorch_conv_transpose():
  import flax.linen as nn
  x = jax.random.normal(jax.random.PRNGKey(0), (1, 4, 4, 2))
  # CycleGAN's ConvTranspose2d(3, stride 2, padding 1, output_padding 1): 'SAME' pads (2, 1)
  # where PyTorch pads (1, 2): same shape, other values.
  ours = torch_conv_transpose(3, 3, 2, 1, 1, use_bias=False)
  v = ours.init(jax.random.PRNGKey(1), x)
  same = nn.ConvTranspose(3, (3, 3), (2, 2), padding="SAME", use_bias=False, transpose_kernel=True)
  flax_v = {"params": {"kernel": v["params"]["kernel"].transpose(1, 2, 3, 0)}}  # (k, k, out, in)
  a, b = ours.apply(v, x), same.apply(flax_v, x)
  assert a.shape == b.shape == (1, 8, 8, 3) and not np.allclose(a, b)
  # Without the kernel flip the values differ too.
  unflipped = nn.ConvTranspose(3, (3, 3), (2, 2), padding=((1, 2), (1, 2)), use_bias=False)
  swapped = {"params": {"kernel": v["params"]["kernel"].transpose(1, 2, 0, 3)}}  # (k, k, in, out)
  assert not np.allclose(a, unflipped.apply(swapped, x))


def dcgan_counts(isize, nz, nc, ngf, ndf, extra):
  """Independent counts from the reference's layer lists (BN: scale + bias)."""
  g_widths = generator_widths(isize, ngf)
  g = nz * g_widths[0] * 16 + 2 * g_widths[0]
  for a, b in zip(g_widths, g_widths[1:]):
    g += a * b * 16 + 2 * b
  g += extra * (g_widths[-1] ** 2 * 9 + 2 * g_widths[-1]) + g_widths[-1] * nc * 16
  d, csize, c = nc * ndf * 16 + extra * (ndf * ndf * 9 + 2 * ndf), isize // 2, ndf
  while csize > 4:
    d += c * 2 * c * 16 + 4 * c
    c, csize = c * 2, csize // 2
  return g, d + c * 16


@pytest.mark.parametrize("isize,extra", [(64, 1), (64, 0), (32, 0), (32, 2), (16, 1), (128, 0)])
def test_parameter_counts_and_shapes(isize, extra):
  g, d = DCGANGenerator(isize, 100, 3, 64, extra), DCGANCritic(isize, 3, 64, extra)
  vg = jax.eval_shape(lambda: g.init(jax.random.PRNGKey(0), jnp.zeros((2, 100))))
  vd = jax.eval_shape(lambda: d.init(jax.random.PRNGKey(0), jnp.zeros((2, isize, isize, 3))))
  assert (count_params(vg["params"]), count_params(vd["params"])) == \
      dcgan_counts(isize, 100, 3, 64, 64, extra)
  if (isize, extra) == (64, 1):
    assert count_params(vg["params"]) == 3_613_696
    assert count_params(vd["params"]) == 2_802_560
  img = jax.eval_shape(lambda v, z: g.apply(v, z, mutable=["batch_stats"])[0], vg,
                       jnp.zeros((5, 100)))
  assert img.shape == (5, isize, isize, 3)
  score = jax.eval_shape(lambda v, x: d.apply(v, x, mutable=["batch_stats"])[0], vd,
                         jnp.zeros((5, isize, isize, 3)))
  assert score.shape == (5,)


def test_generator_output_is_in_range_and_resize_variant_works():
  for upsample in ("deconv", "resize"):
    g = DCGANGenerator(16, 8, 3, 8, 1, upsample=upsample)
    v = g.init(jax.random.PRNGKey(0), jnp.zeros((4, 8)))
    out, _ = g.apply(v, 5 * jax.random.normal(jax.random.PRNGKey(1), (4, 8)),
                     mutable=["batch_stats"])
    assert out.shape == (4, 16, 16, 3)
    assert float(out.min()) >= -1 and float(out.max()) <= 1 and float(out.std()) > 0.01


@pytest.mark.parametrize("isize", [0, 24, 40, 8, 48, 96])
def test_isize_not_a_power_of_two_is_a_clear_error(isize):
  # 48 and 96 are multiples of 16 that the generator's doubling from 4x4 never reaches:
  # generator_widths used to loop forever on them.
  with pytest.raises(ValueError, match=f"isize={isize}: .*power of two"):
    DCGANGenerator(isize, 10, 3, 8)
  with pytest.raises(ValueError, match="power of two"):
    DCGANCritic(isize, 3, 8)
  with pytest.raises(ValueError, match="power of two"):
    generator_widths(isize, 8)


def test_public_api_names():
  import jaxgan.models as m
  assert m.DCGANGenerator is DCGANGenerator and m.DCGANCritic is DCGANCritic


def test_critic_without_batchnorm_has_no_batch_stats():
  d = DCGANCritic(32, 3, 8, batch_norm=False)
  v = d.init(jax.random.PRNGKey(0), jnp.zeros((2, 32, 32, 3)))
  assert set(v) == {"params"}
