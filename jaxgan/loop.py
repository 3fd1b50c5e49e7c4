"""The training loop every model family shares.

A family supplies a `Task` (model, optimiser, data, pure per-device step,
evaluation); this module owns everything around it: devices, the RNG,
resuming, periodic logging / evaluation / checkpointing, progress bars and
failing fast on a non-finite loss.
"""
import logging
import math
import signal
import sys
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from jaxgan import parallel
from jaxgan.checkpoint import Checkpointer
from jaxgan.errors import ConfigError, Interrupted, NonFiniteLossError, WorkdirError
from jaxgan.signals import StopSignals
from jaxgan.workdir import check_resumable, library_versions, save_config
from jaxgan.writers import MetricWriter, TrainingProgress, compact, duration

PyTree = Any
# Metrics reported at their latest value rather than averaged over a log interval.
LATEST_VALUE_METRICS = ("lr", "momentum")
NONFINITE_POLICIES = ("stop", "skip")
MAX_STEPS = 2**31 - 1  # the training state's step counter is an int32
# How the console names a task's throughput unit, where its metric name is not what users count.
DISPLAY_UNITS = {"gen_iters": "iters"}


class Task:
  """What a model family provides to `run`. See `jaxgan.classifier` for one.

  Attributes: `steps_per_epoch`, `num_epochs`; throughput is reported as
  `<throughput_unit>_per_s`, counting `units_per_step` per step; the progress
  bar shows `progress_keys` and `progress_note`. The state is a pytree with
  integer `step` and PRNG key `rng` fields. `donate_state`: the step reuses the old state's
  device memory for the new one. That also keeps the state at the same device
  addresses from step to step, so XLA need not patch the CUDA graphs that read
  it before each launch; with conv kernels stored as cuDNN computes their
  gradients (`layers.Conv`) it costs almost no copies.
  """
  steps_per_epoch: int
  num_epochs: int
  throughput_unit: str = "images"
  units_per_step: int = 1
  progress_keys: tuple = ("loss", "accuracy")
  donate_state: bool = True
  resume_safe_fields: frozenset = frozenset()  # beside RESUME_SAFE_FIELDS

  def __init__(self, config, devices):
    self.config = config
    self.layout = parallel.BatchLayout(devices, config.batch_size)
    self.devices = self.layout.devices

  @staticmethod
  def validate(config) -> None:
    """Reject a config this task cannot run (the family's own fields), before any data."""

  @staticmethod
  def load_data(config, train: bool):
    """The images the task needs (host numpy), read before the task is built: with `train`
    the training data as well as what evaluation needs."""
    raise NotImplementedError

  @classmethod
  def build(cls, config, devices, train: bool = True, **kwargs) -> "Task":
    """The task for `config` on `devices`: validated, then given its data already loaded."""
    cls.validate(config)
    return cls(config, devices, cls.load_data(config, train), train=train, **kwargs)

  @property
  def total_steps(self) -> int:
    """Steps of the whole run (a task with fractional epochs overrides it)."""
    return self.steps_per_epoch * self.num_epochs

  def init_state(self, rng: jax.Array) -> PyTree:
    """A fresh host (unreplicated) training state."""
    raise NotImplementedError

  def train_step(self, state: PyTree, batch: PyTree, rng: jax.Array) -> tuple[PyTree, dict]:
    """Pure per-device step under pmap: (state, batch, rng) -> (state, metrics)."""
    raise NotImplementedError

  def step_function(self) -> Callable:
    """The per-device program of a step, `(state, batch) -> (state, metrics)`:
    `train_step` with the RNG folded with the step, guarded by `skip_nonfinite`
    when `config.on_nonfinite == "skip"`."""
    skip = skips_nonfinite(self.config)

    def step_fn(state, batch):
      new, metrics = self.train_step(state, batch, jax.random.fold_in(state.rng, state.step))
      return skip_nonfinite(state, new, metrics) if skip else (new, metrics)

    return step_fn

  def compile_step(self, devices) -> Callable:
    """`step(state, batch) -> (state, metrics)` on replicated state, data parallel:
    by default `step_function()` under pmap."""
    return parallel.pmap_step(self.step_function(), devices, donate_state=self.donate_state)

  def train_batch(self, step: int) -> PyTree:
    """The device inputs of global step `step` (sharded over the local devices)."""
    raise NotImplementedError

  def evaluate(self, state: PyTree) -> dict:
    """Evaluation metrics of a replicated state."""
    return {}

  def periodic_outputs(self, state: PyTree, step: int, writer: MetricWriter) -> None:
    """Work done every `config.sample_every_steps` steps (e.g. sample grids)."""

  def stop_requested(self) -> bool:
    """Whether a stop was asked for: `run` points it at its signal handler. A task whose step
    is long (a WGAN's 100 critic updates) may check it inside the step and return
    `(state, None)` with its progress in `checkpoint_meta()`; it resumes from
    `resume_within_step(meta)`."""
    return False

  def resume_within_step(self, meta: dict) -> None:
    """Given the metadata of the checkpoint a run resumes from (see `stop_requested`)."""

  def checkpoint_meta(self) -> dict:
    """JSON-able facts saved with each checkpoint (e.g. data statistics)."""
    return {}

  def progress_note(self, step: int) -> str:
    """Shown beside the epoch while step `step` (0-based) runs, when it is unusually slow
    (e.g. "critic warm-up 3/25"); empty otherwise."""
    return ""

  def describe(self) -> str:
    return type(self).__name__


