"""Image classification (Darknet, Wide-ResNet) on data held whole on the devices.

The uint8 dataset is copied to every local device once. Each epoch a
permutation of it goes to the devices too, so a train step needs nothing from
the host: it gathers its rows, augments (pad, crop, flip), normalises,
runs forward/backward and updates, all in one compiled program.
"""
import dataclasses
import functools
import math
import os
from typing import Any

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxgan import parallel, schedules
from jaxgan.config_checks import INF, check, check_counts, check_ranges
from jaxgan.data import augment, epoch_permutation, load_classification_data
from jaxgan.errors import ConfigError
from jaxgan.loop import Task
from jaxgan.models import Darknet, FastNet, WideResNet, count_params
from jaxgan.models.layers import compute_dtype

MODELS = {"darknet": Darknet, "wrn": WideResNet, "fastnet": FastNet}


class TrainState(flax.struct.PyTreeNode):
  step: jax.Array
  params: Any
  batch_stats: Any
  opt_state: Any
  rng: jax.Array
  ema: Any = None  # {"params", "batch_stats"} averaged weights when config.ema is on


def build_model(model_config, num_classes: int, dtype=jnp.float32, axis_name=None) -> nn.Module:
  """A model from `config.model`: its `name` picks the class, the rest are fields."""
  kwargs = {k: tuple(v) if isinstance(v, (list, tuple)) else v
            for k, v in model_config.items() if k != "name"}
  name = model_config.get("name", "darknet")
  if name not in MODELS:
    raise ConfigError(f"--config.model.name={name!r} is unknown; use one of {sorted(MODELS)}")
  cls = MODELS[name]
  fields = {f.name for f in dataclasses.fields(cls)}
  unknown = sorted(set(kwargs) - fields)
  if unknown:
    raise ConfigError(f"config.model has fields {unknown} that {cls.__name__} does not take; "
                      f"it takes {sorted(fields - {'parent', 'name'})}")
  return cls(num_classes=num_classes, dtype=dtype, axis_name=axis_name, **kwargs)


def make_schedules(config, total_steps: int):
  """(lr, momentum) functions of the step from `config.schedule`."""
  kind = config.schedule
  if kind == "clr_beta":
    div, pct, m0, m1 = config.clr_beta
    return schedules.clr_beta(total_steps, config.learning_rate, div, pct, (m0, m1))
  if kind == "clr":
    div, cut_div, m0, m1 = config.clr
    return schedules.clr(total_steps, config.learning_rate, div, cut_div, (m0, m1))
  if kind == "constant":
    return schedules.constant(config.learning_rate, config.momentum)
  if kind == "triangle":
    start, pct, end = config.triangle
    return schedules.triangle(total_steps, config.learning_rate, start, pct, end, config.momentum)
  raise ConfigError(f"--config.schedule={kind!r} is unknown; use clr_beta, clr, triangle or "
                    "constant")


def param_groups(params, whitened: bool = True):
  """The optimiser group of each parameter: "frozen" (FastNet's whitening filters, when
  they come from the data), "whiten_bias", "norm_bias" (BatchNorm shifts) or "default"."""
  def label(path, _):
    names = [str(getattr(k, "key", k)) for k in path]
    if names[0] == "whiten":
      if names[-1] == "kernel":
        return "frozen" if whitened else "default"
      return "whiten_bias"
    if names[-1] == "bias" and any(n.startswith("BatchNorm") or "norm" in n for n in names[:-1]):
      return "norm_bias"
    return "default"
  return jax.tree_util.tree_map_with_path(label, params)


