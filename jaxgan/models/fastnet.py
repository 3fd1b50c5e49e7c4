"""The fast CIFAR-10 net of the speed records (airbench94's architecture), from jaxgan's blocks.

    whiten: 2x2 conv 3 -> 24, no padding, weights fixed from the data, bias -> GELU
    3 groups (64, 256, 256): ConvLayer(pool=2) -> ConvLayer, each conv 3x3 with
        identity init, BN with a frozen scale of 1 and eps 1e-12, GELU
    global max pool (MaxPool2d(3) of the 3x3 map at 32x32) -> linear, no bias -> x 1/9

1,971,640 parameters at the defaults, 288 of them the fixed whitening filters.
The whitening filters are the eigenvectors of the covariance of the
training images' 2x2 patches scaled by 1/sqrt(eigenvalue + eps), and their
negatives: `whitening_kernel` computes them, `ClassifierTask` puts them in
at init. They stay fixed (the optimiser's `frozen` group); the recipe trains
their bias only for the first epochs.
"""
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxgan.models.darknet import ConvLayer
from jaxgan.models.layers import Conv, activation, torch_default_kernel_init

Dtype = Any


class FastNet(nn.Module):
  num_classes: int = 10
  widths: Sequence[int] = (64, 256, 256)
  whiten_kernel_size: int = 2
  act: str = "gelu"
  bn_momentum: float = 0.4  # PyTorch convention; airbench writes it as the decay, 0.6
  bn_eps: float = 1e-12
  logit_scale: float = 1 / 9
  axis_name: str | None = None
  dtype: Dtype = jnp.float32

  def setup(self):
    k = self.whiten_kernel_size
    self.whiten = Conv(2 * 3 * k * k, (k, k), padding="VALID", use_bias=True,
                       dtype=self.dtype, kernel_init=torch_default_kernel_init,
                       bias_init=nn.initializers.zeros)
    layer = dict(act=self.act, bn_momentum=self.bn_momentum, bn_eps=self.bn_eps, bn_scale=False,
                 identity_init=True, axis_name=self.axis_name, dtype=self.dtype)
    self.layers = [ConvLayer(w, 3, pool=pool, **layer) for w in self.widths for pool in (2, 1)]
    self.head = nn.Dense(self.num_classes, use_bias=False, dtype=self.dtype,
                         kernel_init=torch_default_kernel_init)

  def features(self, x, train: bool = False):
    """Globally max-pooled features of the last group, shape (N, widths[-1])."""
    x = activation(self.act)(self.whiten(x.astype(self.dtype)))
    for layer in self.layers:
      if min(x.shape[1:3]) < 2 and layer.pool > 1:
        raise ValueError(f"FastNet pools {len(self.widths)} times after its {self.whiten_kernel_size}"
                         f"x{self.whiten_kernel_size} whitening: images of {x.shape[1]} pixels "
                         "are too small (use image_size >= 9, or fewer widths)")
      x = layer(x, train)
    return x.max(axis=(1, 2))

  def __call__(self, x, train: bool = False):
    return self.head(self.features(x, train)) * self.logit_scale

  def patch_moment(self, images: jax.Array) -> jax.Array:
    """Uncentred second moment (as airbench computes it) of the k x k patches of normalised
    NHWC float images, rows in HWC order (the order of a filter's inputs)."""
    k = self.whiten_kernel_size
    n, h, w, c = images.shape
    x = jnp.asarray(images, jnp.float32)
    patches = jnp.stack([x[:, i:h - k + 1 + i, j:w - k + 1 + j, :]
                         for i in range(k) for j in range(k)], axis=3)  # (n, h', w', k*k, c)
    flat = patches.reshape(-1, k * k * c)
    return jnp.matmul(flat.T, flat, precision=jax.lax.Precision.HIGHEST) / flat.shape[0]

  def whitening_from_moment(self, moment: jax.Array, eps: float = 5e-4) -> jax.Array:
    """The whitening layer's kernel, (out, k, k, in) as `Conv` stores it: eigenvectors by
    decreasing eigenvalue over sqrt(eigenvalue + eps), then their negatives, so the GELU
    after the layer sees each direction with both signs."""
    k = self.whiten_kernel_size
    evals, evecs = jnp.linalg.eigh(moment)
    evals, evecs = evals[::-1], evecs[:, ::-1]
    filters = (evecs / jnp.sqrt(evals + eps)).T.reshape(moment.shape[0], k, k, -1)
    return jnp.concatenate([filters, -filters], axis=0)

  def whitening_kernel(self, images: jax.Array, eps: float = 5e-4) -> jax.Array:
    """The whitening layer's kernel (`whitening_from_moment`) from normalised NHWC float
    images."""
    return self.whitening_from_moment(self.patch_moment(images), eps)
