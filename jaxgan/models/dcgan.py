"""DCGAN generator and critic of the lesson's WGAN (wgan notebook; WassersteinGAN).

Block order follows the seed: conv, then activation, then BatchNorm. Weights
follow the DCGAN reference init: N(0, 0.02); BatchNorm scale N(1, 0.02).
NHWC throughout; noise is (N, nz).
"""
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxgan.models.layers import (Conv, batch_norm, dcgan_bn_scale_init, dcgan_normal_init,
                                  torch_conv_transpose)

Dtype = Any


def check_isize(isize: int) -> None:
  """The generator doubles 4x4 up to isize and the critic halves back: powers of two only."""
  if isize < 16 or isize & (isize - 1):
    below = 1 << max(4, isize.bit_length() - 1) if isize >= 16 else 16
    options = sorted({below, below * 2} if isize > 16 else {16})
    raise ValueError(f"isize={isize}: DCGAN needs an image size that is a power of two from 16 "
                     f"(16, 32, 64, 128, ...; the nearest: {' or '.join(map(str, options))}); "
                     "resize the data or pick another --config.image_size")


def generator_widths(isize: int, ngf: int) -> list[int]:
  """Channel widths of the generator's upsampling blocks, from 4x4 up to isize/2."""
  check_isize(isize)  # any other size would never be reached by doubling
  cngf, tisize = ngf // 2, 4
  while tisize != isize:
    cngf, tisize = cngf * 2, tisize * 2
  widths, csize = [cngf], 4
  while csize < isize // 2:
    cngf, csize = cngf // 2, csize * 2
    widths.append(cngf)
  return widths


class DCGANGenerator(nn.Module):
  """Noise (N, nz) -> images (N, isize, isize, nc) in [-1, 1].

  ConvT 4x4/1/0 to 4x4 x cngf; ConvT 4x4/2/1 halving channels up to isize/2;
  `n_extra_layers` ConvT 3x3/1/1; final ConvT 4x4/2/1 to nc; tanh. Blocks are
  conv (no bias) -> ReLU -> BN. With `upsample="resize"` each stride-2 ConvT
  becomes nearest-neighbour 2x upsampling + 3x3 conv (Odena et al.: no
  checkerboard artefacts), same widths. `batch_norm=False` drops BatchNorm.
  """
  isize: int
  nz: int
  nc: int
  ngf: int
  n_extra_layers: int = 0
  upsample: str = "deconv"
  batch_norm: bool = True
  bn_momentum: float = 0.1
  axis_name: str | None = None
  dtype: Dtype = jnp.float32

  def __post_init__(self):
    check_isize(self.isize)  # fail at construction, not at the first call
    super().__post_init__()

  def _up(self, features):
    init = dict(use_bias=False, dtype=self.dtype, kernel_init=dcgan_normal_init())
    if self.upsample == "deconv":
      return torch_conv_transpose(features, 4, 2, 1, **init)
    if self.upsample == "resize":
      conv = Conv(features, (3, 3), padding=1, **init)
      def up(x):
        n, h, w, c = x.shape
        return conv(jax.image.resize(x, (n, 2 * h, 2 * w, c), "nearest"))
      return up
    raise ValueError(f"upsample={self.upsample!r}: use 'deconv' or 'resize'")

  def _block(self, x, conv, train):
    x = nn.relu(conv(x))
    if self.batch_norm:
      norm = batch_norm(self.bn_momentum, self.axis_name, self.dtype,
                        scale_init=dcgan_bn_scale_init)
      x = norm(x, use_running_average=not train)
    return x

  @nn.compact
  def __call__(self, z, train: bool = True):
    widths = generator_widths(self.isize, self.ngf)
    init = dict(use_bias=False, dtype=self.dtype, kernel_init=dcgan_normal_init())
    x = z.reshape(z.shape[0], 1, 1, -1).astype(self.dtype)
    x = self._block(x, torch_conv_transpose(widths[0], 4, 1, 0, **init), train)
    for w in widths[1:]:
      x = self._block(x, self._up(w), train)
    for _ in range(self.n_extra_layers):
      x = self._block(x, torch_conv_transpose(widths[-1], 3, 1, 1, **init), train)
    x = self._up(self.nc)(x)
    return jnp.tanh(x.astype(jnp.float32))


class DCGANCritic(nn.Module):
  """Images (N, isize, isize, nc) -> per-example scores (N,).

  Conv 4x4/2/1 + LeakyReLU(0.2) (no BN); `n_extra_layers` conv 3x3/1/1;
  conv 4x4/2/1 doubling channels down to 4x4; final conv 4x4/1/0 to one
  channel. Blocks are conv (no bias) -> LeakyReLU(0.2) -> BN; the reference's
  scalar output is the mean of these scores. `batch_norm=False` (WGAN-GP)
  drops BatchNorm.
  """
  isize: int
  nc: int
  ndf: int
  n_extra_layers: int = 0
  batch_norm: bool = True
  bn_momentum: float = 0.1
  axis_name: str | None = None
  dtype: Dtype = jnp.float32

  def __post_init__(self):
    check_isize(self.isize)
    super().__post_init__()

  @nn.compact
  def __call__(self, x, train: bool = True):
    init = dict(use_bias=False, dtype=self.dtype, kernel_init=dcgan_normal_init())

    def block(x, features, k, stride, bn=True):
      x = nn.leaky_relu(Conv(features, (k, k), strides=stride, padding=k // 2 // stride,
                             **init)(x), 0.2)
      if bn and self.batch_norm:
        norm = batch_norm(self.bn_momentum, self.axis_name, self.dtype,
                          scale_init=dcgan_bn_scale_init)
        x = norm(x, use_running_average=not train)
      return x

    x = block(x.astype(self.dtype), self.ndf, 4, 2, bn=False)
    for _ in range(self.n_extra_layers):
      x = block(x, self.ndf, 3, 1)
    csize, cndf = self.isize // 2, self.ndf
    while csize > 4:
      cndf, csize = cndf * 2, csize // 2
      x = block(x, cndf, 4, 2)
    x = Conv(1, (4, 4), padding=0, **init)(x)
    return x.reshape(x.shape[0]).astype(jnp.float32)
