"""CycleGAN (Zhu et al. 2017; the lesson's cyclegan notebook, junyanz's reference).

Two generators, G_A: A -> B and G_B: B -> A, and two PatchGAN
discriminators, D_A (is this a real B?) and D_B (is this a real A?). One
train step is one reference iteration:

1. fake_B = G_A(A), rec_A = G_B(fake_B), fake_A = G_B(B), rec_B = G_A(fake_A),
   and the identity images G_A(B), G_B(A);
2. both generators step (one Adam) on LSGAN + cycle + identity losses, with
   the discriminators fixed;
3. both discriminators step (one Adam) on real images against fakes from
   step 1 passed through the history pools.

The pools live in the training state (checkpointed, reproducible from the
seed). They are global: every device gathers the whole batch's fakes and
runs the same pool update, so the pool and the result do not depend on how
many devices share the batch. Instance norm is per image, so batches above
1 and data parallelism need nothing else.
"""
import functools
from typing import Any

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxgan import parallel
from jaxgan.config_checks import INF, check, check_ranges
from jaxgan.data import augment, epoch_permutation, is_path, load_domains
from jaxgan.errors import DatasetError
from jaxgan.image_pool import ImagePool, init_pool, query_pool
from jaxgan.images import from_uint8, make_grid, to_uint8
from jaxgan.loop import Task
from jaxgan.models.cyclegan import PatchDiscriminator, ResnetGenerator
from jaxgan.models.layers import compute_dtype
from jaxgan.schedules import constant_then_linear

GAN_MODES = ("lsgan", "vanilla")
# What a family provides to the shared code (jaxgan.tasks).
EVAL_OUTPUTS = ("translations.npz", "eval.png")
DIRECTIONS = ("AtoB", "BtoA")
LOSS_NAMES = ("G_A", "G_B", "cycle_A", "cycle_B", "idt_A", "idt_B", "D_A", "D_B")


class CycleGANState(flax.struct.PyTreeNode):
  step: jax.Array
  g_params: Any  # {"G_A": ..., "G_B": ...}
  g_opt: Any
  d_params: Any  # {"D_A": ..., "D_B": ...}
  d_opt: Any
  pool_fake_a: ImagePool  # fakes of domain A, shown to D_B
  pool_fake_b: ImagePool  # fakes of domain B, shown to D_A
  rng: jax.Array


def gan_loss(scores: jax.Array, real: bool, mode: str = "lsgan") -> jax.Array:
  """LSGAN: mean (s - 1)^2 for real, mean s^2 for fake. vanilla: BCE on logits."""
  scores = scores.astype(jnp.float32)
  if mode == "lsgan":
    return jnp.mean(jnp.square(scores - (1.0 if real else 0.0)))
  return jnp.mean(optax.sigmoid_binary_cross_entropy(scores, jnp.full_like(scores, float(real))))


def l1(a: jax.Array, b: jax.Array) -> jax.Array:
  return jnp.mean(jnp.abs(a.astype(jnp.float32) - b.astype(jnp.float32)))


@functools.lru_cache(maxsize=None)
def _compiled_generator(generator: ResnetGenerator):
  """One jitted forward pass per generator architecture: it compiles once per input shape."""
  return jax.jit(lambda params, x: generator.apply({"params": params}, x))


def translate_images(generator: ResnetGenerator, params, images: np.ndarray,
                     batch_size: int = 16) -> np.ndarray:
  """uint8 images (any H, W that are multiples of 4) through a generator, as uint8."""
  fn = _compiled_generator(generator)
  out = [np.asarray(fn(params, from_uint8(jnp.asarray(images[i:i + batch_size]))))
         for i in range(0, len(images), batch_size)]
  return to_uint8(np.concatenate(out))


def _zero_where(mask, tree):
  return jax.tree_util.tree_map(lambda m, x: jnp.zeros_like(x) if m else x, mask, tree)


_RANGES = (("lr", 0, INF, False), ("beta1", 0, 1, True), ("beta2", 0, 1, True),
           ("load_size", 1, 8192, True))


