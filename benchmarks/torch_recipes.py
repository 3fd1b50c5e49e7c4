"""PyTorch references of jaxgan's classifier recipes, trained end to end, for
`python -m benchmarks.time_to_accuracy --framework torch`: the same data (read by jaxgan's
loaders, the same subset), the same model, schedule, optimiser groups, augmentation,
weight averaging and TTA as the config asks for, timed the same way.

Covers `darknet`, `wrn` and `fastnet` (models from torch_models.py). Schedules come from
jaxgan.schedules, evaluated once into a table, so both frameworks follow the
same numbers. Data stays on the device as uint8; augmentation is one gather
per batch (torch_models.crop_flip_at). Variants as in torch_models.py:
"eager" (float32 or bfloat16 autocast), "channels_last", "compile".
"""
import math

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from benchmarks.torch_models import FastNet, Setup, build_model, crop_flip_at, default_device
from jaxgan.classifier import make_schedules, whitening_sample


# ---- optimiser, schedule, averaging -----------------------------------------------------------
def schedule_table(config, total_steps):
  """(lr, momentum) per step as numpy arrays, from jaxgan's own schedule functions."""
  lr_fn, mom_fn = make_schedules(config, total_steps)
  steps = np.arange(total_steps + 1)
  return (np.array([float(lr_fn(s)) for s in steps]),
          np.array([float(mom_fn(s)) for s in steps]))


def param_groups(model, config):
  """jaxgan's optimiser groups: BN shifts at bias_lr_scale x lr and weight decay / scale,
  FastNet's whitening bias on its own (frozen later), frozen parameters left out."""
  scale = config.get("bias_lr_scale", 1.0)
  norm_biases = {id(m.bias) for m in model.modules()
                 if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.bias is not None}
  groups = {"default": [], "norm_bias": [], "whiten_bias": []}
  for name, p in model.named_parameters():
    if not p.requires_grad:
      continue
    if name == "whiten.bias":
      groups["whiten_bias"].append(p)
    else:
      groups["norm_bias" if id(p) in norm_biases else "default"].append(p)
  wd = config.weight_decay
  return [{"params": groups["default"], "name": "default", "lr_scale": 1.0, "weight_decay": wd},
          {"params": groups["norm_bias"], "name": "norm_bias", "lr_scale": scale,
           "weight_decay": wd / scale},
          {"params": groups["whiten_bias"], "name": "whiten_bias", "lr_scale": 1.0,
           "weight_decay": wd}]


class Lookahead:
  """jaxgan.classifier.lookahead (airbench's averaging) on a module's float state."""

  def __init__(self, model, ema_config, steps_per_epoch, total_steps):
    self.model, self.c = model, ema_config
    self.spe, self.total = steps_per_epoch, total_steps
    self.avg = None

  def _tensors(self):
    return [t for t in self.model.state_dict().values() if t.dtype.is_floating_point]

  @torch.no_grad()
  def after_step(self, step):
    n, epoch = step + 1, step // self.spe
    if epoch >= self.c.start_epochs and n % self.c.every_n_steps == 0:
      if self.avg is None:
        self.avg = [t.clone() for t in self._tensors()]
      else:
        rho = (self.c.decay_base ** self.c.every_n_steps
               * min(n / self.total, 1.0) ** self.c.decay_pow)
        for a, t in zip(self.avg, self._tensors()):
          a.lerp_(t, 1 - rho)
          t.copy_(a)
    if self.avg is not None and (n % self.spe == 0 or n == self.total):
      for a, t in zip(self.avg, self._tensors()):
        t.copy_(a)