def make_optimizer(config, total_steps: int, steps_per_epoch: int
                   ) -> optax.GradientTransformation:
  """SGD whose lr and momentum follow the schedule; L2 decay added to the gradient.

  Like PyTorch's SGD(weight_decay=wd): g + wd*p goes into the momentum buffer.
  BatchNorm shifts get `bias_lr_scale` x the lr and 1/bias_lr_scale x the decay
  (so the decay per step is unchanged, airbench's parametrisation); FastNet's
  whitening bias trains for `whiten_bias_epochs` epochs, its filters never (unless
  `whiten_images` is 0: then they are an ordinary, randomly initialised, trained conv).
  """
  lr_fn, mom_fn = make_schedules(config, total_steps)
  nesterov = config.get("nesterov", False)
  scale = config.get("bias_lr_scale", 1.0)
  bias_steps = config.get("whiten_bias_epochs", 0) * steps_per_epoch

  def sgd(lr, decay):
    # inject_hyperparams lets the momentum follow a schedule too.
    return optax.chain(optax.add_decayed_weights(decay), optax.inject_hyperparams(optax.sgd)(
        learning_rate=lr, momentum=mom_fn, nesterov=nesterov))

  wd = config.weight_decay
  return optax.multi_transform({
      "default": sgd(lr_fn, wd),
      "norm_bias": sgd(lambda i: lr_fn(i) * scale, wd / scale),
      "whiten_bias": sgd(lambda i: lr_fn(i) * (i < bias_steps), wd),
      "frozen": optax.set_to_zero(),
  }, functools.partial(param_groups, whitened=config.get("whiten_images", 0) > 0))


def cross_entropy(logits, labels, num_classes, label_smoothing: float = 0.0):
  targets = jax.nn.one_hot(labels, num_classes)
  if label_smoothing:
    targets = optax.smooth_labels(targets, label_smoothing)
  return optax.softmax_cross_entropy(logits.astype(jnp.float32), targets)


def whitening_sample(n_train: int, k: int) -> np.ndarray:
  """Which training images set FastNet's whitening filters: a fixed random `k` of them.
  (Folders list images class by class, so the first k would be one class; airbench's first
  5,000 come from CIFAR's shuffled order.)"""
  return np.sort(np.random.default_rng(0).permutation(n_train)[:k])


def lookahead(state, params, batch_stats, ema_config, steps_per_epoch: int, total_steps: int):
  """airbench's weight averaging, applied after the update of step `state.step`.

  From epoch `start_epochs`, every `every_n_steps` steps: the first time the
  average starts as a copy of the weights; later the average moves towards
  the weights by 1 - rho, rho = decay_base**every_n_steps * (done / total)**decay_pow,
  and the weights are replaced by it (Lookahead). At each epoch end the weights
  are reset to the average. BatchNorm running statistics are averaged too.
  """
  n = state.step + 1  # steps done after this one
  epoch = state.step // steps_per_epoch
  every = ema_config.every_n_steps
  first_step = ema_config.start_epochs * steps_per_epoch + 1
  first = first_step + (-first_step) % every  # the first multiple of `every` from there
  due = (epoch >= ema_config.start_epochs) & (n % every == 0)
  # (capped at 1: a run cut past its schedule, e.g. a long benchmark, must not extrapolate)
  rho = ema_config.decay_base ** every * jnp.minimum(n / total_steps, 1.0) ** ema_config.decay_pow
  net = {"params": params, "batch_stats": batch_stats}
  mix = lambda e, w: jnp.where(n == first, w, jnp.where(due, e + (1 - rho) * (w - e), e))
  ema = jax.tree_util.tree_map(mix, state.ema, net)
  reset = (n >= first) & (due | (n % steps_per_epoch == 0) | (n == total_steps))
  net = jax.tree_util.tree_map(lambda e, w: jnp.where(reset, e, w), ema, net)
  return net["params"], net["batch_stats"], ema


_RANGES = (
    ("learning_rate", 0, INF, False), ("weight_decay", 0, INF, True), ("momentum", 0, 1, True),
    ("label_smoothing", 0, 1, True), ("bias_lr_scale", 0, INF, False),
    ("whiten_images", 0, INF, True), ("whiten_bias_epochs", 0, INF, True),
    ("model.bn_momentum", 0, 1, True), ("model.bn_eps", 0, INF, False),
    ("model.bottleneck", 0, INF, False), ("model.logit_scale", 0, INF, False),
)
# What a family provides to the shared code (jaxgan.tasks).
EVAL_OUTPUTS = ()
_SCHEDULE_SHAPES = {"clr_beta": (4, "(div, pct, mom_max, mom_min)"),
                    "clr": (4, "(div, cut_div, mom_max, mom_min)"),
                    "triangle": (3, "(start, peak %, end)")}