def validate(config) -> None:
  """The CycleGAN recipes' own fields (the shared ones: config_checks)."""
  check_ranges(config, _RANGES)
  check(config.gan_mode in GAN_MODES, f"--config.gan_mode={config.gan_mode!r}: use one of "
        f"{GAN_MODES}")
  check(config.image_size % 4 == 0 and config.image_size >= 8,
        f"--config.image_size={config.image_size}: training crops must be a multiple of 4 and "
        ">= 8 (the generator halves them twice); translate.py handles any size")
  check(config.load_size >= config.image_size,
        f"--config.load_size={config.load_size} is smaller than --config.image_size="
        f"{config.image_size}: images are resized to load_size, then randomly cropped")
  check(0 <= config.decay_epochs <= config.num_epochs,
        f"--config.decay_epochs={config.decay_epochs} must be in [0, num_epochs="
        f"{config.num_epochs}]")
  for field in ("lambda_a", "lambda_b", "lambda_identity"):
    check(config[field] >= 0, f"--config.{field} must be >= 0, got {config[field]}")
  check(config.pool_size >= 0, f"--config.pool_size must be >= 0, got {config.pool_size}")
  check(config.lr > 0, f"--config.lr must be positive, got {config.lr}")
  check(config.model.n_blocks >= 0 and config.model.ngf >= 1 and config.model.ndf >= 1
        and config.model.n_layers_d >= 1,
        "--config.model: ngf, ndf and n_layers_d must be >= 1, n_blocks >= 0")
  patches = PatchDiscriminator(n_layers=config.model.n_layers_d)
  smallest = next(s for s in range(4, 4096, 4) if patches.grid_size(s) > 0)
  check(patches.grid_size(config.image_size) > 0,
        f"--config.image_size={config.image_size} leaves the PatchGAN discriminator "
        f"(n_layers_d={config.model.n_layers_d}) nothing to score: its 4x4 convolutions need "
        f"crops of at least {smallest} pixels")
  check(len(config.train_splits) == 2, "--config.train_splits names the two domains, e.g. "
        "('trainA', 'trainB')")


