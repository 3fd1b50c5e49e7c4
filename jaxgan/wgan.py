"""Wasserstein GAN (lesson 12 wgan notebook; Arjovsky et al.) and WGAN-GP.

One train step is one generator iteration: `n_critic` critic steps, each on
a fresh real batch gathered from the device-resident dataset, run as one
`lax.scan` inside the compiled step, then one generator step. Sign
convention of the reference: the critic minimises D(real) - D(fake) (its
output is high for fakes), the generator minimises D(G(z)).

- `loss="wgan"`: RMSProp for both nets; before every critic step every critic
  parameter (BatchNorm scale and bias included) is clipped to [-clip, clip].
- `loss="wgan_gp"`: Adam(b1=0, b2=0.9), no clipping, no BatchNorm in the
  critic, penalty `gp_weight * (||grad D(x_hat)|| - 1)^2` on random
  interpolates of real and fake images.

The critic's BatchNorm runs in training mode on separate real and fake
passes, as in the reference. Samples are drawn with the generator in
training mode too (batch statistics of the sample batch), as the reference
draws its grids.
"""
import functools
import math
import os
from typing import Any

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxgan import parallel
from jaxgan.config_checks import INF, INT32_MAX, check, check_counts, check_ranges
from jaxgan.data import epoch_permutation, load_gan_images, load_gan_split
from jaxgan.errors import ConfigError, DatasetError
from jaxgan.images import from_uint8, make_grid, to_uint8
from jaxgan.loop import Task, skip_nonfinite, skips_nonfinite
from jaxgan.models.dcgan import DCGANCritic, DCGANGenerator, check_isize
from jaxgan.models.layers import compute_dtype

LOSSES = ("wgan", "wgan_gp")
# What a family provides to the shared code (jaxgan.tasks).
EVAL_OUTPUTS = ("samples.npz", "samples.png", "memorisation.png")


class GANState(flax.struct.PyTreeNode):
  step: jax.Array  # generator iterations done
  g_params: Any
  g_stats: Any
  g_opt: Any
  d_params: Any
  d_stats: Any
  d_opt: Any
  rng: jax.Array


def n_critic(gen_iter: int, config) -> int:
  """Critic steps before generator iteration `gen_iter` (the reference schedule).

  `critic_iters_boost` (100) while gen_iter < `critic_warmup_iters` (25) and at
  every `critic_boost_every`-th (500th) iteration, else `critic_iters` (5).
  """
  if gen_iter < config.critic_warmup_iters or gen_iter % config.critic_boost_every == 0:
    return config.critic_iters_boost
  return config.critic_iters


