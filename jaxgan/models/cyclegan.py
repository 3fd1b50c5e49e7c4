"""CycleGAN's ResNet generator and 70x70 PatchGAN discriminator
(junyanz/pytorch-CycleGAN-and-pix2pix, as in the lesson's cyclegan notebook).

Convolutions keep their bias (the reference turns it on with InstanceNorm);
InstanceNorm has no affine parameters, eps 1e-5; weights N(0, 0.02), biases 0.
NHWC throughout.
"""
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxgan.models.layers import (Conv, dcgan_normal_init, instance_norm, reflect_pad,
                                  torch_conv_transpose)

Dtype = Any
_INIT = dict(kernel_init=dcgan_normal_init(), bias_init=nn.initializers.zeros)


def _biases_except(params, keep: set) -> Any:
  """A tree of bools like `params`: True for each "bias" leaf whose module is not in `keep`."""
  def cancelled(path, _):
    names = [getattr(k, "key", k) for k in path]
    return names[-1] == "bias" and names[0] not in keep
  return jax.tree_util.tree_map_with_path(cancelled, params)


class ResnetBlock(nn.Module):
  """x + [reflect-pad 1, conv 3x3, IN, ReLU, reflect-pad 1, conv 3x3, IN](x)."""
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    c = x.shape[-1]
    h = nn.relu(instance_norm(Conv(c, (3, 3), padding=0, dtype=self.dtype, **_INIT)(
        reflect_pad(x, 1))))
    h = instance_norm(Conv(c, (3, 3), padding=0, dtype=self.dtype, **_INIT)(reflect_pad(h, 1)))
    return x + h


class ResnetGenerator(nn.Module):
  """Images in [-1, 1] (N, H, W, 3) -> translated images (N, H', W', output_nc) in [-1, 1].

  reflect-pad 3, conv 7x7 to ngf, IN, ReLU; two stride-2 3x3 convs (x2 width
  each) + IN + ReLU; `n_blocks` ResnetBlocks; two ConvTranspose(3, 2, 1,
  output_padding 1) halving the width + IN + ReLU; reflect-pad 3, conv 7x7 to
  output_nc, tanh. H' = H when H is a multiple of 4.
  """
  ngf: int = 64
  n_blocks: int = 9
  output_nc: int = 3
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    conv = lambda f, k, s=1, p=0: Conv(f, (k, k), strides=s, padding=p, dtype=self.dtype,
                                       **_INIT)
    x = x.astype(self.dtype)
    x = nn.relu(instance_norm(conv(self.ngf, 7)(reflect_pad(x, 3))))
    for mult in (2, 4):
      x = nn.relu(instance_norm(conv(self.ngf * mult, 3, 2, 1)(x)))
    for _ in range(self.n_blocks):
      x = ResnetBlock(self.dtype)(x)
    for mult in (2, 1):
      up = torch_conv_transpose(self.ngf * mult, 3, 2, 1, 1, dtype=self.dtype, **_INIT)
      x = nn.relu(instance_norm(up(x)))
    x = conv(self.output_nc, 7)(reflect_pad(x, 3))
    return jnp.tanh(x.astype(jnp.float32))

  @staticmethod
  def cancelled_biases(params) -> Any:
    """True for the biases an instance norm follows: all but the head's (Conv_3).

    Instance norm subtracts each channel's mean, so these biases change no
    output and their gradient is zero (up to rounding).
    """
    return _biases_except(params, {"Conv_3"})


class PatchDiscriminator(nn.Module):
  """The 70x70 PatchGAN: images (N, H, W, C) -> patch scores (N, H', W', 1); 256 -> 30.

  conv 4x4 s2 p1 to ndf + LeakyReLU(0.2); then n_layers - 1 convs 4x4 s2 p1 and
  one 4x4 s1 p1, each doubling the width (capped at 8 ndf) + IN + LeakyReLU;
  conv 4x4 s1 p1 to 1 channel (raw scores: LSGAN compares them to 0/1).
  """
  ndf: int = 64
  n_layers: int = 3
  dtype: Dtype = jnp.float32

  def grid_size(self, size: int) -> int:
    """The side of the score map for size x size images (0: too small to score)."""
    out = lambda s, stride: max(0, (s + 2 - 4) // stride + 1)
    size = out(size, 2)
    for n in range(1, self.n_layers + 1):
      size = out(size, 2 if n < self.n_layers else 1)
    return out(size, 1)

  @nn.compact
  def __call__(self, x):
    conv = lambda f, s: Conv(f, (4, 4), strides=s, padding=1, dtype=self.dtype, **_INIT)
    x = nn.leaky_relu(conv(self.ndf, 2)(x.astype(self.dtype)), 0.2)
    for n in range(1, self.n_layers + 1):
      stride = 2 if n < self.n_layers else 1
      x = nn.leaky_relu(instance_norm(conv(self.ndf * min(2 ** n, 8), stride)(x)), 0.2)
    return conv(1, 1)(x).astype(jnp.float32)

  def cancelled_biases(self, params) -> Any:
    """True for the biases an instance norm follows: all but the first and last conv's."""
    return _biases_except(params, {"Conv_0", f"Conv_{self.n_layers + 1}"})