class CycleGANTask(Task):
  resume_safe_fields = frozenset({"stack_networks"})
  throughput_unit = "iters"
  units_per_step = 1
  progress_keys = LOSS_NAMES

  validate = staticmethod(validate)

  @staticmethod
  def load_data(config, train: bool):
    """The two training domains, (a, b)."""
    return load_domains(config, config.train_splits) if train else None

  def __init__(self, config, devices, domains, train: bool = True):
    super().__init__(config, devices)
    dtype = compute_dtype(config.dtype)
    m = config.model
    self.generator = ResnetGenerator(m.ngf, m.n_blocks, 3, dtype=dtype)
    self.discriminator = PatchDiscriminator(m.ndf, m.n_layers_d, dtype=dtype)
    self.stack_networks = config.get("stack_networks", False)  # absent from older workdirs
    self.num_epochs = config.num_epochs
    self.steps_per_epoch = 1
    if train:
      a, b = domains
      self.num_a, self.num_b = len(a), len(b)
      self.steps_per_epoch = self.layout.steps_per_epoch(max(self.num_a, self.num_b),
                                                         "images of the larger domain")
      self.grid_a = self._centre(a[:config.num_grid_samples])
      self.grid_b = self._centre(b[:config.num_grid_samples])
      self.images = parallel.replicate({"a": a, "b": b}, self.devices)
      self._pairs = {}
      schedule_steps = self.steps_per_epoch
    else:
      schedule_steps = 1
    self.lr = constant_then_linear(
        config.lr, (config.num_epochs - config.decay_epochs) * schedule_steps,
        config.decay_epochs * schedule_steps)
    make = lambda: optax.adam(self.lr, b1=config.beta1, b2=config.beta2)
    self.g_tx, self.d_tx = make(), make()

  def _centre(self, images: np.ndarray) -> np.ndarray:
    """The centre image_size crop of load_size images (the grids' fixed inputs)."""
    o = (images.shape[1] - self.config.image_size) // 2
    return images[:, o:o + self.config.image_size, o:o + self.config.image_size]

  # ---- state -------------------------------------------------------------
  @functools.cached_property
  def _init_fn(self):  # compiled once per task
    def init(keys):
      x = jnp.zeros((1, self.config.image_size, self.config.image_size, 3))
      g = {name: self.generator.init(k, x)["params"] for name, k in zip(("G_A", "G_B"), keys)}
      d = {name: self.discriminator.init(k, x)["params"]
           for name, k in zip(("D_A", "D_B"), keys[2:])}
      return g, d
    return jax.jit(init)

  def init_state(self, rng):
    size = self.config.image_size
    with parallel.on_host():
      keys = jax.random.split(rng, 5)
      g, d = self._init_fn(keys)
      pool = init_pool(self.config.pool_size, (size, size, 3))
      return CycleGANState(step=jnp.zeros((), jnp.int32), g_params=g, g_opt=self.g_tx.init(g),
                           d_params=d, d_opt=self.d_tx.init(d), pool_fake_a=pool,
                           pool_fake_b=pool, rng=keys[4])

  def describe(self):
    c = self.config
    return (f"CycleGAN {c.image_size}x{c.image_size} (from {c.load_size}) on {c.dataset}: "
            f"{self.num_a} A / {self.num_b} B images, batch {c.batch_size}, {c.dtype}, "
            f"lr {c.lr} constant for {c.num_epochs - c.decay_epochs} epochs then linear to 0 "
            f"over {c.decay_epochs}")

  def checkpoint_meta(self):
    return {"num_a": self.num_a, "num_b": self.num_b}

  # ---- data --------------------------------------------------------------
  def _epoch_pairs(self, epoch: int) -> tuple[np.ndarray, np.ndarray]:
    """The reference's unaligned pairing: A in a shuffled order (wrapping round when A
    is the smaller domain), B drawn at random; a function of (seed, epoch) alone."""
    if epoch not in self._pairs:
      n = self.steps_per_epoch * self.layout.local_batch
      order = epoch_permutation(self.config.seed, epoch, max(self.num_a, self.num_b))[:n]
      rng = np.random.default_rng([self.config.seed, epoch, jax.process_index(), 1])
      self._pairs = {epoch: (order % self.num_a, rng.integers(0, self.num_b, n))}
    return self._pairs[epoch]

  def train_batch(self, step):
    epoch, pos = divmod(step, self.steps_per_epoch)
    a, b = self._epoch_pairs(epoch)
    rows = slice(pos * self.layout.local_batch, (pos + 1) * self.layout.local_batch)
    index = np.stack([a[rows], b[rows]]).astype(np.int32)
    return {"images": self.images, "index": self.layout.per_device(index)}

  def _augment(self, images, index, key):
    """Random image_size crop and flip of stored load_size images, scaled to [-1, 1]."""
    c = self.config
    offsets, flips = augment.draw_device_crop_flip(
        key, self.layout.device_batch, self.layout.num_global, parallel.index(),
        c.load_size - c.image_size, c.flip)
    return from_uint8(augment.crop_flip(images[index], offsets, flips, size=c.image_size))

  # ---- training ----------------------------------------------------------
  def _g(self, params, x):
    return self.generator.apply({"params": params}, x)

  def _d(self, params, x):
    return self.discriminator.apply({"params": params}, x)

  def _both(self, apply, first, second, x_first, x_second):
    """(apply(first, x_first), apply(second, x_second)) for the parameters of two networks of
    one architecture: two calls, or with `stack_networks` one vmapped call on the stacked
    parameters, whose convolutions are grouped (half the kernel launches)."""
    if not self.stack_networks:
      return apply(first, x_first), apply(second, x_second)
    stacked = jax.tree_util.tree_map(lambda p, q: jnp.stack([p, q]), first, second)
    out = jax.vmap(apply)(stacked, jnp.stack([x_first, x_second]))
    return out[0], out[1]

  def generator_losses(self, g_params, d_params, real_a, real_b):
    """(total, (per-term losses, fake_A, fake_B)) of the generators' objective."""
    c = self.config
    n = real_a.shape[0]
    with_idt = c.lambda_identity > 0
    gens, discs = (g_params["G_A"], g_params["G_B"]), (d_params["D_A"], d_params["D_B"])
    # Instance norm is per image, so the identity pass can share a call with the forward one.
    out_a, out_b = self._both(self._g, *gens,
                              jnp.concatenate([real_a, real_b]) if with_idt else real_a,
                              jnp.concatenate([real_b, real_a]) if with_idt else real_b)
    fake_b, fake_a = out_a[:n], out_b[:n]
    rec_b, rec_a = self._both(self._g, *gens, fake_a, fake_b)
    judged_b, judged_a = self._both(self._d, *discs, fake_b, fake_a)
    zero = jnp.zeros((), jnp.float32)
    losses = {
        "G_A": gan_loss(judged_b, True, c.gan_mode),
        "G_B": gan_loss(judged_a, True, c.gan_mode),
        "cycle_A": c.lambda_a * l1(rec_a, real_a),
        "cycle_B": c.lambda_b * l1(rec_b, real_b),
        "idt_A": c.lambda_b * c.lambda_identity * l1(out_a[n:], real_b) if with_idt else zero,
        "idt_B": c.lambda_a * c.lambda_identity * l1(out_b[n:], real_a) if with_idt else zero,
    }
    return sum(losses.values()), (losses, fake_a, fake_b)

  def discriminator_losses(self, d_params, real_a, real_b, fake_a, fake_b):
    """(total, per-term losses): each D is 0.5 * (loss on real + loss on fake)."""
    mode, n = self.config.gan_mode, real_a.shape[0]
    half = lambda scores: 0.5 * (gan_loss(scores[:n], True, mode) +
                                 gan_loss(scores[n:], False, mode))
    # Instance norm is per image, so real and fake can share one call (half the kernels).
    scores_a, scores_b = self._both(self._d, d_params["D_A"], d_params["D_B"],
                                    jnp.concatenate([real_b, fake_b]),
                                    jnp.concatenate([real_a, fake_a]))
    losses = {"D_A": half(scores_a), "D_B": half(scores_b)}
    return losses["D_A"] + losses["D_B"], losses

  def _pooled(self, pool, fakes, key):
    """This device's rows of the pool's answer for the whole global batch."""
    pool, out = query_pool(pool, parallel.gather(jax.lax.stop_gradient(fakes)), key)
    return pool, augment.take_device_rows(out, parallel.index(), fakes.shape[0])

  def train_step(self, state, batch, rng):
    k_a, k_b, k_pool_a, k_pool_b = jax.random.split(rng, 4)
    images, index = batch["images"], batch["index"]
    real_a = self._augment(images["a"], index[0], k_a)
    real_b = self._augment(images["b"], index[1], k_b)

    g_loss = lambda p: self.generator_losses(p, state.d_params, real_a, real_b)
    (_, (g_losses, fake_a, fake_b)), g_grads = jax.value_and_grad(g_loss, has_aux=True)(
        state.g_params)
    pool_fake_a, fake_a = self._pooled(state.pool_fake_a, fake_a, k_pool_a)
    pool_fake_b, fake_b = self._pooled(state.pool_fake_b, fake_b, k_pool_b)
    d_loss = lambda p: self.discriminator_losses(p, real_a, real_b, fake_a, fake_b)
    (_, d_losses), d_grads = jax.value_and_grad(d_loss, has_aux=True)(state.d_params)

    # The biases that instance norm cancels get exactly zero: Adam would turn their rounding
    # noise into updates that change nothing, and XLA can drop their gradient reductions.
    g_grads = _zero_where(self._cancelled(g_grads, self.generator), g_grads)
    d_grads = _zero_where(self._cancelled(d_grads, self.discriminator), d_grads)
    g_grads, d_grads, metrics = parallel.mean((g_grads, d_grads, {**g_losses, **d_losses}))
    g_updates, g_opt = self.g_tx.update(g_grads, state.g_opt, state.g_params)
    d_updates, d_opt = self.d_tx.update(d_grads, state.d_opt, state.d_params)
    metrics["lr"] = self.lr(state.step)
    return state.replace(step=state.step + 1,
                         g_params=optax.apply_updates(state.g_params, g_updates), g_opt=g_opt,
                         d_params=optax.apply_updates(state.d_params, d_updates), d_opt=d_opt,
                         pool_fake_a=pool_fake_a, pool_fake_b=pool_fake_b), metrics

  @staticmethod
  def _cancelled(grads, model):
    return {name: model.cancelled_biases(tree) for name, tree in grads.items()}

  # ---- translation and samples -------------------------------------------
  @staticmethod
  def generator_params(state, name: str):
    """One generator's parameters from an unreplicated or replicated state."""
    params = state.g_params[name]
    if np.ndim(state.step) == 1:
      params = jax.tree_util.tree_map(lambda x: x[0], params)
    return params

  def translate(self, params, images: np.ndarray, batch_size: int = 16) -> np.ndarray:
    """uint8 images (any H, W that are multiples of 4) through one generator, as uint8."""
    return translate_images(self.generator, params, images, batch_size)

  def cycle_grid(self, state, real_a: np.ndarray, real_b: np.ndarray) -> np.ndarray:
    """One row per sample: real_A, fake_B, rec_A | real_B, fake_A, rec_B."""
    g_a, g_b = self.generator_params(state, "G_A"), self.generator_params(state, "G_B")
    fake_b, fake_a = self.translate(g_a, real_a), self.translate(g_b, real_b)
    rec_a, rec_b = self.translate(g_b, fake_b), self.translate(g_a, fake_a)
    n = min(len(real_a), len(real_b))
    rows = np.stack([real_a[:n], fake_b[:n], rec_a[:n], real_b[:n], fake_a[:n], rec_b[:n]], 1)
    return make_grid(rows.reshape(-1, *rows.shape[2:]), ncol=6)

  def periodic_outputs(self, state, step, writer):
    grid = self.cycle_grid(state, self.grid_a, self.grid_b)
    writer.write_image(step, "cycles", grid, f"samples/step_{step:07d}.png")


