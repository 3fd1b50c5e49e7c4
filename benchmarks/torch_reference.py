"""PyTorch references of jaxgan's models and train steps, for speed ratios on one machine.

Written from DESIGN.md and jaxgan's Flax modules: the same architectures
(parameter counts are checked against the Flax ones in
tests/test_torch_reference.py, and `copy_flax_params` shows they compute the
same function), the same optimisers, batch and per-step work, with the data
held on the device as uint8 and gathered, augmented and normalised there, as
jaxgan's compiled steps do. `measure_torch` times one preset of
benchmarks/train_throughput.py and returns a row with the same keys as its
`measure`.

Variants (`VARIANTS`):
- "eager": plain PyTorch, float32, or bfloat16 autocast (AMP) when `dtype` is
  "bfloat16" (parameters, optimiser and losses stay float32, as in jaxgan);
- "channels_last": eager with NHWC memory format for models and inputs (the
  fast layout for cuDNN convolutions on tensor cores);
- "compile": `torch.compile` of each network (channels_last on CUDA too); the
  optimiser steps and the data pipeline stay eager.

On CUDA, TF32 is allowed for float32 convolutions and matmuls, as XLA does
by default on Ampere and newer GPUs, and cuDNN autotuning is on (fixed shapes).

PyTorch is optional: jaxgan never imports this module; the benchmark imports
it only when `import torch` works.
"""
import contextlib
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from jaxgan.models.dcgan import generator_widths  # plain Python: the widths are the same

VARIANTS = ("eager", "channels_last", "compile")
# The seed's CIFAR-10 statistics; jaxgan computes them from the data (the speed is the same).
CIFAR_MEAN = (0.4914, 0.48216, 0.44653)
CIFAR_STD = (0.24703, 0.24349, 0.26159)
ACTIVATIONS = {"leaky_relu": lambda: nn.LeakyReLU(0.1), "relu": nn.ReLU,
               "leaky_relu_0.2": lambda: nn.LeakyReLU(0.2)}


def default_device() -> str:
  return "cuda" if torch.cuda.is_available() else "cpu"


def count_params(*modules) -> int:
  return sum(p.numel() for m in modules for p in m.parameters())


# ---- Darknet and Wide-ResNet ------------------------------------------------------------------
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


# ---- DCGAN (WGAN) -----------------------------------------------------------------------------
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


# ---- CycleGAN ---------------------------------------------------------------------------------
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


# ---- Flax -> torch parameters -----------------------------------------------------------------
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


# ---- device-side data -------------------------------------------------------------------------
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


def _uint8_images(n, size, device):
  return torch.randint(0, 256, (n, size, size, 3), dtype=torch.uint8, device=device)


# ---- train steps ------------------------------------------------------------------------------
class Setup:
  """What a train step needs besides its models: device, precision and variant."""

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


def _start_lr(config):
  """The schedule's first learning rate (the value does not change the speed)."""
  if config.schedule == "clr_beta":
    return config.learning_rate / config.clr_beta[0]
  if config.schedule == "clr":
    return config.learning_rate / config.clr[0]
  return config.learning_rate


def build_classifier(model_config, num_classes=10):
  """The torch twin of `jaxgan.classifier.build_model` (darknet and wrn)."""
  kwargs = {k: tuple(v) if isinstance(v, (list, tuple)) else v
            for k, v in model_config.items() if k != "name"}
  name = model_config.get("name", "darknet")
  classes = {"darknet": Darknet, "wrn": WideResNet}
  if name not in classes:
    raise ValueError(f"no PyTorch reference for model {name!r}; it covers {sorted(classes)}")
  return classes[name](num_classes=num_classes, **kwargs)


def classifier_step(config, setup, images=None, labels=None):
  """jaxgan's classifier step: random index gather from uint8 data on the device, pad 4 +
  random crop + flip, normalise, forward, cross-entropy, backward, SGD(momentum 0.9, L2
  1e-4 added to the gradient: PyTorch's weight_decay). Random data unless `images` (uint8
  NHWC) and `labels` are given."""
  if config.model.get("name") == "fastnet":  # the whole fast recipe's step
    from benchmarks.torch_recipes import recipe_step
    return recipe_step(config, setup)
  model = build_classifier(config.model)
  n_params = count_params(model)
  net = setup.model(model).train()
  dev, size, bs = setup.device, config.image_size, config.batch_size
  if images is None:
    images = _uint8_images(config.train_subset, size, dev)
    labels = torch.randint(0, 10, (config.train_subset,), device=dev)
  images, labels = images.to(dev), labels.to(dev)
  scale = 1 / (255 * torch.tensor(CIFAR_STD, device=dev)).reshape(1, 3, 1, 1)
  shift = (torch.tensor(CIFAR_MEAN, device=dev) / torch.tensor(CIFAR_STD, device=dev))
  shift = shift.reshape(1, 3, 1, 1)
  opt = torch.optim.SGD(model.parameters(), lr=_start_lr(config), momentum=config.momentum,
                        weight_decay=config.weight_decay)
  aug = config.augment

  def step():
    idx = torch.randint(0, len(images), (bs,), device=dev)
    x = crop_flip(images[idx], size, aug.pad, aug.pad_mode, aug.flip)
    x = setup.images(x) * scale - shift
    with setup.autocast():
      logits = net(x)
    loss = F.cross_entropy(logits.float(), labels[idx])
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return loss.detach()

  step.models = {"model": model}
  return step, n_params