# Widths must be >= 1; numbers of blocks may be 0.
_COUNTS = {"nf": 1, "stem": 1, "widths": 1, "num_blocks": 0, "blocks_per_group": 0}


def validate(config) -> None:
  """The classifier recipes' own fields (the shared ones: config_checks)."""
  check_ranges(config, _RANGES)
  if "augment" in config:
    check(0 <= config.augment.pad < config.image_size,
          f"--config.augment.pad must be in [0, image_size), got {config.augment.pad}")
    check(config.augment.pad_mode in augment.PAD_MODES,
          f"--config.augment.pad_mode must be one of {augment.PAD_MODES}, got "
          f"{config.augment.pad_mode!r}")
  kind = config.get("schedule")
  if kind in _SCHEDULE_SHAPES:
    length, meaning = _SCHEDULE_SHAPES[kind]
    check(len(config[kind]) == length, f"--config.{kind} is {meaning}")
  check_counts(config, _COUNTS)


class ClassifierTask(Task):
  """Darknet / Wide-ResNet training on a device-resident dataset."""

  validate = staticmethod(validate)

  @staticmethod
  def load_data(config, train: bool):
    return load_classification_data(
        config, [config.train_split, config.eval_split] if train else [config.eval_split])

  def __init__(self, config, devices, data, train: bool = True, stats: dict | None = None):
    super().__init__(config, devices)
    self.class_names = data.class_names
    self.num_classes = data.num_classes
    self.source = data.source
    if stats is None:
      s, s2, n = augment.channel_stats(data.images(config.train_split))
      # Every process adds its share, so all normalise identically.
      s, s2 = parallel.process_allgather_sum(s), parallel.process_allgather_sum(s2)
      n = int(parallel.process_allgather_sum(np.asarray(n)))
      mean, std = augment.mean_std(s, s2, n)
    else:
      mean, std = np.asarray(stats["mean"], np.float32), np.asarray(stats["std"], np.float32)
    self.mean, self.std = mean, std
    self.dtype = compute_dtype(config.dtype)
    self.model = build_model(config.model, self.num_classes, self.dtype, parallel.AXIS)

    self.units_per_step = config.batch_size
    self.num_epochs = math.ceil(config.num_epochs)
    self.steps_per_epoch = 1
    self.whiten_images = None
    if train:
      n_train = len(data.images(config.train_split))
      self.steps_per_epoch = self.layout.steps_per_epoch(n_train, "training images")
      self.train_data = parallel.replicate({"images": data.images(config.train_split),
                                            "labels": data.labels(config.train_split)},
                                           self.devices)
      self.n_train = n_train
      if config.get("whiten_images", 0) > 0:
        self.whiten_images = data.images(config.train_split)[
            whitening_sample(n_train, -(-config.whiten_images // jax.process_count()))]
    self.tx = make_optimizer(config, self.total_steps, self.steps_per_epoch)
    self._set_up_eval(data.images(config.eval_split), data.labels(config.eval_split))
    self._epoch_inputs = (None, None)
    self._p_eval = parallel.pmap_step(self.eval_step, self.devices, donate_state=False)

  @property
  def total_steps(self) -> int:
    return math.ceil(self.steps_per_epoch * self.config.num_epochs)  # num_epochs may be 9.9

  # ---- state -------------------------------------------------------------
  def _fresh_variables(self, rng, whiten_moment):
    """Initial variables; FastNet's whitening filters from the patch moment when given."""
    size = self.config.image_size
    variables = self.model.init(rng, jnp.zeros((1, size, size, 3), jnp.float32), train=False)
    if whiten_moment is not None:
      params = variables["params"]
      kernel = self.model.whitening_from_moment(whiten_moment)
      variables = {**variables, "params": {**params, "whiten": {**params["whiten"],
                                                                "kernel": kernel}}}
    return variables

  def _whiten_moment(self):
    """The whitening sample's patch moment, averaged over processes (each holds its own
    shard) so every host builds the same filters."""
    if self.whiten_images is None or not hasattr(self.model, "patch_moment"):
      return None
    moment = self._moment_fn(self.whiten_images)
    n = len(self.whiten_images)
    total = parallel.process_allgather_sum(np.asarray(moment, np.float64) * n)
    return total / parallel.process_allgather_sum(np.asarray(n, np.float64))

  # Compiled once per task: later seeds (benchmarks.time_to_accuracy) reuse them.
  @functools.cached_property
  def _moment_fn(self):
    return jax.jit(lambda x: self.model.patch_moment(augment.normalize(x, self.mean, self.std)))

  @functools.cached_property
  def _init_fn(self):
    return jax.jit(self._fresh_variables)

  def init_state(self, rng):
    moment = self._whiten_moment()  # on the devices, which hold the images
    with parallel.on_host():
      init_rng, rng = jax.random.split(rng)
      variables = self._init_fn(init_rng, moment)
      params = variables["params"]
      batch_stats = variables.get("batch_stats", {})
      ema = None
      if self.config.get("ema") and self.config.ema.start_epochs >= 0:
        ema = {"params": params, "batch_stats": batch_stats}
      return TrainState(step=jnp.zeros((), jnp.int32), params=params, batch_stats=batch_stats,
                        opt_state=self.tx.init(params), rng=rng, ema=ema)

  def describe(self):
    return (f"{type(self.model).__name__} ({self.config.dtype}) on {self.source}: "
            f"{self.num_classes} classes, batch {self.config.batch_size}, "
            f"channel mean {[round(float(m), 4) for m in self.mean]} "
            f"std {[round(float(s), 4) for s in self.std]}")

  def checkpoint_meta(self):
    return {"data_stats": {"mean": self.mean.tolist(), "std": self.std.tolist()},
            "class_names": list(self.class_names)}

  # ---- training ----------------------------------------------------------
  def epoch_order(self, epoch: int) -> np.ndarray:
    """This process's example order for `epoch`: (steps, local batch) indices."""
    perm = epoch_permutation(self.config.seed, epoch, self.n_train)
    perm = perm[:self.steps_per_epoch * self.layout.local_batch]
    return perm.reshape(self.steps_per_epoch, self.layout.local_batch).astype(np.int32)

  def train_batch(self, step):
    epoch = step // self.steps_per_epoch
    if self._epoch_inputs[0] != (self.config.seed, epoch):  # a new run may reuse the task
      order = self.layout.per_device(self.epoch_order(epoch))  # (devices, steps, batch)
      self._epoch_inputs = ((self.config.seed, epoch), {"data": self.train_data, "order": order})
    return self._epoch_inputs[1]

  def alternating_flips(self, rng, index, step):
    """airbench's flips: training image i is flipped in even epochs iff a coin drawn for it
    once from the run's key `rng` says so, in odd epochs iff not, so every image is seen both
    ways every two epochs."""
    coin = lambda i: jax.random.bernoulli(jax.random.fold_in(rng, i))
    return jax.vmap(coin)(index) ^ ((step // self.steps_per_epoch) % 2 == 1)

  def train_step(self, state, batch, rng):
    config = self.config
    index = batch["order"][state.step % self.steps_per_epoch]
    images = batch["data"]["images"][index]
    labels = batch["data"]["labels"][index]
    aug = config.augment
    alternate = aug.flip and aug.get("alternate_flip", False)
    offsets, flips = augment.draw_device_crop_flip(
        rng, self.layout.device_batch, self.layout.num_global, parallel.index(), 2 * aug.pad,
        aug.flip and not alternate)
    if alternate:
      flips = self.alternating_flips(jax.random.fold_in(state.rng, 0xF11B), index, state.step)
    x = augment.normalize(augment.crop_flip(images, offsets, flips, aug.pad, aug.pad_mode),
                          self.mean, self.std)
    smoothing = config.get("label_smoothing", 0.0)

    def loss_fn(params):
      logits, updates = self.model.apply({"params": params, "batch_stats": state.batch_stats},
                                         x, train=True, mutable=["batch_stats"])
      loss = cross_entropy(logits, labels, self.num_classes, smoothing).mean()
      return loss, (logits, updates["batch_stats"])

    (loss, (logits, batch_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    metrics = {"loss": loss, "accuracy": jnp.mean(jnp.argmax(logits, -1) == labels)}
    # The only cross-device reduction of the step (BatchNorm syncs inside the model).
    grads, metrics = parallel.mean((grads, metrics))
    updates, opt_state = self.tx.update(grads, state.opt_state, state.params)
    lr_fn, mom_fn = make_schedules(config, self.total_steps)
    metrics["lr"] = lr_fn(state.step)
    metrics["momentum"] = mom_fn(state.step)
    params = optax.apply_updates(state.params, updates)
    ema = state.ema
    if ema is not None:
      params, batch_stats, ema = lookahead(state, params, batch_stats, config.ema,
                                           self.steps_per_epoch, self.total_steps)
    return state.replace(step=state.step + 1, params=params, batch_stats=batch_stats,
                         opt_state=opt_state, ema=ema), metrics

  # ---- evaluation --------------------------------------------------------
  def _set_up_eval(self, images, labels):
    n = len(images)
    per_device = max(1, min(self.config.eval_batch_size // self.layout.num_global,
                            -(-n // self.layout.num_local)))
    per_process = per_device * self.layout.num_local
    local_steps = -(-n // per_process)
    steps = parallel.process_max(local_steps)  # every process runs as many pmap calls
    padded = steps * per_process
    index = np.zeros(padded, np.int32)
    index[:n] = np.arange(n)
    mask = np.zeros(padded, np.float32)
    mask[:n] = 1
    eval_layout = parallel.BatchLayout(self.devices, per_process * jax.process_count())
    self.eval_steps = steps
    self.eval_inputs = {
        "data": parallel.replicate({"images": images, "labels": labels}, self.devices),
        "index": eval_layout.per_device(index.reshape(steps, per_process)),
        "mask": eval_layout.per_device(mask.reshape(steps, per_process)),
    }

  def eval_step(self, state, inputs, i):
    """Per-class counts over eval batch `i`, summed over all devices."""
    index, mask = inputs["index"][i], inputs["mask"][i]
    images = inputs["data"]["images"][index]
    labels = inputs["data"]["labels"][index]
    x = augment.normalize(images, self.mean, self.std)
    variables = {"params": state.params, "batch_stats": state.batch_stats}
    apply = lambda v: self.model.apply(variables, v, train=False).astype(jnp.float32)
    logits = apply(x)
    logits_flip = apply(x[:, :, ::-1])
    probs_tta = jax.nn.softmax(logits) + jax.nn.softmax(logits_flip)
    onehot = jax.nn.one_hot(labels, self.num_classes) * mask[:, None]
    correct = lambda scores: (onehot * (jnp.argmax(scores, -1) == labels)[:, None]).sum(0)
    counts = {
        "total": onehot.sum(0),
        "correct": correct(logits),
        "correct_tta": correct(probs_tta),
        "loss": (cross_entropy(logits, labels, self.num_classes) * mask).sum(),
    }
    if self.config.get("tta_translate", False):
      # airbench's level-2 TTA: mirror-averaged logits, half weight on the image and half
      # on its two one-pixel translations (up-left, down-right; reflect padding).
      mirror = lambda v: 0.5 * (apply(v) + apply(v[:, :, ::-1]))
      padded = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)), mode="reflect")
      h, w = x.shape[1:3]
      shifted = [padded[:, :h, :w], padded[:, 2:h + 2, 2:w + 2]]
      scores = 0.5 * (0.5 * (logits + logits_flip)) + 0.25 * sum(mirror(v) for v in shifted)
      counts["correct_translate_tta"] = correct(scores)
    return parallel.sum(counts)

  def eval_counts(self, state) -> dict:
    """Summed per-class counts over the whole eval split (host numpy)."""
    totals = None
    for i in range(self.eval_steps):
      step_i = parallel.replicate(np.int32(i), self.devices)
      counts = self._p_eval(state, self.eval_inputs, step_i)
      totals = counts if totals is None else jax.tree_util.tree_map(jnp.add, totals, counts)
    return jax.tree_util.tree_map(lambda x: np.asarray(x[0], np.float64), jax.device_get(totals))

  def evaluate(self, state):
    return summarize_counts(self.eval_counts(state))


# eval_step's count of correct predictions -> the reported accuracy.
ACCURACIES = {"correct": "accuracy", "correct_tta": "accuracy_flip_tta",
              "correct_translate_tta": "accuracy_translate_tta"}


def summarize_counts(c: dict) -> dict:
  """Loss and accuracies (plain, flip TTA, translate TTA when counted) from summed counts."""
  n = c["total"].sum()
  return {"loss": float(c["loss"] / n),
          **{name: float(c[key].sum() / n) for key, name in ACCURACIES.items() if key in c}}


def evaluate_workdir(workdir: str, devices: list, dataset: str | None = None,
                     batch_size: int | None = None, eval_subset: int = -1,
                     cache_dir: str | None = None, **unused) -> tuple[dict, dict]:
  """Restore the latest checkpoint of a classifier workdir and evaluate it on
  `devices`, on the first `eval_subset` test images (-1: all).

  Returns (result, files to write): test accuracy with and without flip TTA,
  loss, and per-class accuracy; no files beside eval.json. `cache_dir`: where
  decoded images are cached (`for_reader`).
  """
  from jaxgan.errors import WorkdirError
  from jaxgan.experiment import for_reader
  from jaxgan.checkpoint import restore_latest

  def build(config, meta):
    if "data_stats" not in meta:  # every classifier checkpoint has them
      raise WorkdirError(f"the checkpoints in {workdir}/checkpoints hold no input statistics "
                         "(data_stats), which every classifier run saves: they come from "
                         "another kind of run than its config.json describes. Evaluate the "
                         "workdir train.py wrote, or restore its config.json.")
    for_reader(config, cache_dir)
    with config.unlocked():
      if dataset:
        config.dataset = dataset
      if batch_size:
        config.eval_batch_size = batch_size
      # Every test image, not the training run's sample; random "fake" data has no test set,
      # so it keeps the run's count unless one is given.
      if eval_subset != -1 or str(config.dataset) != "fake":
        config.eval_subset = eval_subset
    return ClassifierTask.build(config, devices, train=False, stats=meta["data_stats"])

  config, task, state, step = restore_latest(workdir, build)
  c = task.eval_counts(parallel.replicate(state, devices))
  per_class = {name: float(c["correct"][i] / max(c["total"][i], 1))
               for i, name in enumerate(task.class_names)}
  result = {
      "step": int(step), "dataset": task.source,
      "split": config.eval_split, "num_examples": int(c["total"].sum()),
      **summarize_counts(c), "per_class_accuracy": per_class,
      "num_params": count_params(state.params),
  }
  return result, {}


def format_report(result: dict) -> list[str]:
  """evaluate.py's report of a classifier evaluation."""
  translate = result.get("accuracy_translate_tta")
  lines = [f"step {result['step']} on {result['dataset']} ({result['split']}, "
           f"{result['num_examples']} images)",
           f"accuracy {result['accuracy']:.4f}  with flip TTA {result['accuracy_flip_tta']:.4f}  "
           + (f"with flip + translate TTA {translate:.4f}  " if translate is not None else "")
           + f"loss {result['loss']:.4f}"]
  lines += [f"  {name:>12s} {acc:.4f}" for name, acc in result["per_class_accuracy"].items()]
  if "not_written" not in result:
    lines.append(f"written to {result['eval_json']}")
  return lines


def check_evaluation(saved, **unused) -> None:
  """Nothing to check before a classifier evaluation loads its data."""


TASK = ClassifierTask