def _test_domains(config, dataset: str | None) -> tuple:
  """(config used, real A, real B, which images they are, the training domains or None when
  the test images are those) for evaluating a run of `config`, on `dataset` if given."""
  eval_config = config.copy_and_resolve_references()
  if dataset:
    eval_config.dataset = dataset
  eval_config.load_size = config.image_size  # the reference tests at the crop size, unflipped
  eval_config.train_subset = -1  # every test image
  if "," in eval_config.dataset:  # two folders: evaluate.py --dataset=<testA>,<testB> to hold out
    real_a, real_b = load_domains(eval_config, config.train_splits)
    split = ("all images of the two folders given to evaluate" if dataset else
             "all images of the two training folders (no test split)")
    return eval_config, real_a, real_b, split, None
  try:
    real_a, real_b = load_domains(eval_config, config.test_splits)
  except DatasetError:
    if not is_path(eval_config.dataset):
      raise
    real_a, real_b = load_domains(eval_config, config.train_splits)
    return (eval_config, real_a, real_b,
            "/".join(config.train_splits) + " (no test split found)", None)
  try:
    train = load_domains(eval_config, config.train_splits)
  except DatasetError:  # e.g. --dataset names a copy of the test folders alone
    train = None
  return eval_config, real_a, real_b, "/".join(config.test_splits), train