# ---- the run ----------------------------------------------------------------------------------
class TorchRecipe:
  """A classifier recipe in PyTorch on jaxgan's data: `init(seed)`, `train_epoch(epoch)`,
  `evaluate()`; the same interface time_to_accuracy times for jaxgan."""

  def __init__(self, config, data, device=None, variant="eager"):
    self.config = config
    # On CUDA, Setup allows TF32 (XLA's float32 default) and cuDNN autotuning.
    self.setup = Setup(device or default_device(), config.dtype, variant)
    dev = self.setup.device
    self.num_classes = data.num_classes
    train_images = data.images(config.train_split)
    self.images = torch.from_numpy(np.ascontiguousarray(train_images)).to(dev)
    self.labels = torch.from_numpy(data.labels(config.train_split).astype(np.int64)).to(dev)
    self.test_images = torch.from_numpy(np.ascontiguousarray(
        data.images(config.eval_split))).to(dev)
    self.test_labels = torch.from_numpy(data.labels(config.eval_split).astype(np.int64)).to(dev)
    x = train_images.astype(np.float64) / 255
    mean, std = x.mean(axis=(0, 1, 2)), x.std(axis=(0, 1, 2))
    self.scale = torch.tensor(1 / (255 * std), dtype=torch.float32, device=dev).view(1, 3, 1, 1)
    self.shift = torch.tensor(mean / std, dtype=torch.float32, device=dev).view(1, 3, 1, 1)
    self.steps_per_epoch = len(train_images) // config.batch_size
    self.total_steps = math.ceil(self.steps_per_epoch * config.num_epochs)
    self.num_epochs = math.ceil(config.num_epochs)
    self.lrs, self.moms = schedule_table(config, self.total_steps)

  def _normalise(self, uint8_nhwc):
    return self.setup.images(uint8_nhwc) * self.scale - self.shift

  def init(self, seed):
    config = self.config
    torch.manual_seed(seed)
    self.gen = torch.Generator(device=self.setup.device).manual_seed(seed)
    model = build_model(config.model, self.num_classes).to(self.setup.device)
    if isinstance(model, FastNet):
      n = config.get("whiten_images", 0)
      if n > 0:  # the same images as jaxgan's
        sample = torch.from_numpy(whitening_sample(len(self.images), n)).to(self.setup.device)
        model.init_whitening(self._normalise(self.images[sample]).float())
      else:  # no data whitening: an ordinary trained conv, PyTorch's default init
        model.whiten.weight.requires_grad = True
        nn.init.kaiming_uniform_(model.whiten.weight, a=math.sqrt(5))
    self.model = model
    self.net = self.setup.model(model)
    self.opt = torch.optim.SGD(param_groups(model, config), lr=float(self.lrs[0]),
                               momentum=float(self.moms[0]),
                               nesterov=config.get("nesterov", False))
    ema = config.get("ema")
    self.lookahead = (Lookahead(model, ema, self.steps_per_epoch, self.total_steps)
                      if ema is not None and ema.start_epochs >= 0 else None)
    self.flip0 = torch.rand(len(self.images), device=self.setup.device,
                            generator=self.gen) < 0.5
    self.step = 0

  def _set_hyperparams(self, step):
    whiten_steps = self.config.get("whiten_bias_epochs", 0) * self.steps_per_epoch
    for g in self.opt.param_groups:
      frozen = g["name"] == "whiten_bias" and step >= whiten_steps
      g["lr"] = 0.0 if frozen else float(self.lrs[step]) * g["lr_scale"]
      if frozen:
        g["weight_decay"] = 0.0  # a fixed bias: airbench stops its gradient altogether
      g["momentum"] = float(self.moms[step])

  def train_step(self, idx, epoch):
    """One step of the recipe on the training images `idx` (a batch of indices)."""
    config, dev = self.config, self.setup.device
    aug, bs, size = config.augment, len(idx), config.image_size
    offsets = torch.randint(0, 2 * aug.pad + 1, (bs, 2), device=dev, generator=self.gen)
    if aug.flip and aug.get("alternate_flip", False):
      flips = self.flip0[idx] ^ (epoch % 2 == 1)
    elif aug.flip:
      flips = torch.rand(bs, device=dev, generator=self.gen) < 0.5
    else:
      flips = torch.zeros(bs, dtype=torch.bool, device=dev)
    x = self._normalise(crop_flip_at(self.images[idx], offsets, flips, size, aug.pad,
                                     aug.pad_mode))
    self._set_hyperparams(min(self.step, self.total_steps - 1))
    with self.setup.autocast():
      logits = self.net(x)
    loss = F.cross_entropy(logits.float(), self.labels[idx],
                           label_smoothing=config.get("label_smoothing", 0.0))
    self.opt.zero_grad(set_to_none=True)
    loss.backward()
    self.opt.step()
    if self.lookahead is not None:
      self.lookahead.after_step(self.step)
    self.step += 1
    return loss.detach()

  def train_epoch(self, epoch, max_steps=None):
    bs = self.config.batch_size
    order = torch.randperm(len(self.images), device=self.setup.device, generator=self.gen)
    end = min((epoch + 1) * self.steps_per_epoch, self.total_steps)
    if max_steps is not None:  # a warm-up: compile and autotune, then throw the model away
      end = min(end, self.step + max_steps)
    self.net.train()
    while self.step < end:
      self.train_step(order[(self.step % self.steps_per_epoch) * bs:][:bs], epoch)

  @torch.no_grad()
  def evaluate(self, batch_size=2000):
    """accuracy, accuracy_flip_tta (summed softmaxes) and, with tta_translate, airbench's
    translate TTA; the same definitions as jaxgan.classifier.ClassifierTask.eval_step."""
    self.net.eval()
    counts = {"accuracy": 0, "accuracy_flip_tta": 0}
    translate = self.config.get("tta_translate", False)
    if translate:
      counts["accuracy_translate_tta"] = 0
    for i in range(0, len(self.test_images), batch_size):
      x = self._normalise(self.test_images[i:i + batch_size])
      y = self.test_labels[i:i + batch_size]
      with self.setup.autocast():
        net = lambda v: self.net(v).float()
        logits, logits_flip = net(x), net(x.flip(3))
        counts["accuracy"] += (logits.argmax(1) == y).sum().item()
        tta = logits.softmax(1) + logits_flip.softmax(1)
        counts["accuracy_flip_tta"] += (tta.argmax(1) == y).sum().item()
        if translate:
          mirror = lambda v: 0.5 * (net(v) + net(v.flip(3)))
          padded = F.pad(x, (1, 1, 1, 1), mode="reflect")
          h, w = x.shape[2:]
          scores = (0.25 * (logits + logits_flip) + 0.25 * mirror(padded[:, :, :h, :w])
                    + 0.25 * mirror(padded[:, :, 2:, 2:]))
          counts["accuracy_translate_tta"] += (scores.argmax(1) == y).sum().item()
    return {k: v / len(self.test_images) for k, v in counts.items()}

  def sync(self):
    if self.setup.device.type == "cuda":
      torch.cuda.synchronize()


