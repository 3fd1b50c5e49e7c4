"""Darknet and Wide-ResNet classifiers (lesson 12, cifar10-darknet notebook).

Both are built from the same two blocks:

- `ConvLayer`: conv (no bias, padding ks//2) -> BatchNorm -> activation, or in
  pre-activation order BatchNorm -> activation -> conv.
- `ResLayer`: a stack of ConvLayers added to its input. Its knobs are the
  Wide-ResNet paper's: the width of the inner convs relative to the output
  (`bottleneck`: Darknet's ni//2 is 0.5, WRN uses 1 or 2), the kernel sizes
  (one entry per conv, so a third entry is an extra conv), pre-activation,
  and a stride / width change with a 1x1 projection shortcut.

Everything is NHWC. Pooling is global (adaptive), so any input size works.
BatchNorm follows PyTorch's running-average convention (see `layers.batch_norm`);
PyTorch folds the unbiased batch variance into its running variance, Flax the
biased one, a difference of a factor N/(N-1) that only touches evaluation.
"""
from typing import Any, Sequence

import jax.numpy as jnp
import flax.linen as nn

from jaxgan.models.layers import (Conv, activation, batch_norm, identity_init,
                                  torch_default_bias_init, torch_default_kernel_init)

Dtype = Any


class ConvLayer(nn.Module):
  """conv -> BN -> act (`preact=False`) or BN -> act -> conv (`preact=True`).

  The knobs the fast CIFAR-10 recipe needs: `pool` max-pools between the conv
  and the BN (airbench's order), `bn_scale=False` freezes the BN scale at 1,
  `identity_init` starts the conv as a pass-through of its input channels.
  """
  features: int
  kernel_size: int = 3
  strides: int = 1
  preact: bool = False
  act: str = "leaky_relu"
  bn_momentum: float = 0.01  # PyTorch convention: weight of the new batch
  bn_eps: float = 1e-5
  bn_scale: bool = True
  pool: int = 1
  identity_init: bool = False
  axis_name: str | None = None
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool = False):
    ks = self.kernel_size
    init = identity_init() if self.identity_init else torch_default_kernel_init
    conv = Conv(self.features, (ks, ks), strides=self.strides, padding=ks // 2,
                use_bias=False, dtype=self.dtype, kernel_init=init)
    norm = batch_norm(self.bn_momentum, self.axis_name, self.dtype, eps=self.bn_eps,
                      use_scale=self.bn_scale)
    act = activation(self.act)
    pool = lambda h: nn.max_pool(h, (self.pool,) * 2, (self.pool,) * 2) if self.pool > 1 else h
    if self.preact:
      return pool(conv(act(norm(x, use_running_average=not train))))
    return act(norm(pool(conv(x)), use_running_average=not train))


class ResLayer(nn.Module):
  """Residual block: `x + convs(x)`; Darknet's ResLayer with the WRN knobs.

  With the defaults (`bottleneck=0.5, kernel_sizes=(1, 3)`) this is the
  notebook's `conv_layer(ni, ni//2, ks=1) -> conv_layer(ni//2, ni, ks=3)`.
  `features`/`strides` change the output width/grid; the shortcut is then a
  1x1 conv. In pre-activation mode the first BN-act is shared by the convs
  and the projection shortcut, as in WRN.
  """
  bottleneck: float = 0.5
  kernel_sizes: Sequence[int] = (1, 3)
  features: int | None = None
  strides: int = 1
  preact: bool = False
  act: str = "leaky_relu"
  bn_momentum: float = 0.01
  axis_name: str | None = None
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool = False):
    ni = x.shape[-1]
    nf = self.features or ni
    # Relative to the output width: fastai's WRN BasicBlock is ni -> nf -> nf.
    hidden = max(1, int(nf * self.bottleneck))
    widths = [hidden] * (len(self.kernel_sizes) - 1) + [nf]
    strides = [self.strides] + [1] * (len(self.kernel_sizes) - 1)
    layer = dict(act=self.act, bn_momentum=self.bn_momentum, axis_name=self.axis_name,
                 dtype=self.dtype)
    h = x
    if self.preact:
      norm = batch_norm(self.bn_momentum, self.axis_name, self.dtype)
      h = activation(self.act)(norm(x, use_running_average=not train))
    shortcut = x
    if nf != ni or self.strides != 1:
      shortcut = Conv(nf, (1, 1), strides=self.strides, use_bias=False, dtype=self.dtype,
                      kernel_init=torch_default_kernel_init)(h)
    for i, (ks, width, stride) in enumerate(zip(self.kernel_sizes, widths, strides)):
      if self.preact and i == 0:  # BN-act already applied above
        h = Conv(width, (ks, ks), strides=stride, padding=ks // 2, use_bias=False,
                 dtype=self.dtype, kernel_init=torch_default_kernel_init)(h)
      else:
        h = ConvLayer(width, ks, stride, preact=self.preact, **layer)(h, train)
    return shortcut + h