def critic_batches_before(gen_iter: int, config) -> int:
  """Real batches consumed by generator iterations [0, gen_iter): where the data stands."""
  warm, every = config.critic_warmup_iters, config.critic_boost_every
  ceil = lambda a: -(-a // every)
  boosted = min(gen_iter, warm) + max(0, ceil(gen_iter) - ceil(warm)) if gen_iter > 0 else 0
  return boosted * config.critic_iters_boost + (gen_iter - boosted) * config.critic_iters


def clip_params(params, c: float):
  """Clip every leaf to [-c, c] (the WGAN Lipschitz constraint)."""
  return jax.tree_util.tree_map(lambda p: jnp.clip(p, -c, c), params)


def gradient_penalty(critic, real, fake, key):
  """mean over examples of (||d critic(x_hat) / d x_hat|| - 1)^2, x_hat = e real + (1-e) fake."""
  eps = jax.random.uniform(key, (real.shape[0],) + (1,) * (real.ndim - 1))
  x_hat = eps * real + (1 - eps) * fake
  grads = jax.grad(lambda x: critic(x).sum())(x_hat)
  norms = jnp.sqrt(jnp.sum(grads.astype(jnp.float32) ** 2, axis=tuple(range(1, real.ndim))) + 1e-12)
  return jnp.mean((norms - 1.0) ** 2)


def make_optimizers(config):
  """(generator, critic) optimisers: PyTorch-equivalent RMSProp, or Adam(0, 0.9) for GP."""
  if config.loss == "wgan":
    make = lambda lr: optax.rmsprop(lr, decay=0.99, eps=1e-8, eps_in_sqrt=False)
  else:
    make = lambda lr: optax.adam(lr, b1=0.0, b2=0.9)
  return make(config.lr_g), make(config.lr_d)


_RANGES = (
    ("lr_g", 0, INF, False), ("lr_d", 0, INF, False), ("clip", 0, INF, False),
    ("gp_weight", 0, INF, False), ("iters_per_epoch", 1, INT32_MAX, True),
    ("critic_iters", 1, INF, True), ("critic_iters_boost", 1, INF, True),
    ("critic_boost_every", 1, INF, True), ("critic_warmup_iters", 0, INF, True),
)
_COUNTS = {"nz": 1, "ngf": 1, "ndf": 1, "n_extra_layers": 0}


def validate(config) -> None:
  """The WGAN recipes' own fields (the shared ones: config_checks)."""
  check(config.loss in LOSSES, f"--config.loss={config.loss!r}: use one of {LOSSES}")
  try:
    check_isize(config.image_size)
  except ValueError as e:
    raise ConfigError(f"--config.image_size: {e}") from None
  check_ranges(config, _RANGES)
  check_counts(config, _COUNTS)


class WGANTask(Task):
  resume_safe_fields = frozenset({"critic_loop"})
  throughput_unit = "gen_iters"
  units_per_step = 1
  progress_keys = ("loss_d", "loss_g", "d_real", "d_fake")

  validate = staticmethod(validate)

  @staticmethod
  def load_data(config, train: bool):
    return load_gan_images(config) if train else None

  def __init__(self, config, devices, images, train: bool = True):
    super().__init__(config, devices)
    self.gp = config.loss == "wgan_gp"
    dtype = compute_dtype(config.dtype)
    m = config.model
    self.nz = m.nz
    self.generator = DCGANGenerator(config.image_size, m.nz, 3, m.ngf, m.n_extra_layers,
                                    upsample=m.upsample, axis_name=parallel.AXIS, dtype=dtype)
    self.critic = DCGANCritic(config.image_size, 3, m.ndf, m.n_extra_layers,
                              batch_norm=not self.gp, axis_name=parallel.AXIS, dtype=dtype)
    self.g_tx, self.d_tx = make_optimizers(config)
    self.steps_per_epoch = config.iters_per_epoch
    self.num_epochs = config.num_epochs
    self.fixed_noise = jax.random.normal(jax.random.PRNGKey(config.seed + 1),
                                         (config.num_grid_samples, m.nz))
    self._sampler = self.generator.clone(axis_name=None)  # sampling runs outside pmap
    self._sample = jax.jit(self._generate)
    if train:
      self.num_images = len(images)
      # Batches of this process's own images: a data position, not a count of collectives.
      self.batches_per_epoch = self.layout.steps_per_epoch(len(images), "training images",
                                                           agree=False)
      self.images = parallel.replicate(images, self.devices)
      self._orders = {}

  # ---- state -------------------------------------------------------------
  @functools.cached_property
  def _init_fn(self):  # compiled once per task
    def init(kg, kd):
      size = self.config.image_size
      g = self.generator.init(kg, jnp.zeros((2, self.nz)), train=False)
      d = self.critic.init(kd, jnp.zeros((2, size, size, 3)), train=False)
      return g, d
    return jax.jit(init)

  def init_state(self, rng):
    with parallel.on_host():
      kg, kd, rng = jax.random.split(rng, 3)
      g, d = self._init_fn(kg, kd)
      return GANState(step=jnp.zeros((), jnp.int32), g_params=g["params"],
                      g_stats=g.get("batch_stats", {}), g_opt=self.g_tx.init(g["params"]),
                      d_params=d["params"], d_stats=d.get("batch_stats", {}),
                      d_opt=self.d_tx.init(d["params"]), rng=rng)

  def progress_note(self, step):
    """The first `critic_warmup_iters` iterations run `critic_iters_boost` critic steps each
    (minutes on a CPU): named while they last."""
    warm = self.config.critic_warmup_iters
    return f"critic warm-up {step + 1}/{warm}" if step < warm else ""

  def describe(self):
    c = self.config
    return (f"{'WGAN-GP' if self.gp else 'WGAN'} {c.image_size}x{c.image_size} on {c.dataset} "
            f"({self.num_images} images), batch {c.batch_size}, {c.dtype}, "
            f"an epoch here = {self.steps_per_epoch} generator iterations")

  # ---- data --------------------------------------------------------------
  def _order(self, data_epoch: int) -> np.ndarray:
    if data_epoch not in self._orders:
      self._orders = {data_epoch: epoch_permutation(self.config.seed, data_epoch,
                                                    self.num_images)}
    return self._orders[data_epoch]

  def train_batch(self, step):
    """Indices of the n_critic real batches of generator iteration `step`, per device."""
    first = critic_batches_before(step, self.config)
    rows = []
    for k in range(first, first + n_critic(step, self.config)):
      epoch, pos = divmod(k, self.batches_per_epoch)
      batch = self.layout.local_batch
      rows.append(self._order(epoch)[pos * batch:(pos + 1) * batch])
    index = np.stack(rows).astype(np.int32)  # (n_critic, local batch)
    return {"images": self.images, "index": self.layout.per_device(index)}

  # ---- training ----------------------------------------------------------
  def _critic_fn(self, params, stats):
    """D as a function of images (stats updates dropped): for the penalty and G's loss."""
    variables = {"params": params, **({"batch_stats": stats} if stats else {})}
    return lambda x: self.critic.apply(variables, x, train=True, mutable=["batch_stats"])[0]

  def _keys(self, rng):
    """(critic key, generator key) of one generator iteration, this device's own."""
    return jax.random.split(parallel.device_rng(rng))

  def critic_update(self, state, images, idx, key):
    """One critic step on the real batch `images[idx]`; returns (state, metrics)."""
    config = self.config
    d_params = state.d_params if self.gp else clip_params(state.d_params, config.clip)
    k_z, k_gp = jax.random.split(key)
    real = from_uint8(images[idx])
    fake = self.generator.apply({"params": state.g_params, "batch_stats": state.g_stats},
                                jax.random.normal(k_z, (idx.shape[0], self.nz)), train=True,
                                mutable=["batch_stats"])[0]
    fake = jax.lax.stop_gradient(fake)

    def loss_fn(params):
      if self.gp:
        d_real = self.critic.apply({"params": params}, real, train=True)
        d_fake = self.critic.apply({"params": params}, fake, train=True)
        penalty = gradient_penalty(self._critic_fn(params, None), real, fake, k_gp)
        new_stats = state.d_stats
      else:  # separate real and fake passes through BatchNorm, as in the reference
        d_real, upd = self.critic.apply({"params": params, "batch_stats": state.d_stats}, real,
                                        train=True, mutable=["batch_stats"])
        d_fake, upd = self.critic.apply({"params": params, "batch_stats": upd["batch_stats"]},
                                        fake, train=True, mutable=["batch_stats"])
        penalty, new_stats = 0.0, upd["batch_stats"]
      loss = d_real.mean() - d_fake.mean() + config.gp_weight * penalty
      return loss, (new_stats, {"loss_d": loss, "d_real": d_real.mean(), "d_fake": d_fake.mean()})

    (_, (d_stats, metrics)), grads = jax.value_and_grad(loss_fn, has_aux=True)(d_params)
    grads, metrics = parallel.mean((grads, metrics))
    updates, d_opt = self.d_tx.update(grads, state.d_opt, d_params)
    return state.replace(d_params=optax.apply_updates(d_params, updates), d_stats=d_stats,
                         d_opt=d_opt), metrics

  def generator_update(self, state, batch_size, key):
    """One generator step against the current critic; counts a generator iteration."""
    critic = self._critic_fn(state.d_params, state.d_stats)

    def loss_fn(params):
      fake, upd = self.generator.apply({"params": params, "batch_stats": state.g_stats},
                                       jax.random.normal(key, (batch_size, self.nz)), train=True,
                                       mutable=["batch_stats"])
      return critic(fake).mean(), upd["batch_stats"]

    (loss_g, g_stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.g_params)
    grads, loss_g = parallel.mean((grads, loss_g))
    updates, g_opt = self.g_tx.update(grads, state.g_opt, state.g_params)
    return state.replace(step=state.step + 1, g_params=optax.apply_updates(state.g_params, updates),
                         g_stats=g_stats, g_opt=g_opt), {"loss_g": loss_g}

  def train_step(self, state, batch, rng):
    """A whole generator iteration in one program: critic steps under lax.scan."""
    k_critic, k_gen = self._keys(rng)
    images, index = batch["images"], batch["index"]

    def body(state, xs):
      k, idx = xs
      return self.critic_update(state, images, idx, jax.random.fold_in(k_critic, k))

    state, critic_metrics = jax.lax.scan(body, state, (jnp.arange(index.shape[0]), index))
    # The reference reports the last critic step of the iteration.
    metrics = {k: v[-1] for k, v in critic_metrics.items()}
    state, g_metrics = self.generator_update(state, index.shape[1], k_gen)
    return state, {**metrics, **g_metrics}

  def critic_loop(self) -> str:
    mode = self.config.get("critic_loop", "auto")
    if mode == "auto":  # XLA:CPU runs convolutions inside loops without its fast kernels
      return "dispatch" if self.devices[0].platform == "cpu" else "scan"
    if mode not in ("scan", "dispatch"):
      raise ConfigError(f"--config.critic_loop={mode!r}: use auto, scan or dispatch")
    return mode

  # Critic updates of the current generator iteration done before a stop (see
  # Task.stop_requested); saved in the checkpoint's metadata and resumed from.
  critic_steps_done = 0

  def checkpoint_meta(self):
    return {"critic_steps_done": self.critic_steps_done} if self.critic_steps_done else {}

  def resume_within_step(self, meta):
    self.critic_steps_done = int(meta.get("critic_steps_done", 0))

  def compile_step(self, devices):
    """`scan`: one program per generator iteration. `dispatch`: one compiled call per
    critic step, a stop request is served between them (a CPU spends minutes in a warm-up
    iteration's 100 critic steps). Both give the same result for the same seed."""
    dispatch = self._dispatch_step(devices)
    if self.critic_loop() == "dispatch":
      return dispatch
    scan = super().compile_step(devices)
    # A run stopped inside an iteration on the dispatch path finishes that one there.
    return lambda state, batch: (dispatch if self.critic_steps_done else scan)(state, batch)

  def _dispatch_step(self, devices):

    guard = skip_nonfinite if skips_nonfinite(self.config) else lambda old, new, m: (new, m)

    def critic_fn(state, batch, k):
      k_critic, _ = self._keys(jax.random.fold_in(state.rng, state.step))
      return guard(state, *self.critic_update(state, batch["images"], batch["index"][k],
                                              jax.random.fold_in(k_critic, k)))

    def generator_fn(state, batch):
      _, k_gen = self._keys(jax.random.fold_in(state.rng, state.step))
      return guard(state, *self.generator_update(state, batch["index"].shape[1], k_gen))

    p_critic = parallel.pmap_step(critic_fn, devices)
    p_generator = parallel.pmap_step(generator_fn, devices)
    ks = []

    def step(state, batch):
      n = batch["index"].shape[1]
      while len(ks) < n:
        ks.append(parallel.replicate(np.int32(len(ks)), devices))
      skipped, first, metrics = 0.0, self.critic_steps_done, None
      for k in range(first, n):
        if k > first and self.stop_requested():
          self.critic_steps_done = k
          return state, None
        if metrics is not None:  # at most two queued: a stop waits for one critic step
          jax.block_until_ready(metrics)
        state, metrics = p_critic(state, batch, ks[k])
        skipped = skipped + metrics.pop("skipped", 0.0)
      self.critic_steps_done = 0
      state, g_metrics = p_generator(state, batch)
      if "skipped" in g_metrics:  # an iteration counts as skipped if any of its updates was
        g_metrics["skipped"] = jnp.minimum(1.0, g_metrics["skipped"] + skipped)
      return state, {**metrics, **g_metrics}

    return step

  # ---- samples -----------------------------------------------------------
  def _generate(self, g_params, g_stats, noise):
    return self._sampler.apply({"params": g_params, "batch_stats": g_stats}, noise, train=True,
                                mutable=["batch_stats"])[0]

  def generate(self, state, noise) -> np.ndarray:
    """uint8 samples of an unreplicated or replicated (first device) state."""
    g_params, g_stats = state.g_params, state.g_stats
    if self.is_replicated(state):
      g_params, g_stats = jax.tree_util.tree_map(lambda x: x[0], (g_params, g_stats))
    out = [self._sample(g_params, g_stats, noise[i:i + 256]) for i in range(0, len(noise), 256)]
    return to_uint8(np.concatenate([np.asarray(o) for o in out]))

  @staticmethod
  def is_replicated(state) -> bool:
    return np.ndim(state.step) == 1

  def periodic_outputs(self, state, step, writer):
    grid = make_grid(self.generate(state, self.fixed_noise))
    writer.write_image(step, "samples", grid, f"samples/step_{step:07d}.png")


def _sample_bytes(num_samples: int, image_size: int) -> int:
  """Memory the WGAN evaluation of `num_samples` samples needs, roughly: their pairwise
  feature distances (n x n float64, and masks of them), and per sample its pixels as
  generated (float32, a few copies) and kept (uint8) and its features (up to 32x32x3
  float64, with their distance rows)."""
  return 10 * num_samples ** 2 + num_samples * (20 * image_size ** 2 * 3 + 100_000)


def check_evaluation(saved, num_samples: int = 1000, **unused) -> None:
  """Before evaluate.py loads anything: the samples asked for fit in this machine's memory."""
  image_size = saved.image_size
  try:
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
  except (ValueError, OSError, AttributeError):  # not a POSIX system: assume 16 GiB
    memory = 16 * 2 ** 30
  need = _sample_bytes(num_samples, image_size)
  if need <= memory:
    return
  b = _sample_bytes(1, image_size) - 10  # the linear term's factor
  most = int((-b + math.sqrt(b * b + 40 * memory)) / 20)
  raise ConfigError(f"--num_samples={num_samples:,} needs about {need / 2 ** 30:,.0f} GiB of "
                    f"memory (the diversity metric compares every pair of samples, and each "
                    f"{image_size}x{image_size} sample is kept), more than this machine's "
                    f"{memory / 2 ** 30:.0f} GiB; use at most {most:,} here (the default is "
                    "1,000).")


def evaluate_workdir(workdir: str, devices: list, num_samples: int = 1000,
                     dataset: str | None = None, features: str | None = None,
                     batch_size: int | None = None, held_out_split: str | None = None,
                     max_train: int = 10000, cache_dir: str | None = None,
                     **unused) -> tuple[dict, dict]:
  """Sample a trained WGAN and measure the samples.

  Returns (result, files to write): `samples.npz` (uint8), `samples.png` (grid)
  and `memorisation.png` (the 8 samples nearest to a training image, each
  beside it). Metrics (`jaxgan.gan_metrics.unconditional_report`) use the
  feature space `features` (default: pixels) against the held-out split
  (`test` unless given) and up to `max_train` training images of `dataset`
  (default: the training run's); decoded images are cached in `cache_dir`
  (`for_reader`).
  """
  from jaxgan.experiment import for_reader
  from jaxgan.features import feature_space
  from jaxgan.gan_metrics import unconditional_report
  from jaxgan.images import png_writer
  from jaxgan.checkpoint import restore_latest
  config, task, state, step = restore_latest(
      workdir, lambda config, meta: WGANTask.build(config, devices, train=False))
  for_reader(config, cache_dir)
  if dataset:
    config = config.copy_and_resolve_references()
    config.dataset = dataset
  space = feature_space(features or "pixels")
  noise = jax.random.normal(jax.random.PRNGKey(config.seed + 2), (num_samples, task.nz))
  samples = task.generate(state, noise)
  try:
    held_out, held_out_which = load_gan_split(config,
                                              held_out_split or config.get("eval_split", "test"))
  except DatasetError:
    if held_out_split:
      raise
    # reported: the metrics then use the training images as the reference
    held_out, held_out_which = None, "none (the dataset has no held-out images)"
  train, train_which = load_gan_split(config)
  train = train[np.sort(np.random.default_rng(0).permutation(len(train))[:max_train])]
  report, pairs = unconditional_report(space, samples, held_out, train, batch_size or 250, devices)
  result = {"step": int(step), "dataset": str(config.dataset), "held_out_images": held_out_which,
            "train_images": f"{len(train)} of {train_which}",
            "num_samples": int(num_samples), "samples": "samples.npz", "grid": "samples.png",
            "memorisation_grid": "memorisation.png", **report}
  return result, {"samples.npz": lambda f: np.savez_compressed(f, images=samples),
                  "samples.png": png_writer(make_grid(samples[:64])),
                  "memorisation.png": png_writer(pairs)}


def format_report(r: dict) -> list[str]:
  """evaluate.py's report of a WGAN evaluation."""
  from jaxgan.gan_metrics import format_unconditional_report
  return format_unconditional_report(r)


TASK = WGANTask