def _noise(n, nz, setup):
  """Generator input (n, nz, 1, 1), with NHWC strides in the channels_last variants. A plain
  reshape's strides read as NCHW, the likely reason (not yet confirmed on a GPU) why
  torch.compile's graph on CUDA, expecting the first ConvTranspose's (nz, 512, 4, 4) weight
  gradient in NHWC, got it in NCHW. The eager variant keeps the plain NCHW input."""
  if setup.channels_last:
    return torch.randn(n, 1, 1, nz, device=setup.device).permute(0, 3, 1, 2)
  return torch.randn(n, nz, 1, 1, device=setup.device)


def wgan_step(config, setup):
  """One steady-state WGAN generator iteration: `critic_iters` critic steps (clip every critic
  parameter to [-clip, clip] before each, as jaxgan and the reference do; a fresh real batch
  each) and one generator step; RMSProp(alpha 0.99, eps 1e-8) with the config's lrs."""
  m, size, bs, dev = config.model, config.image_size, config.batch_size, setup.device
  if m.get("upsample", "deconv") != "deconv" or config.loss != "wgan":
    raise ValueError("the PyTorch reference covers the clipping WGAN with deconv upsampling")
  gen = DCGANGenerator(size, m.nz, 3, m.ngf, m.n_extra_layers)
  critic = DCGANCritic(size, 3, m.ndf, m.n_extra_layers)
  n_params = count_params(gen, critic)
  g, d = setup.model(gen).train(), setup.model(critic).train()
  images = _uint8_images(config.train_subset, size, dev)
  rmsprop = lambda mod, lr: torch.optim.RMSprop(mod.parameters(), lr=lr, alpha=0.99, eps=1e-8)
  g_opt, d_opt = rmsprop(gen, config.lr_g), rmsprop(critic, config.lr_d)
  noise = lambda: _noise(bs, m.nz, setup)

  def critic_update():
    with torch.no_grad():
      for p in critic.parameters():
        p.clamp_(-config.clip, config.clip)
    real = setup.images(images[torch.randint(0, len(images), (bs,), device=dev)]) / 127.5 - 1
    with torch.no_grad(), setup.autocast():
      fake = g(noise())
    with setup.autocast():
      loss = d(real).float().mean() - d(fake).float().mean()
    d_opt.zero_grad(set_to_none=True)
    loss.backward()
    d_opt.step()

  def generator_update():
    critic.requires_grad_(False)  # gradients flow through D to G, none into D's weights
    with setup.autocast():
      loss = d(g(noise())).float().mean()
    g_opt.zero_grad(set_to_none=True)
    loss.backward()
    g_opt.step()
    critic.requires_grad_(True)
    return loss.detach()

  def step():
    for _ in range(config.critic_iters):
      critic_update()
    return generator_update()

  step.models = {"generator": gen, "critic": critic}
  return step, n_params


def _mse(scores, target):
  return torch.mean(torch.square(scores.float() - target))


def _l1(a, b):
  return torch.mean(torch.abs(a.float() - b.float()))


