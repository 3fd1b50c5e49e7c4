"""PyTorch twins of jaxgan's models, the copy of Flax weights into them, and what a PyTorch
train step needs besides its models (device-side crop/flip, the variant's `Setup`).

The same architectures as jaxgan's Flax modules (parameter counts and outputs are checked
against them in tests/test_torch_reference.py and tests/test_torch_recipes.py: see
`copy_flax_params` and `copy_fastnet_params`). Used by torch_reference.py (one train step,
timed) and torch_recipes.py (a classifier recipe trained end to end).

Variants (`VARIANTS`), as `Setup` applies them:
- "eager": plain PyTorch, float32, or bfloat16 autocast (AMP) when `dtype` is
  "bfloat16" (parameters, optimiser and losses stay float32, as in jaxgan);
- "channels_last": eager with NHWC memory format for models and inputs (the
  fast layout for cuDNN convolutions on tensor cores);
- "compile": `torch.compile` of each network (channels_last on CUDA too); the
  optimiser steps and the data pipeline stay eager.

On CUDA, TF32 is allowed for float32 convolutions and matmuls, as XLA does
by default on Ampere and newer GPUs, and cuDNN autotuning is on (fixed shapes).

PyTorch is optional: jaxgan never imports this module, nor do the benchmarks unless
PyTorch rows or runs are asked for.
"""
import contextlib

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from jaxgan.models.dcgan import generator_widths  # plain Python: the widths are the same

VARIANTS = ("eager", "channels_last", "compile")
ACTIVATIONS = {"leaky_relu": lambda: nn.LeakyReLU(0.1), "relu": nn.ReLU,
               "leaky_relu_0.2": lambda: nn.LeakyReLU(0.2)}


def default_device() -> str:
  return "cuda" if torch.cuda.is_available() else "cpu"


def count_params(*modules) -> int:
  return sum(p.numel() for m in modules for p in m.parameters())