def evaluate_workdir(workdir: str, devices: list, dataset: str | None = None,
                     features: str | None = None, batch_size: int | None = None,
                     cache_dir: str | None = None, **unused) -> tuple[dict, dict]:
  """Translate the test domains both ways with the latest checkpoint.

  Returns (result, files to write): the result (mean L1 of the cycle reconstructions and of
  the identity mappings, in [-1, 1] pixel units; per direction the Frechet
  distance and KID of the translations against the target domain's real test
  images in the feature space `features` (default: pixels), beside the same
  for the untranslated source images and for the target domain's training
  images (the real-vs-real floor), and in a classifier's space the share
  assigned to the target domain (with a domain classifier, also its accuracy
  on the real test images)), `translations.npz` (uint8 fake_B of every test
  A, fake_A of every test B) and `eval.png` (real / fake / reconstruction
  grids). Decoded images are cached in `cache_dir` (`for_reader`).
  """
  from jaxgan.experiment import for_reader
  from jaxgan.features import feature_space
  from jaxgan.gan_metrics import translation_report
  from jaxgan.images import png_writer
  from jaxgan.checkpoint import restore_latest
  config, task, state, step = restore_latest(
      workdir, lambda config, meta: CycleGANTask.build(config, devices, train=False))
  for_reader(config, cache_dir)
  eval_config, real_a, real_b, split, train = _test_domains(config, dataset)
  g_a, g_b = task.generator_params(state, "G_A"), task.generator_params(state, "G_B")
  fake_b, fake_a = task.translate(g_a, real_a), task.translate(g_b, real_b)
  rec_a, rec_b = task.translate(g_b, fake_b), task.translate(g_a, fake_a)
  idt_a, idt_b = task.translate(g_a, real_b), task.translate(g_b, real_a)
  err = lambda x, y: float(np.mean(np.abs(from_uint8(x) - from_uint8(y))))
  space = feature_space(features or "pixels")
  report = lambda *images, target_train: translation_report(
      space, *images, batch_size or 250, devices, target_train)
  metrics = {"feature_space": space.name, "feature_space_description": space.describe,
             "AtoB": report(fake_b, real_b, real_a, "B", target_train=train and train[1]),
             "BtoA": report(fake_a, real_a, real_b, "A", target_train=train and train[0])}
  if space.domains:  # its accuracy on these very test images: the ceiling of the score
    right = (metrics["AtoB"]["target_class_share"]["real_target"] * len(real_b)
             + metrics["BtoA"]["target_class_share"]["real_target"] * len(real_a))
    metrics["classifier_accuracy"] = right / (len(real_a) + len(real_b))
  result = {"step": int(step), "dataset": str(eval_config.dataset), "split": split,
            "num_a": len(real_a), "num_b": len(real_b),
            "cycle_l1_A": err(rec_a, real_a), "cycle_l1_B": err(rec_b, real_b),
            "identity_l1_A": err(idt_a, real_b), "identity_l1_B": err(idt_b, real_a),
            "translations": "translations.npz", "grid": "eval.png", **metrics}
  grid = task.cycle_grid(state, real_a[:8], real_b[:8])
  return result, {
      "translations.npz": lambda f: np.savez_compressed(f, fake_b=fake_b, fake_a=fake_a),
      "eval.png": png_writer(grid)}