def cyclegan_step(config, setup):
  """One CycleGAN iteration as jaxgan's: random 256 crop of 286 + flip on the device; G_A on
  [A, B] and G_B on [B, A] (the identity passes share the call, as in jaxgan), the cycle
  passes, LSGAN + cycle (lambda 10) + identity (5) losses, one Adam(2e-4, 0.5, 0.999) step
  for both generators with the discriminators frozen, then one for both discriminators
  (0.5 * (real + fake) each).

  Simplified: the discriminators see this iteration's fakes instead of a 50-image history
  pool (same work per step; the pool's bookkeeping is negligible next to the networks).
  """
  m, size, bs, dev = config.model, config.image_size, config.batch_size, setup.device
  if config.gan_mode != "lsgan":
    raise ValueError("the PyTorch reference covers gan_mode='lsgan'")
  nets = {k: ResnetGenerator(m.ngf, m.n_blocks) for k in ("G_A", "G_B")}
  nets.update({k: PatchDiscriminator(m.ndf, m.n_layers_d) for k in ("D_A", "D_B")})
  n_params = count_params(*nets.values())
  run = {k: setup.model(v).train() for k, v in nets.items()}
  adam = lambda names: torch.optim.Adam([p for k in names for p in nets[k].parameters()],
                                        lr=config.lr, betas=(config.beta1, config.beta2))
  g_opt, d_opt = adam(("G_A", "G_B")), adam(("D_A", "D_B"))
  data = {k: _uint8_images(config.train_subset, config.load_size, dev) for k in "ab"}
  lam_a, lam_b, lam_idt = config.lambda_a, config.lambda_b, config.lambda_identity

  def real(k):
    x = data[k][torch.randint(0, len(data[k]), (bs,), device=dev)]
    return setup.images(crop_flip(x, size, flip=config.flip)) / 127.5 - 1

  def set_d_grad(on):
    for k in ("D_A", "D_B"):
      nets[k].requires_grad_(on)

  def step():
    real_a, real_b = real("a"), real("b")
    set_d_grad(False)
    with setup.autocast():
      out_a = run["G_A"](torch.cat([real_a, real_b]))
      out_b = run["G_B"](torch.cat([real_b, real_a]))
      fake_b, fake_a = out_a[:bs], out_b[:bs]
      rec_a, rec_b = run["G_B"](fake_b), run["G_A"](fake_a)
      loss_g = (_mse(run["D_A"](fake_b), 1.0) + _mse(run["D_B"](fake_a), 1.0)
                + lam_a * _l1(rec_a, real_a) + lam_b * _l1(rec_b, real_b)
                + lam_b * lam_idt * _l1(out_a[bs:], real_b)
                + lam_a * lam_idt * _l1(out_b[bs:], real_a))
    g_opt.zero_grad(set_to_none=True)
    loss_g.backward()
    g_opt.step()
    set_d_grad(True)
    fake_a, fake_b = fake_a.detach(), fake_b.detach()
    with setup.autocast():
      d = lambda k, r, f: 0.5 * (_mse(run[k](r), 1.0) + _mse(run[k](f), 0.0))
      loss_d = d("D_A", real_b, fake_b) + d("D_B", real_a, fake_a)
    d_opt.zero_grad(set_to_none=True)
    loss_d.backward()
    d_opt.step()
    return loss_g.detach()

  step.models = nets
  return step, n_params


# task -> (builder, throughput unit). A builder returns (step, parameter count); `step()` runs
# one train step and returns its loss, `step.models` holds the (uncompiled) networks.
STEPS = {"classifier": (classifier_step, "images"), "wgan": (wgan_step, "gen_iters"),
         "cyclegan": (cyclegan_step, "iters")}


# ---- timing -----------------------------------------------------------------------------------
def _sync(device):
  if device.type == "cuda":
    torch.cuda.synchronize(device)


def measure_torch(preset, batch_size, dtype="float32", variant="eager", steps=10, device=None,
                  config=None, warm_steps=5):
  """Time the PyTorch reference of a train_throughput preset; the keys of its `measure`.

  compile_s is the first step (for "compile" it holds the graph compilation); `warm_steps`
  more untimed steps follow, then `steps` timed ones. Peak memory is
  `torch.cuda.max_memory_allocated` of this measurement on CUDA, None elsewhere.
  """
  from benchmarks.train_throughput import Phases, config_for
  if config is None:
    config = config_for(preset, batch_size, dtype, 1)
  phase = Phases(f"torch {variant} {preset} {dtype} batch {batch_size}")
  setup = Setup(device or default_device(), dtype, variant)
  dev = setup.device
  if dev.type == "cuda":
    torch.backends.cuda.matmul.allow_tf32 = True  # XLA's default for float32 on Ampere+
    torch.backends.cudnn.allow_tf32 = True
    torch.backends.cudnn.benchmark = True
    torch.cuda.reset_peak_memory_stats(dev)
  torch.manual_seed(0)
  make, unit = STEPS[config.task]
  step, n_params = make(config, setup)
  _sync(dev)
  phase("data and model")
  t0 = time.perf_counter()
  step()
  _sync(dev)
  compile_s = time.perf_counter() - t0
  phase("first step" + (" (compilation)" if setup.compile else ""))
  for _ in range(warm_steps):
    step()
  _sync(dev)
  phase(f"{warm_steps} warm steps")
  t0 = time.perf_counter()
  for _ in range(steps):
    step()
  _sync(dev)
  dt = time.perf_counter() - t0
  phase(f"{steps} timed steps")
  units = batch_size if unit == "images" else 1
  peak = torch.cuda.max_memory_allocated(dev) if dev.type == "cuda" else None
  return {"framework": "torch", "variant": variant, "preset": preset, "params": n_params,
          "batch_size": batch_size, "dtype": dtype, "devices": 1, "device": str(dev),
          "steps": steps, "warm_steps": warm_steps, "compile_s": round(compile_s, 2),
          "step_ms": round(1000 * dt / steps, 2),
          "unit": f"{unit}_per_s", "per_s": round(steps * units / dt, 2),
          "peak_memory_bytes": peak, "flops_per_step": None, "tflops_per_s": None, "mfu": None}
