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
import numpy as np

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


# ---- the reference repository's saved generators ------------------------------------------
_INSTANCE_NORM_STATS = ("running_mean", "running_var", "num_batches_tracked")


class StateDictError(ValueError):
  """A state dict that is not a ResNet generator of the reference layout."""


def _reference_keys(n_blocks: int, second_conv: int) -> dict[str, str]:
  """Reference `model.<i>` prefix of each conv -> its jaxgan parameter path."""
  keys = {"model.1": "Conv_0", "model.4": "Conv_1", "model.7": "Conv_2"}
  for b in range(n_blocks):
    keys[f"model.{10 + b}.conv_block.1"] = f"ResnetBlock_{b}/Conv_0"
    keys[f"model.{10 + b}.conv_block.{second_conv}"] = f"ResnetBlock_{b}/Conv_1"
  keys[f"model.{10 + n_blocks}"] = "ConvTranspose_0"
  keys[f"model.{13 + n_blocks}"] = "ConvTranspose_1"
  keys[f"model.{17 + n_blocks}"] = "Conv_3"
  return keys


def _describe_other(keys: list[str]) -> str:
  """What a state dict that is not a ResNet generator looks like it is."""
  if any(k.startswith("model.model.") for k in keys):
    return "a U-Net generator (pix2pix's unet_128 / unet_256), which jaxgan does not implement"
  if "model.0.weight" in keys:
    return ("a PatchGAN discriminator (latest_net_D*.pth); translate with a generator file "
            "(latest_net_G_A.pth, latest_net_G_B.pth or a *_pretrained/latest_net_G.pth)")
  shown = ", ".join(keys[:4]) + (", ..." if len(keys) > 4 else "")
  return f"no ResNet generator: its {len(keys)} tensors are named {shown}"


def _check_layout(tensors: dict, keys: list) -> tuple[int, dict]:
  """(number of residual blocks, the reference's layer keys) of a generator state dict whose
  keys are exactly those of a reference ResnetGenerator, else a StateDictError."""
  n_blocks = 0
  while f"model.{10 + n_blocks}.conv_block.1.weight" in tensors:
    n_blocks += 1
  second = 6 if "model.10.conv_block.6.weight" in tensors else 5
  layout = _reference_keys(n_blocks, second)
  expected = {f"{prefix}.{kind}" for prefix in layout for kind in ("weight", "bias")}
  missing, unexpected = sorted(expected - set(keys)), sorted(set(keys) - expected)
  if missing or unexpected:
    found = f"{n_blocks} residual blocks (model.10-model.{9 + n_blocks})" if n_blocks else \
        "no residual blocks at model.10"
    parts = [f"missing {', '.join(missing[:3])}" if missing else "",
             f"unexpected {', '.join(unexpected[:3])}" if unexpected else ""]
    raise StateDictError(f"found {found}, but not the layers that go with them: "
                         f"{'; '.join(p for p in parts if p)}. Expected a ResnetGenerator "
                         "(resnet_<n>blocks) state dict of the reference repository")
  return n_blocks, layout


def generator_from_state_dict(state_dict: dict) -> tuple[ResnetGenerator, dict]:
  """(ResnetGenerator, its params) from a generator state dict as the reference repository
  (junyanz/pytorch-CycleGAN-and-pix2pix) saves it: `latest_net_G_A.pth`, or the
  `*_pretrained/latest_net_G.pth` of its published models.

  Keys `model.<i>...` of its `nn.Sequential`: `model.1` the 7x7 stem,
  `model.4` and `model.7` the stride-2 convs, `model.<10+b>.conv_block.{1,5}`
  block b's convs (`.6` with dropout, which is off at test time),
  `model.<10+n>` / `model.<13+n>` the transposed convs and `model.<17+n>` the
  head. Width, block count and output channels are read from the tensors.
  Conv weights (out, in, kh, kw) become jaxgan's stored (out, kh, kw, in);
  ConvTranspose2d's (in, out, kh, kw) becomes (in, kh, kw, out), the kernel
  of the conv whose gradient it is (`layers.torch_conv_transpose`). Old
  files' InstanceNorm running statistics are ignored, as the reference does.
  A `module.` prefix (DataParallel) is dropped.
  """
  tensors = {}
  for key, value in state_dict.items():
    key = key[len("module."):] if key.startswith("module.") else key
    if not key.endswith(_INSTANCE_NORM_STATS):
      tensors[key] = np.asarray(value)
  keys = sorted(tensors)
  stem = tensors.get("model.1.weight")
  if stem is None or np.ndim(stem) != 4 or stem.shape[2:] != (7, 7):
    raise StateDictError(_describe_other(keys))
  if stem.shape[1] != 3:
    raise StateDictError(f"a generator for {stem.shape[1]}-channel inputs; jaxgan translates "
                         "RGB images (3 channels)")
  n_blocks, layout = _check_layout(tensors, keys)
  ngf, output_nc = stem.shape[0], tensors[f"model.{17 + n_blocks}.weight"].shape[0]
  generator = ResnetGenerator(ngf, n_blocks, output_nc)
  template = jax.eval_shape(generator.init, jax.random.PRNGKey(0),
                            jnp.zeros((1, 32, 32, 3)))["params"]
  params = {}
  for prefix, path in layout.items():
    weight, bias = tensors[f"{prefix}.weight"], tensors[f"{prefix}.bias"]
    node = template
    for name in path.split("/"):
      node = node[name]
    kernel = np.transpose(weight, (0, 2, 3, 1)).astype(np.float32)
    if kernel.shape != node["kernel"].shape or bias.shape != node["bias"].shape:
      raise StateDictError(f"{prefix}.weight has shape {tuple(weight.shape)}, which does not fit "
                           f"a ResnetGenerator of width {ngf} (model.1.weight) with {n_blocks} "
                           "blocks")
    target = params
    for name in path.split("/")[:-1]:
      target = target.setdefault(name, {})
    target[path.split("/")[-1]] = {"kernel": jnp.asarray(kernel),
                                   "bias": jnp.asarray(bias, jnp.float32)}
  return generator, params