def skips_nonfinite(config) -> bool:
  policy = config.get("on_nonfinite", "stop")
  if policy not in NONFINITE_POLICIES:
    raise ConfigError(f"--config.on_nonfinite={policy!r}: use 'stop' (end the run at the first "
                      "non-finite loss) or 'skip' (drop that update and count it)")
  return policy == "skip"


def skip_nonfinite(old: PyTree, new: PyTree, metrics: dict) -> tuple[PyTree, dict]:
  """Inside a step: keep `old` (but advance the step) if any metric or any float in `new`
  is not finite; adds the metric `skipped` (1 or 0). Metrics are already device-averaged,
  so every device decides the same."""
  checks = [jnp.all(jnp.isfinite(x)) for x in jax.tree_util.tree_leaves((metrics, new))
            if jnp.issubdtype(x.dtype, jnp.floating)]
  ok = jnp.all(jnp.stack(checks))
  kept = jax.tree_util.tree_map(lambda o, n: jnp.where(ok, n, o), old, new)
  return kept.replace(step=new.step), {**metrics, "skipped": 1.0 - ok.astype(jnp.float32)}


def is_due(count: int, every: int, last: int | None = None) -> bool:
  """Whether periodic work runs once `count` units (steps, epochs) are done.

  True every `every` units (never if `every` <= 0) and at `last`.
  """
  return count > 0 and ((every > 0 and count % every == 0) or count == last)


def _summarize(history: list, skip: bool) -> tuple[dict, tuple | None]:
  """Average per-step replicated metric dicts (one device fetch).

  Returns (means, first non-finite (step offset, name, value) or None). With
  `skip`, skipped steps are left out of the means and `skipped` is a count.
  """
  history = jax.device_get(history)
  rows = [{k: float(np.asarray(v)[0]) for k, v in h.items()} for h in history]
  first_bad = None
  if not skip:
    first_bad = next(((i, k, v) for i, r in enumerate(rows) for k, v in r.items()
                      if not math.isfinite(v)), None)
  out = {}
  for k in rows[-1]:
    values = np.asarray([r[k] for r in rows], np.float64)
    if k == "skipped":
      out[k] = float(values.sum())
    elif k in LATEST_VALUE_METRICS:
      out[k] = float(values[-1])
    else:
      kept = values[np.isfinite(values)] if skip else values
      out[k] = float(kept.mean()) if len(kept) else float("nan")
  return out, first_bad


def _raise_non_finite(name: str, value: float, step: int, ckpt: Checkpointer,
                      skipping: bool = False) -> None:
  good = ckpt.latest_step()
  where = (f"the last good checkpoint (step {good}) is kept in {ckpt.directory}"
           if good is not None else "no checkpoint had been written yet")
  fix = ("Lower the learning rate or use --config.dtype=float32 if the run was in bfloat16."
         if skipping else  # skipping is already on: no use suggesting it
         "Lower the learning rate, use --config.dtype=float32 if the run was in bfloat16, or "
         "set --config.on_nonfinite=skip to drop such updates and go on.")
  raise NonFiniteLossError(f"{name} became {value} at step {step}; training stopped and "
                           f"{where}. {fix}")