class Darknet(nn.Module):
  """The notebook's Darknet: stem conv, groups of (conv + ResLayers), pool, linear.

  `Darknet((1, 2, 4, 6, 3), 10, nf=32)` is the notebook model (31,410,922
  parameters). Group i opens with a 3x3 conv that doubles the width, with
  stride 2 except for group 1 (the notebook's `stride=2 - (i == 1)`).
  `features` gives the pooled penultimate activations.
  """
  num_blocks: Sequence[int]
  num_classes: int
  nf: int = 32
  bottleneck: float = 0.5
  kernel_sizes: Sequence[int] = (1, 3)
  preact: bool = False
  act: str = "leaky_relu"
  bn_momentum: float = 0.01
  axis_name: str | None = None
  dtype: Dtype = jnp.float32

  def setup(self):
    layer = dict(preact=self.preact, act=self.act, bn_momentum=self.bn_momentum,
                 axis_name=self.axis_name, dtype=self.dtype)
    layers = [ConvLayer(self.nf, 3, **layer)]
    nf = self.nf
    for i, nb in enumerate(self.num_blocks):
      layers.append(ConvLayer(nf * 2, 3, strides=1 if i == 1 else 2, **layer))
      layers += [ResLayer(self.bottleneck, self.kernel_sizes, **layer) for _ in range(nb)]
      nf *= 2
    self.layers = layers
    if self.preact:  # pre-activation nets end on a conv: normalise before pooling
      self.final_norm = batch_norm(self.bn_momentum, self.axis_name, self.dtype)
    self.head = nn.Dense(self.num_classes, dtype=self.dtype, kernel_init=torch_default_kernel_init,
                         bias_init=torch_default_bias_init(nf))

  def features(self, x, train: bool = False):
    """Globally average-pooled penultimate features, shape (N, final width)."""
    x = x.astype(self.dtype)
    for layer in self.layers:
      x = layer(x, train)
    if self.preact:
      x = activation(self.act)(self.final_norm(x, use_running_average=not train))
    return x.mean(axis=(1, 2))

  def __call__(self, x, train: bool = False):
    return self.head(self.features(x, train))


class WideResNet(nn.Module):
  """fast.ai's DAWNBench wrn_22 (defaults), from the same ResLayer block.

  3x3 conv 3->`stem`; per group, `blocks_per_group` pre-activation ResLayers
  (BN-ReLU, 3x3 conv, BN-ReLU, 3x3 conv; 1x1 shortcut after the first BN-ReLU
  when the shape changes); global average pool; BN-ReLU; 1x1 conv (no bias)
  to the classes.
  """
  num_classes: int = 10
  stem: int = 16
  widths: Sequence[int] = (96, 192, 384)
  strides: Sequence[int] = (1, 2, 2)
  blocks_per_group: int = 3
  bottleneck: float = 1.0
  kernel_sizes: Sequence[int] = (3, 3)
  act: str = "relu"
  bn_momentum: float = 0.1
  axis_name: str | None = None
  dtype: Dtype = jnp.float32

  def setup(self):
    self.stem_conv = Conv(self.stem, (3, 3), padding=1, use_bias=False, dtype=self.dtype,
                          kernel_init=torch_default_kernel_init)
    self.layers = [
        ResLayer(self.bottleneck, self.kernel_sizes, features=width,
                 strides=stride if b == 0 else 1, preact=True, act=self.act,
                 bn_momentum=self.bn_momentum, axis_name=self.axis_name, dtype=self.dtype)
        for width, stride in zip(self.widths, self.strides) for b in range(self.blocks_per_group)]
    self.final_norm = batch_norm(self.bn_momentum, self.axis_name, self.dtype)
    self.head = Conv(self.num_classes, (1, 1), use_bias=False, dtype=self.dtype,
                     kernel_init=torch_default_kernel_init)

  def features(self, x, train: bool = False):
    """Pooled, normalised features (N, last width), the input of the 1x1 classifier conv."""
    x = self.stem_conv(x.astype(self.dtype))
    for layer in self.layers:
      x = layer(x, train)
    x = x.mean(axis=(1, 2))
    return activation(self.act)(self.final_norm(x, use_running_average=not train))

  def __call__(self, x, train: bool = False):
    x = self.features(x, train)
    return self.head(x[:, None, None, :]).reshape(x.shape[0], -1)