class _RandomData:
  """What TorchRecipe reads from jaxgan's loaders, as random uint8 images (speed runs)."""

  def __init__(self, config, num_classes=10):
    rng = np.random.default_rng(0)
    n, size = max(config.train_subset, config.batch_size), config.image_size
    self.num_classes = num_classes
    self._images = rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8)
    self._labels = rng.integers(0, num_classes, n).astype(np.int32)

  def images(self, split):
    return self._images

  def labels(self, split):
    return self._labels


def recipe_step(config, setup):
  """train_throughput's PyTorch step for recipes torch_reference's plain step does not cover
  (FastNet: whitening, optimiser groups, label smoothing, alternating flips, averaging)."""
  recipe = TorchRecipe(config, _RandomData(config), setup.device,
                       "compile" if setup.compile else ("channels_last" if setup.channels_last
                                                        else "eager"))
  recipe.init(0)
  recipe.net.train()
  bs, n = config.batch_size, len(recipe.images)

  def step():
    idx = torch.randint(0, n, (bs,), device=recipe.setup.device)
    return recipe.train_step(idx, recipe.step // recipe.steps_per_epoch)

  step.models = {"model": recipe.model}
  n_params = sum(p.numel() for name, p in recipe.model.named_parameters()
                 if p.requires_grad or name == "whiten.weight")
  return step, n_params