def run(task: Task, config, workdir: str, devices) -> dict:
  """Train `task` to `config.num_epochs` (capped by `config.num_train_steps`).

  Resumes from the latest intact checkpoint in `workdir` (refusing a config
  that changes the run). SIGTERM / SIGINT save a checkpoint and raise
  `Interrupted`. Returns the last train and eval metrics:
  {"step": int, "train": {...}, "eval": {...}}.
  """
  if task.total_steps > MAX_STEPS:
    raise ConfigError(f"the run would take {task.total_steps:,} steps ({task.steps_per_epoch:,} "
                      f"per epoch x {task.num_epochs} epochs); at most {MAX_STEPS:,} are "
                      "supported (the step counter is a 32-bit integer). Lower "
                      "--config.num_epochs.")
  ckpt = Checkpointer(workdir, config.keep_checkpoints)
  try:
    writer = MetricWriter(workdir, kept=ckpt.describe_kept)
  except BaseException:
    ckpt.close()
    raise
  try:
    result = _Training(task, config, workdir, devices, ckpt, writer).run()
  except BaseException:
    _close_quietly(ckpt, writer)  # the error that stopped the run is the one to report
    raise
  try:
    ckpt.close()
  finally:
    writer.close()
  return result


class _Training:
  """One call of `run`: where the run stands (step, last save, metrics of the current log
  interval) and the periodic work around the steps."""

  def __init__(self, task, config, workdir, devices, ckpt, writer):
    self.task, self.config, self.workdir, self.devices = task, config, workdir, devices
    self.ckpt, self.writer = ckpt, writer
    self.main = jax.process_index() == 0
    self.skip = skips_nonfinite(config)
    total = task.total_steps
    self.stop = total if config.num_train_steps < 0 else min(total, config.num_train_steps)
    self.throughput = f"{task.throughput_unit}_per_s"
    self.result = {"step": 0, "train": {}, "eval": {}}
    self.skipped_total = 0
    self.signals = StopSignals()
    self.stopping = self.partial = False
    # Without an accelerator the steps queued ahead of Python run one after another on the
    # same cores: a short queue keeps a stop request from waiting behind many of them.
    self.max_queued = 2 if devices[0].platform == "cpu" else None
    self.compiled_at = self.t_compiled = None  # the step after which throughput is measured
    self.unit = DISPLAY_UNITS.get(task.throughput_unit, task.throughput_unit)
    self.progress = TrainingProgress(self.stop, task.steps_per_epoch, self.unit,
                                     task.units_per_step, config.get("progress_bar", True),
                                     self.main)

  def restore(self) -> None:
    """The state to start from: the newest intact checkpoint, else a fresh one."""
    task, config, ckpt = self.task, self.config, self.ckpt
    if ckpt.all_steps():
      check_resumable(config, self.workdir, task.resume_safe_fields)
    fresh = task.init_state(jax.random.PRNGKey(config.seed))
    state, meta, start = ckpt.restore_latest_good(fresh)
    if start is None:
      state = fresh
    else:
      if meta.get("steps_per_epoch", task.steps_per_epoch) != task.steps_per_epoch:
        raise ConfigError(
            f"the checkpoint in {ckpt.directory} was trained with {meta['steps_per_epoch']} steps "
            f"per epoch and this run has {task.steps_per_epoch}: the dataset (or its subset) "
            "changed size, so the data order cannot continue. Use the original data, or a new "
            "--workdir.")
      logging.info("resumed from %s at step %d (epoch %d)", ckpt.directory, start,
                   start // task.steps_per_epoch)
      task.resume_within_step(meta)
    self.start = self.step = self.saved = self.result["step"] = int(state.step)
    self.state = state

  def announce(self) -> None:
    try:
      save_config(self.config, self.workdir)
    except OSError as e:
      where = e.filename or f"{self.workdir}/config.json"
      raise WorkdirError(f"cannot write {where}: {e.strerror or e}. "
                         f"{self.ckpt.describe_kept().capitalize()}. Free disk space (or fix "
                         "the permissions) and run the same command again.") from e
    if self.main:
      task, d = self.task, self.devices
      print(f"{task.describe()}\ntraining steps {self.start} -> {self.stop} of "
            f"{task.total_steps} ({task.steps_per_epoch} per epoch) on {len(d)} x "
            f"{d[0].device_kind} x {jax.process_count()} process(es); workdir {self.workdir}",
            flush=True)
    # TensorBoard's text tab: what trained from this step on (a resumed run adds its own).
    config_json = self.config.to_json_best_effort(indent=2, sort_keys=True)
    self.writer.write_text(self.start, "run/config", f"```\n{config_json}\n```")
    table = "".join(f"| {k} | {v} |\n" for k, v in library_versions().items())
    self.writer.write_text(self.start, "run/versions", "| library | version |\n|---|---|\n" + table)

  def save(self) -> None:
    task, step = self.task, self.step
    meta = {"step": step, "epoch": step // task.steps_per_epoch, "steps_per_epoch":
            task.steps_per_epoch, "position_in_epoch": step % task.steps_per_epoch,
            **task.checkpoint_meta()}
    self.ckpt.save(step, parallel.unreplicate(self.state), meta)
    self.saved = step

  def run(self) -> dict:
    self.restore()
    self.announce()
    p_step = self.task.compile_step(self.devices)
    self.state = parallel.replicate(self.state, self.devices)
    if jax.process_count() == 1:  # several hosts agree on where to stop at step boundaries
      self.task.stop_requested = lambda: self.signals.received is not None
    self.t_start = time.perf_counter()
    if self.start < self.stop:
      self.progress.write("compiling the train step ...")
    with self.signals, parallel.CompileTime() as self.compiling:  # read after the first step
      while self.step < self.stop and not self.stopping:
        self.epoch(p_step)
        if not self.stopping:
          self.epoch_end()
      if self.stopping:
        self.stopped()
    if self.start >= self.stop:
      if self.main:
        print(f"already trained to step {self.start} (target {self.stop}); evaluating only",
              flush=True)
      self.result["eval"] = self.task.evaluate(self.state)
    if self.skipped_total and self.main:
      print(f"{self.skipped_total} update(s) skipped for non-finite values "
            "(--config.on_nonfinite=skip)", flush=True)
    self.result["step"] = self.step
    if self.main and not self.result["eval"]:  # train.py prints a final evaluation itself
      print(self.summary(), flush=True)
    return self.result

  def summary(self) -> str:
    """The final line of a run without evaluation metrics (a GAN's)."""
    text = f"done: step {self.step} of {self.stop}"
    if self.start >= self.stop:
      return text + ", nothing left to train"
    text += f", {duration(time.perf_counter() - self.t_start)}"
    timed = self.step - (self.compiled_at or self.step)  # the compiling first step left out
    if timed > 0:
      rate = timed * self.task.units_per_step / (time.perf_counter() - self.t_compiled)
      text += f", {compact(rate)} {self.unit}/s"
    shown = self.shown(self.result["train"])
    if shown:
      text += "; last " + " ".join(f"{k} {compact(v)}" for k, v in shown.items())
    return text

  def epoch(self, p_step) -> None:
    """Steps to the end of the current epoch (or the stop), logging as due."""
    task, config = self.task, self.config
    epoch, pos = divmod(self.step, task.steps_per_epoch)
    epoch_end = min((epoch + 1) * task.steps_per_epoch, self.stop)
    self.progress.start_epoch(self.step, task.progress_note(self.step))
    self.history, self.interval_start, self.t0 = [], self.step, time.perf_counter()
    while self.step < epoch_end:
      self.state, metrics = p_step(self.state, task.train_batch(self.step))
      if metrics is None:  # stopped inside the step; its progress is in checkpoint_meta
        self.partial = self.stopping = True
      else:
        self.stepped(metrics)
      if (is_due(self.step, config.log_every_steps, epoch_end) or self.stopping) and self.history:
        self.log_interval()
      if not self.partial and is_due(self.step, config.get("sample_every_steps", 0), self.stop):
        task.periodic_outputs(self.state, self.step, self.writer)
      if self.stopping:
        break
    self.progress.end_epoch()

  def stepped(self, metrics) -> None:
    self.history.append(metrics)
    self.step += 1
    if self.max_queued and len(self.history) > self.max_queued:
      jax.block_until_ready(self.history[-1 - self.max_queued])
    if self.step == self.start + 1:  # the first step compiles: time it apart from throughput
      jax.block_until_ready(metrics)
      self.first_step_done()
    self.progress.advance(self.step, self.task.progress_note(self.step))
    self.stopping = self.signals.requested(self.step, self.config.log_every_steps)

  def shown(self, train: dict) -> dict:
    """The metrics the console shows, in the task's order."""
    return {k: train[k] for k in (*self.task.progress_keys, "skipped") if k in train}

  def first_step_done(self) -> None:
    first, compiling = time.perf_counter() - self.t0, self.compiling.seconds
    self.writer.write(self.step, "train", {"compile_s": first})
    self.progress.write(f"compiled in {compiling:.1f} s (the first step took {first:.1f} s "
                        "in all)")
    self.interval_start, self.t0 = self.step, time.perf_counter()
    self.compiled_at, self.t_compiled = self.step, self.t0
    self.progress.compiled(self.step)

  def log_interval(self) -> None:
    """Average the interval's metrics (one device fetch), fail on a non-finite one, log."""
    step, history, task = self.step, self.history, self.task
    train, bad = _summarize(history, self.skip)
    if bad is not None:
      _raise_non_finite(bad[1], bad[2], step - len(history) + bad[0] + 1, self.ckpt)
    if self.skip:
      self.skipped_total += int(train["skipped"])
      if train["skipped"] == len(history):
        _raise_non_finite("every update of the last log interval", float("nan"), step,
                          self.ckpt, skipping=True)
    if step > self.interval_start:
      train[self.throughput] = ((step - self.interval_start) * task.units_per_step
                                / (time.perf_counter() - self.t0))
    self.writer.write(step, "train", train, epoch=step / task.steps_per_epoch)
    self.ckpt.poll()  # a background save that failed stops the run now, naming its step
    self.progress.metrics(self.shown(train), train.get(self.throughput))
    self.result["train"] = train
    self.history, self.interval_start, self.t0 = [], step, time.perf_counter()

  def epoch_end(self) -> None:
    """Evaluation and checkpoint, when due at the end of an epoch, and at the end."""
    task, config, step = self.task, self.config, self.step
    epochs_done, into_epoch = divmod(step, task.steps_per_epoch)
    at_epoch_end = into_epoch == 0
    finished = step == self.stop
    if finished or (at_epoch_end and is_due(epochs_done, config.eval_every_epochs)):
      self.result["eval"] = task.evaluate(self.state)
      self.writer.write(step, "eval", self.result["eval"], epoch=step / task.steps_per_epoch)
      if self.main and self.result["eval"]:
        print(f"step {step} (epoch {step / task.steps_per_epoch:.2f}): "
              + ", ".join(f"{k} {v:.4f}" for k, v in self.result["eval"].items()), flush=True)
    if finished or (at_epoch_end and is_due(epochs_done, config.checkpoint_every_epochs)):
      self.save()

  def stopped(self) -> None:
    """After a stop request: save where the run stands, and raise Interrupted."""
    if self.step > self.saved or self.partial:
      self.save()
    self.ckpt.wait()
    received = self.signals.received
    raise Interrupted(f"{signal.Signals(received).name} at step {self.step}: the checkpoint of "
                      f"step {self.saved} is in {self.ckpt.directory}. Run the same command "
                      "again to resume.", 128 + received)


def _close_quietly(*resources) -> None:
  """Close each, while another error is on its way up: a failure here (the same full disk,
  most likely) is a warning, not a replacement for the message that explains the stop."""
  for resource in resources:
    try:
      resource.close()
    except Exception as e:  # noqa: BLE001 - reported, and the original error follows
      print(f"warning: while stopping: {e}", file=sys.stderr, flush=True)
