"""PyTorch references of jaxgan's train steps, timed for benchmarks/train_throughput.py's
PyTorch rows: the speed ratios on one machine.

Written from DESIGN.md and jaxgan's tasks: the same models (torch_models.py), the same
optimisers, batch and per-step work, with the data held on the device as uint8 and
gathered, augmented and normalised there, as jaxgan's compiled steps do. `measure_torch`
times one preset of benchmarks/common.py and returns a row with the same keys as
train_throughput's `measure`; `measure_torch_rows` gives the rows of every variant
(torch_models.VARIANTS: eager, channels_last, compile).

PyTorch is optional: jaxgan never imports this module; train_throughput imports it only
when its PyTorch rows run.
"""
import time

import torch
import torch.nn.functional as F

from benchmarks.common import Phases, add_flop_rates, config_for, peak_tflops
from benchmarks.torch_models import (DCGANCritic, DCGANGenerator, PatchDiscriminator,
                                     ResnetGenerator, Setup, build_classifier, count_params,
                                     crop_flip, default_device, uint8_images)
from benchmarks.torch_recipes import recipe_step

# The seed's CIFAR-10 statistics; jaxgan computes them from the data (the speed is the same).
CIFAR_MEAN = (0.4914, 0.48216, 0.44653)
CIFAR_STD = (0.24703, 0.24349, 0.26159)


# ---- train steps ---------------------------------------------------------------------------------
def _start_lr(config):
  """The schedule's first learning rate (the value does not change the speed)."""
  if config.schedule == "clr_beta":
    return config.learning_rate / config.clr_beta[0]
  if config.schedule == "clr":
    return config.learning_rate / config.clr[0]
  return config.learning_rate


def classifier_step(config, setup, images=None, labels=None):
  """jaxgan's classifier step: random index gather from uint8 data on the device, pad 4 +
  random crop + flip, normalise, forward, cross-entropy, backward, SGD(momentum 0.9, L2
  1e-4 added to the gradient: PyTorch's weight_decay). Random data unless `images` (uint8
  NHWC) and `labels` are given."""
  if config.model.get("name") == "fastnet":  # the whole fast recipe's step
    return recipe_step(config, setup)
  model = build_classifier(config.model)
  n_params = count_params(model)
  net = setup.model(model).train()
  dev, size, bs = setup.device, config.image_size, config.batch_size
  if images is None:
    images = uint8_images(config.train_subset, size, dev)
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
  images = uint8_images(config.train_subset, size, dev)
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
  data = {k: uint8_images(config.train_subset, config.load_size, dev) for k in "ab"}
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
  if config is None:
    config = config_for(preset, batch_size, dtype, 1)
  phase = Phases(f"torch {variant} {preset} {dtype} batch {batch_size}")
  setup = Setup(device or default_device(), dtype, variant)
  dev = setup.device
  if dev.type == "cuda":  # (Setup has allowed TF32 and cuDNN autotuning)
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


def measure_torch_rows(preset, batch_size, dtype, steps, device, variants, jax_row=None,
                       peak_tflops_per_device=None, on_row=lambda row: None, warm_steps=5):
  """The PyTorch reference's rows for one configuration; a failure becomes an error row.

  Their TFLOP/s and MFU use the jaxgan row's FLOPs count (same model, same step). Each row
  goes to `on_row` as soon as it is measured: a timeout in a later variant keeps it.
  """
  rows = []
  for variant in variants:
    try:
      row = measure_torch(preset, batch_size, dtype, variant, steps, device,
                          warm_steps=warm_steps)
    except Exception as e:  # a missing reference or a failed compile must not end the run
      row = {"framework": "torch", "variant": variant, "preset": preset,
             "batch_size": batch_size, "dtype": dtype, "error": f"{type(e).__name__}: {e}"}
    if jax_row and "error" not in row:
      add_flop_rates(row, jax_row.get("flops_per_step"),
                     peak_tflops_per_device or torch_peak_tflops(device, dtype))
    rows.append(row)
    on_row(row)
    release_torch_memory(device)
  return rows


def torch_peak_tflops(device, dtype):
  """`peak_tflops` of the PyTorch rows' GPU (None on CPU)."""
  if not device.startswith("cuda"):
    return None
  return peak_tflops(torch.cuda.get_device_name(torch.device(device)), dtype)


def release_torch_memory(device):
  """Give PyTorch's cached GPU memory back, for the next JAX measurement."""
  if device.startswith("cuda"):
    torch.cuda.empty_cache()


def torch_machine(device):
  """What common.machine records, for PyTorch on `device`."""
  info = {"torch": torch.__version__, "torch_device": device}
  if device.startswith("cuda"):
    info.update(torch_device_name=torch.cuda.get_device_name(torch.device(device)),
                torch_cuda=torch.version.cuda,
                cudnn=torch.backends.cudnn.version())
  return info