# ---- Darknet and Wide-ResNet ---------------------------------------------------------------------
class ConvLayer(nn.Module):
  """conv (no bias, padding ks//2) -> BN -> act, or BN -> act -> conv with `preact`."""

  def __init__(self, ni, nf, ks=3, stride=1, preact=False, act="leaky_relu", bn_momentum=0.01):
    super().__init__()
    self.preact = preact
    self.conv = nn.Conv2d(ni, nf, ks, stride, ks // 2, bias=False)
    self.bn = nn.BatchNorm2d(ni if preact else nf, momentum=bn_momentum)
    self.act = ACTIVATIONS[act]()

  def forward(self, x):
    if self.preact:
      return self.conv(self.act(self.bn(x)))
    return self.act(self.bn(self.conv(x)))


class ResLayer(nn.Module):
  """`shortcut(x) + convs(x)`, jaxgan's ResLayer: inner width int(nf * bottleneck), one conv
  per kernel size, a 1x1 projection shortcut when the width or grid changes.

  In pre-activation mode one BN-act (`pre_bn`) feeds the first conv and the projection,
  as in WRN; an identity shortcut takes the raw input.
  """

  def __init__(self, ni, bottleneck=0.5, kernel_sizes=(1, 3), features=None, stride=1,
               preact=False, act="leaky_relu", bn_momentum=0.01):
    super().__init__()
    nf = features or ni
    hidden = max(1, int(nf * bottleneck))
    widths = [hidden] * (len(kernel_sizes) - 1) + [nf]
    strides = [stride] + [1] * (len(kernel_sizes) - 1)
    self.pre_bn = nn.BatchNorm2d(ni, momentum=bn_momentum) if preact else None
    self.act = ACTIVATIONS[act]() if preact else None
    self.shortcut = (nn.Conv2d(ni, nf, 1, stride, bias=False) if nf != ni or stride != 1
                     else None)
    self.first_conv = None
    layers, c = [], ni
    for i, (ks, width, s) in enumerate(zip(kernel_sizes, widths, strides)):
      if preact and i == 0:  # its BN-act is pre_bn's
        self.first_conv = nn.Conv2d(c, width, ks, s, ks // 2, bias=False)
      else:
        layers.append(ConvLayer(c, width, ks, s, preact, act, bn_momentum))
      c = width
    self.layers = nn.ModuleList(layers)

  def forward(self, x):
    h = self.act(self.pre_bn(x)) if self.pre_bn is not None else x
    shortcut = self.shortcut(h) if self.shortcut is not None else x
    if self.first_conv is not None:
      h = self.first_conv(h)
    for layer in self.layers:
      h = layer(h)
    return shortcut + h


class Darknet(nn.Module):
  """The notebook's Darknet: conv_layer(3, nf); per group i conv_layer(nf, 2nf, stride
  2 - (i == 1)) and num_blocks[i] ResLayers; adaptive average pool; Linear.
  `Darknet((1, 2, 4, 6, 3), 10, nf=32)` has 31,410,922 parameters."""

  def __init__(self, num_blocks, num_classes, nf=32, bottleneck=0.5, kernel_sizes=(1, 3),
               preact=False, act="leaky_relu", bn_momentum=0.01):
    super().__init__()
    kw = dict(preact=preact, act=act, bn_momentum=bn_momentum)
    layers = [ConvLayer(3, nf, 3, **kw)]
    for i, nb in enumerate(num_blocks):
      layers.append(ConvLayer(nf, 2 * nf, 3, 1 if i == 1 else 2, **kw))
      nf *= 2
      layers += [ResLayer(nf, bottleneck, kernel_sizes, **kw) for _ in range(nb)]
    self.layers = nn.Sequential(*layers)
    self.final_bn = nn.BatchNorm2d(nf, momentum=bn_momentum) if preact else None
    self.act = ACTIVATIONS[act]()
    self.head = nn.Linear(nf, num_classes)

  def forward(self, x):
    x = self.layers(x)
    if self.final_bn is not None:
      x = self.act(self.final_bn(x))
    return self.head(x.mean((2, 3)))


class WideResNet(nn.Module):
  """fast.ai's DAWNBench wrn_22 as jaxgan.models.WideResNet builds it: 3x3 conv 3 -> stem;
  per group `blocks_per_group` pre-activation ResLayers (fastai's BasicBlock, ni -> nf -> nf);
  average pool; BN-ReLU; 1x1 conv (no bias) to the classes. 9,658,448 parameters.
  """

  def __init__(self, num_classes=10, stem=16, widths=(96, 192, 384), strides=(1, 2, 2),
               blocks_per_group=3, bottleneck=1.0, kernel_sizes=(3, 3), act="relu",
               bn_momentum=0.1):
    super().__init__()
    self.stem_conv = nn.Conv2d(3, stem, 3, 1, 1, bias=False)
    layers, ni = [], stem
    for width, stride in zip(widths, strides):
      for b in range(blocks_per_group):
        layers.append(ResLayer(ni, bottleneck, kernel_sizes, width, stride if b == 0 else 1,
                               True, act, bn_momentum))
        ni = width
    self.layers = nn.Sequential(*layers)
    self.final_bn = nn.BatchNorm2d(ni, momentum=bn_momentum)
    self.act = ACTIVATIONS[act]()
    self.head = nn.Conv2d(ni, num_classes, 1, bias=False)

  def forward(self, x):
    x = self.layers(self.stem_conv(x)).mean((2, 3), keepdim=True)
    return self.head(self.act(self.final_bn(x))).flatten(1)


# ---- DCGAN (WGAN) --------------------------------------------------------------------------------
def _dcgan_init(module):
  """DCGAN reference init: conv weights N(0, 0.02), BN scale N(1, 0.02), biases 0."""
  for m in module.modules():
    if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
      nn.init.normal_(m.weight, 0.0, 0.02)
      if m.bias is not None:
        nn.init.zeros_(m.bias)
    elif isinstance(m, nn.BatchNorm2d):
      nn.init.normal_(m.weight, 1.0, 0.02)
      nn.init.zeros_(m.bias)


class DCGANGenerator(nn.Module):
  """Noise (N, nz) -> images (N, nc, isize, isize): ConvT 4/1/0, ConvT 4/2/1 halving the
  width, n_extra ConvT 3/1/1, ConvT 4/2/1 to nc, tanh; blocks are conv, ReLU, BN."""

  def __init__(self, isize, nz, nc, ngf, n_extra_layers=0, bn_momentum=0.1):
    super().__init__()
    widths = generator_widths(isize, ngf)
    convs = [nn.ConvTranspose2d(nz, widths[0], 4, 1, 0, bias=False)]
    convs += [nn.ConvTranspose2d(a, b, 4, 2, 1, bias=False) for a, b in zip(widths, widths[1:])]
    convs += [nn.ConvTranspose2d(widths[-1], widths[-1], 3, 1, 1, bias=False)
              for _ in range(n_extra_layers)]
    self.bns = nn.ModuleList(nn.BatchNorm2d(c.out_channels, momentum=bn_momentum) for c in convs)
    convs.append(nn.ConvTranspose2d(widths[-1], nc, 4, 2, 1, bias=False))
    self.convs = nn.ModuleList(convs)
    _dcgan_init(self)

  def forward(self, z):
    """z: (N, nz), or (N, nz, 1, 1) in the layout the caller wants (see `_noise`)."""
    x = z if z.dim() == 4 else z.reshape(z.shape[0], -1, 1, 1)
    for conv, bn in zip(self.convs, self.bns):
      x = bn(F.relu(conv(x)))
    return torch.tanh(self.convs[-1](x))


class DCGANCritic(nn.Module):
  """Images -> per-example scores (N,): conv 4/2/1 + LReLU(0.2); n_extra conv 3/1/1; conv
  4/2/1 doubling the width down to 4x4 (conv, LReLU, BN); conv 4/1/0 to one channel."""

  def __init__(self, isize, nc, ndf, n_extra_layers=0, bn_momentum=0.1):
    super().__init__()
    convs = [nn.Conv2d(nc, ndf, 4, 2, 1, bias=False)]
    convs += [nn.Conv2d(ndf, ndf, 3, 1, 1, bias=False) for _ in range(n_extra_layers)]
    csize, cndf = isize // 2, ndf
    while csize > 4:
      convs.append(nn.Conv2d(cndf, cndf * 2, 4, 2, 1, bias=False))
      cndf, csize = cndf * 2, csize // 2
    self.bns = nn.ModuleList(nn.BatchNorm2d(c.out_channels, momentum=bn_momentum)
                             for c in convs[1:])
    convs.append(nn.Conv2d(cndf, 1, 4, 1, 0, bias=False))
    self.convs = nn.ModuleList(convs)
    _dcgan_init(self)

  def forward(self, x):
    x = F.leaky_relu(self.convs[0](x), 0.2)
    for conv, bn in zip(self.convs[1:-1], self.bns):
      x = bn(F.leaky_relu(conv(x), 0.2))
    return self.convs[-1](x).reshape(x.shape[0])


# ---- CycleGAN ------------------------------------------------------------------------------------
def _instance_norm(x):
  return F.instance_norm(x, eps=1e-5)  # no affine parameters, no running statistics


class ResnetBlock(nn.Module):
  """x + conv_block(x), with the reference's `conv_block` Sequential (no dropout: CycleGAN's
  default), so that state dict keys read `conv_block.1.weight` and `conv_block.5.weight`."""

  def __init__(self, c):
    super().__init__()
    norm = lambda: nn.InstanceNorm2d(c, affine=False, track_running_stats=False, eps=1e-5)
    self.conv_block = nn.Sequential(
        nn.ReflectionPad2d(1), nn.Conv2d(c, c, 3), norm(), nn.ReLU(True),
        nn.ReflectionPad2d(1), nn.Conv2d(c, c, 3), norm())

  def forward(self, x):
    return x + self.conv_block(x)


class ResnetGenerator(nn.Module):
  """junyanz's ResnetGenerator, layer for layer in one `model` Sequential, so its state dict
  has the reference's keys (`model.1.weight`, `model.10.conv_block.1.weight`, ...,
  `model.26.weight` at 9 blocks): reflect-pad 3, conv 7 to ngf, IN, ReLU; two stride-2
  convs; `n_blocks` ResnetBlocks; two ConvTranspose(3, 2, 1, output_padding 1); reflect-pad
  3, conv 7 to output_nc, tanh. 11,378,179 parameters at the defaults."""

  def __init__(self, ngf=64, n_blocks=9, output_nc=3, input_nc=3):
    super().__init__()
    norm = lambda c: nn.InstanceNorm2d(c, affine=False, track_running_stats=False, eps=1e-5)
    layers = [nn.ReflectionPad2d(3), nn.Conv2d(input_nc, ngf, 7), norm(ngf), nn.ReLU(True)]
    for m in (1, 2):
      layers += [nn.Conv2d(ngf * m, ngf * m * 2, 3, 2, 1), norm(ngf * m * 2), nn.ReLU(True)]
    layers += [ResnetBlock(ngf * 4) for _ in range(n_blocks)]
    for m in (4, 2):
      layers += [nn.ConvTranspose2d(ngf * m, ngf * m // 2, 3, 2, 1, output_padding=1),
                 norm(ngf * m // 2), nn.ReLU(True)]
    layers += [nn.ReflectionPad2d(3), nn.Conv2d(ngf, output_nc, 7), nn.Tanh()]
    self.model = nn.Sequential(*layers)
    _dcgan_init(self)

  def forward(self, x):
    return self.model(x)


class PatchDiscriminator(nn.Module):
  """The 70x70 PatchGAN (2,764,737 parameters at the defaults): raw patch scores."""

  def __init__(self, ndf=64, n_layers=3, input_nc=3):
    super().__init__()
    widths = [ndf * min(2 ** n, 8) for n in range(n_layers + 1)]
    convs = [nn.Conv2d(input_nc, ndf, 4, 2, 1)]
    convs += [nn.Conv2d(widths[n - 1], widths[n], 4, 2 if n < n_layers else 1, 1)
              for n in range(1, n_layers + 1)]
    convs.append(nn.Conv2d(widths[-1], 1, 4, 1, 1))
    self.convs = nn.ModuleList(convs)
    _dcgan_init(self)

  def forward(self, x):
    x = F.leaky_relu(self.convs[0](x), 0.2)
    for conv in self.convs[1:-1]:
      x = F.leaky_relu(_instance_norm(conv(x)), 0.2)
    return self.convs[-1](x)


# ---- FastNet -------------------------------------------------------------------------------------
class _Conv(nn.Conv2d):
  """3x3 'same' conv without bias whose first in_channels filters start as the identity."""

  def __init__(self, ni, nf):
    super().__init__(ni, nf, 3, padding=1, bias=False)
    with torch.no_grad():
      nn.init.dirac_(self.weight[:ni])


def _shift_only_bn(c, momentum, eps):
  bn = nn.BatchNorm2d(c, eps=eps, momentum=momentum)
  bn.weight.requires_grad = False  # the scale stays 1; only the shift trains
  return bn


class _Group(nn.Module):
  def __init__(self, ni, nf, momentum, eps):
    super().__init__()
    self.conv1, self.norm1 = _Conv(ni, nf), _shift_only_bn(nf, momentum, eps)
    self.conv2, self.norm2 = _Conv(nf, nf), _shift_only_bn(nf, momentum, eps)

  def forward(self, x):
    x = F.gelu(self.norm1(F.max_pool2d(self.conv1(x), 2)))
    return F.gelu(self.norm2(self.conv2(x)))


class FastNet(nn.Module):
  """jaxgan.models.FastNet in PyTorch (NCHW): whitening conv, 3 groups, global max, linear."""

  def __init__(self, num_classes=10, widths=(64, 256, 256), whiten_kernel_size=2, act="gelu",
               bn_momentum=0.4, bn_eps=1e-12, logit_scale=1 / 9):
    super().__init__()
    if act != "gelu":
      raise ValueError(f"the PyTorch FastNet has GELU only, not {act!r}")
    k = whiten_kernel_size
    self.whiten = nn.Conv2d(3, 2 * 3 * k * k, k, bias=True)
    self.whiten.weight.requires_grad = False
    nn.init.zeros_(self.whiten.bias)
    widths = (2 * 3 * k * k, *widths)
    self.groups = nn.Sequential(*[_Group(a, b, bn_momentum, bn_eps)
                                  for a, b in zip(widths[:-1], widths[1:])])
    self.head = nn.Linear(widths[-1], num_classes, bias=False)
    self.logit_scale = logit_scale

  def forward(self, x):
    x = self.groups(F.gelu(self.whiten(x)))
    return self.head(torch.amax(x, dim=(2, 3))) * self.logit_scale

  @torch.no_grad()
  def init_whitening(self, images, eps=5e-4):
    """Filters from normalised NCHW images: eigenvectors of the 2x2-patch second moment
    over sqrt(eigenvalue + eps), then their negatives (in the same order as jaxgan's)."""
    k = self.whiten.kernel_size[0]
    c = images.shape[1]
    patches = images.float().unfold(2, k, 1).unfold(3, k, 1)  # n, c, h', w', k, k
    flat = patches.permute(0, 2, 3, 4, 5, 1).reshape(-1, k * k * c)  # rows in HWC order
    evals, evecs = torch.linalg.eigh(flat.T @ flat / len(flat))
    evals, evecs = evals.flip(0), evecs.flip(1)
    filters = (evecs / torch.sqrt(evals + eps)).T.reshape(-1, k, k, c).permute(0, 3, 1, 2)
    self.whiten.weight.copy_(torch.cat([filters, -filters]))


# ---- a classifier from its config ----------------------------------------------------------------
def build_classifier(model_config, num_classes=10):
  """The torch twin of `jaxgan.classifier.build_model` (darknet and wrn)."""
  kwargs = {k: tuple(v) if isinstance(v, (list, tuple)) else v
            for k, v in model_config.items() if k != "name"}
  name = model_config.get("name", "darknet")
  classes = {"darknet": Darknet, "wrn": WideResNet}
  if name not in classes:
    raise ValueError(f"no PyTorch reference for model {name!r}; it covers {sorted(classes)}")
  return classes[name](num_classes=num_classes, **kwargs)


def build_model(model_config, num_classes):
  """Any classifier the PyTorch recipes train: `build_classifier`'s, and FastNet."""
  if model_config.get("name", "darknet") == "fastnet":
    kwargs = {k: tuple(v) if isinstance(v, (list, tuple)) else v
              for k, v in model_config.items() if k != "name"}
    return FastNet(num_classes=num_classes, **kwargs)
  return build_classifier(model_config, num_classes)




# ---- Flax -> torch parameters --------------------------------------------------------------------
def _set(tensor, value):
  with torch.no_grad():
    tensor.copy_(torch.from_numpy(np.array(value, np.float32)))


def _conv(conv, p):
  """jaxgan's Conv kernel (out, H, W, in) -> Conv2d's (out, in, H, W). jaxgan's ConvTranspose
  holds the kernel (in, H, W, out) of the conv whose gradient it is, which is exactly what
  ConvTranspose2d's (in, out, H, W) weight is: the same permutation, no spatial flip."""
  _set(conv.weight, np.transpose(np.asarray(p["kernel"]), (0, 3, 1, 2)))
  if conv.bias is not None:
    _set(conv.bias, p["bias"])


def _bn(bn, p, s):
  _set(bn.weight, p["scale"])
  _set(bn.bias, p["bias"])
  if s is not None:
    _set(bn.running_mean, s["mean"])
    _set(bn.running_var, s["var"])


def _conv_layer(m, p, s):
  _conv(m.conv, p["Conv_0"])
  _bn(m.bn, p["BatchNorm_0"], s.get("BatchNorm_0"))


def _res_layer(m, p, s):
  """Flax names in creation order: BatchNorm_0 (pre-activation), Conv_0 (projection), the
  next Conv (pre-activation's first conv), ConvLayer_0... (the rest)."""
  if m.pre_bn is not None:
    _bn(m.pre_bn, p["BatchNorm_0"], s.get("BatchNorm_0"))
  for i, conv in enumerate(c for c in (m.shortcut, m.first_conv) if c is not None):
    _conv(conv, p[f"Conv_{i}"])
  for i, layer in enumerate(m.layers):
    _conv_layer(layer, p[f"ConvLayer_{i}"], s.get(f"ConvLayer_{i}", {}))


def _sequence(layers, p, s):
  for i, layer in enumerate(layers):
    copy = _res_layer if isinstance(layer, ResLayer) else _conv_layer
    copy(layer, p[f"layers_{i}"], s.get(f"layers_{i}", {}))


def _darknet(m, p, s):
  _sequence(m.layers, p, s)
  if m.final_bn is not None:
    _bn(m.final_bn, p["final_norm"], s.get("final_norm"))
  _set(m.head.weight, np.asarray(p["head"]["kernel"]).T)  # Dense (in, out) -> Linear (out, in)
  _set(m.head.bias, p["head"]["bias"])


def _wide_resnet(m, p, s):
  _conv(m.stem_conv, p["stem_conv"])
  _sequence(m.layers, p, s)
  _bn(m.final_bn, p["final_norm"], s.get("final_norm"))
  _conv(m.head, p["head"])


def _dcgan(m, p, s):
  kind = "ConvTranspose" if isinstance(m, DCGANGenerator) else "Conv"
  for i, conv in enumerate(m.convs):
    _conv(conv, p[f"{kind}_{i}"])
  for i, bn in enumerate(m.bns):
    _bn(bn, p[f"BatchNorm_{i}"], s.get(f"BatchNorm_{i}"))


def _resnet_generator(m, p, s):
  convs = [x for x in m.model if isinstance(x, (nn.Conv2d, nn.ConvTranspose2d))]
  blocks = [x for x in m.model if isinstance(x, ResnetBlock)]
  for i, conv in enumerate(convs[:3]):
    _conv(conv, p[f"Conv_{i}"])
  for i, block in enumerate(blocks):
    _conv(block.conv_block[1], p[f"ResnetBlock_{i}"]["Conv_0"])
    _conv(block.conv_block[5], p[f"ResnetBlock_{i}"]["Conv_1"])
  for i, conv in enumerate(convs[3:5]):
    _conv(conv, p[f"ConvTranspose_{i}"])
  _conv(convs[5], p["Conv_3"])


def _patch_discriminator(m, p, s):
  for i, conv in enumerate(m.convs):
    _conv(conv, p[f"Conv_{i}"])


_COPIERS = {Darknet: _darknet, WideResNet: _wide_resnet, DCGANGenerator: _dcgan,
            DCGANCritic: _dcgan, ResnetGenerator: _resnet_generator,
            PatchDiscriminator: _patch_discriminator}


def copy_flax_params(model: nn.Module, variables) -> nn.Module:
  """Load a Flax model's `{"params": ..., "batch_stats": ...}` into its torch twin (in place).

  Convolution kernels OHWI -> OIHW (ConvTranspose too, see `_conv`), Dense (in, out) ->
  Linear (out, in), BatchNorm scale/bias/mean/var -> weight/bias/running_mean/running_var.
  """
  _COPIERS[type(model)](model, variables["params"], variables.get("batch_stats", {}))
  return model


def copy_fastnet_params(model: FastNet, variables) -> FastNet:
  """jaxgan FastNet variables into the torch twin (tests: the two compute the same function)."""
  p, s = variables["params"], variables.get("batch_stats", {})
  _conv(model.whiten, p["whiten"])
  layers = [(g, i) for g in model.groups for i in (1, 2)]
  for n, (group, i) in enumerate(layers):
    _conv(getattr(group, f"conv{i}"), p[f"layers_{n}"]["Conv_0"])
    bn = getattr(group, f"norm{i}")
    _set(bn.bias, p[f"layers_{n}"]["BatchNorm_0"]["bias"])
    if f"layers_{n}" in s:
      _set(bn.running_mean, s[f"layers_{n}"]["BatchNorm_0"]["mean"])
      _set(bn.running_var, s[f"layers_{n}"]["BatchNorm_0"]["var"])
  _set(model.head.weight, np.asarray(p["head"]["kernel"]).T)
  return model



# ---- device-side data ----------------------------------------------------------------------------
def _source_index(n, pad, mode, device):
  """For each position of an axis padded by `pad`, the index it reads: "symmetric" repeats
  the edge pixel (jaxgan's default for CIFAR), "reflect" does not, "edge" clamps."""
  i = torch.arange(-pad, n + pad, device=device)
  if mode == "edge":
    return i.clamp(0, n - 1)
  if mode not in ("symmetric", "reflect"):
    raise ValueError(f"pad mode {mode!r}: the PyTorch reference has symmetric, reflect, edge")
  shift = 1 if mode == "symmetric" else 0
  i = torch.where(i < 0, -i - shift, i)
  return torch.where(i >= n, 2 * n - 2 + shift - i, i)


def crop_flip_at(images, offsets, flips, size, pad=0, mode="symmetric"):
  """Pad uint8 NHWC images by `pad`, crop `size` x `size` at `offsets` (B, 2) and flip
  horizontally where `flips` (B,): one gather, the padding and the flip folded into the
  row and column indices (jaxgan.data.augment.crop_flip's result)."""
  b, h, w, _ = images.shape
  dev = images.device
  r = torch.arange(size, device=dev)
  rows = _source_index(h, pad, mode, dev)[offsets[:, :1] + r]
  cols = _source_index(w, pad, mode, dev)[offsets[:, 1:] + torch.where(flips[:, None],
                                                                         size - 1 - r, r)]
  return images[torch.arange(b, device=dev)[:, None, None], rows[:, :, None], cols[:, None, :]]


def crop_flip(images, size, pad=0, mode="symmetric", flip=True):
  """Random crop offsets and flips drawn on the images' device, then `crop_flip_at`."""
  b, h, _, _ = images.shape
  dev = images.device
  offsets = torch.randint(0, h + 2 * pad - size + 1, (b, 2), device=dev)
  flips = torch.rand(b, device=dev) < 0.5 if flip else torch.zeros(b, dtype=torch.bool,
                                                                    device=dev)
  return crop_flip_at(images, offsets, flips, size, pad, mode)


def _to_nchw(x, channels_last):
  """uint8 NHWC -> float NCHW in the variant's memory format."""
  x = x.permute(0, 3, 1, 2).float()
  return x.contiguous(memory_format=torch.channels_last if channels_last else
                      torch.contiguous_format)


def uint8_images(n, size, device):
  """Random uint8 NHWC images on `device` (the speed runs' data)."""
  return torch.randint(0, 256, (n, size, size, 3), dtype=torch.uint8, device=device)


# ---- a variant's set-up --------------------------------------------------------------------------
class Setup:
  """What a train step needs besides its models: device, precision and variant. On CUDA it
  allows TF32 and cuDNN autotuning (see the module docstring)."""

  def __init__(self, device, dtype, variant):
    if variant not in VARIANTS:
      raise ValueError(f"variant {variant!r}: use one of {VARIANTS}")
    if dtype not in ("float32", "bfloat16"):
      raise ValueError(f"dtype {dtype!r}: use float32 or bfloat16")
    self.device = torch.device(device)
    self.amp = dtype == "bfloat16"
    self.compile = variant == "compile"
    self.channels_last = variant == "channels_last" or (self.compile and
                                                        self.device.type == "cuda")
    if self.device.type == "cuda":
      torch.backends.cuda.matmul.allow_tf32 = True  # XLA's default for float32 on Ampere+
      torch.backends.cudnn.allow_tf32 = True
      torch.backends.cudnn.benchmark = True  # fixed shapes: autotune the convolutions

  def autocast(self):
    if not self.amp:
      return contextlib.nullcontext()
    return torch.autocast(self.device.type, dtype=torch.bfloat16)

  def model(self, module):
    """The module on the device in the variant's layout; compiled for "compile"."""
    module = module.to(self.device)
    if self.channels_last:
      module = module.to(memory_format=torch.channels_last)
    # dynamic=False: one specialised graph per input shape (CycleGAN calls its generators on
    # batches of 2n and n), not the slower dynamic-shape kernels of automatic recompilation.
    return torch.compile(module, dynamic=False) if self.compile else module

  def images(self, x):
    return _to_nchw(x, self.channels_last)