def format_report(result: dict) -> list[str]:
  """evaluate.py's report of a CycleGAN evaluation."""
  from jaxgan.gan_metrics import plus_minus
  lines = [f"step {result['step']} on {result['dataset']} ({result['split']}: "
           f"{result['num_a']} A, {result['num_b']} B images)",
           f"cycle L1  A->B->A {result['cycle_l1_A']:.4f}  B->A->B {result['cycle_l1_B']:.4f}",
           f"identity L1  G_A(B) {result['identity_l1_A']:.4f}  "
           f"G_B(A) {result['identity_l1_B']:.4f}",
           f"in feature space {result['feature_space']} "
           f"({result['feature_space_description']}):"]
  for d in ("AtoB", "BtoA"):
    r, target = result[d], d[-1]
    floor = ("real_baseline_frechet_distance" in r and
             f"; real {target} train vs test: {r['real_baseline_frechet_distance']:.4g}")
    floor_kid = "real_baseline_kid" in r and f"; real: {r['real_baseline_kid']:.4g}"
    lines.append(f"  {d}: Frechet distance {r['frechet_distance']:.4g} (untranslated: "
                 f"{r['identity_baseline_frechet_distance']:.4g}{floor or ''}), KID "
                 f"{r['kid']:.4g}{plus_minus(r['kid_std'])} (untranslated: "
                 f"{r['identity_baseline_kid']:.4g}{floor_kid or ''})")
    if "target_class" in r:
      share = r["target_class_share"]
      lines.append(f"    classified as {r['target_class']!r}: translated "
                   f"{share['translated']:.1%}, untranslated {share['untranslated']:.1%}, "
                   f"real target {share['real_target']:.1%}")
  if "classifier_accuracy" in result:
    lines.append(f"  domain classifier accuracy on these real test images: "
                 f"{result['classifier_accuracy']:.1%}")
  lines.append(f"translations in {result['translations']}, grid {result['grid']}")
  return lines


def check_evaluation(saved, **unused) -> None:
  """Nothing to check before a CycleGAN evaluation loads its data."""


TASK = CycleGANTask
