"""The training loop every model family shares.

A family supplies a `Task` (model, optimiser, data, pure per-device step,
evaluation); this module owns everything around it: devices, the RNG,
resuming, periodic logging / evaluation / checkpointing, progress bars and
failing fast on a non-finite loss.
"""
import fcntl
import json
import logging
import math
import os
import signal
import socket
import sys
import threading
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from jaxgan import parallel
from jaxgan.checkpoint import Checkpointer
from jaxgan.errors import ConfigError, Interrupted, NonFiniteLossError, WorkdirError
from jaxgan.writers import MetricWriter, progress_bar

PyTree = Any
# Metrics reported at their latest value rather than averaged over a log interval.
LATEST_VALUE_METRICS = ("lr", "momentum")
NONFINITE_POLICIES = ("stop", "skip")
MAX_STEPS = 2**31 - 1  # the training state's step counter is an int32
# Fields a resumed run may change: they leave the model, the data and the optimisation
# already done as they were. (num_epochs stretches the remaining schedule, as documented.)
RESUME_SAFE_FIELDS = frozenset({
    "num_epochs", "num_train_steps", "log_every_steps", "eval_every_epochs",
    "checkpoint_every_epochs", "keep_checkpoints", "progress_bar", "sample_every_steps",
    "num_grid_samples", "num_devices", "distributed", "dataset", "tfds_data_dir", "download",
    "cache_dir", "eval_batch_size", "eval_subset", "eval_split", "test_splits",
    "bad_images", "on_nonfinite", "compilation_cache", "xla_flags"})


class Task:
  """What a model family provides to `run`. See `jaxgan.classifier` for one.

  Attributes: `steps_per_epoch`, `num_epochs`; throughput is reported as
  `<throughput_unit>_per_s`, counting `units_per_step` per step; the progress
  bar shows `progress_keys`. The state is a pytree with integer `step` and
  PRNG key `rng` fields. `donate_state`: the step reuses the old state's
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


def prepare_workdir(workdir: str) -> str:
  workdir = os.path.abspath(os.path.expanduser(workdir))
  try:
    os.makedirs(workdir, exist_ok=True)
    probe = os.path.join(workdir, f".write-test-{os.getpid()}")
    with open(probe, "w") as f:
      f.write("ok")
    os.remove(probe)
  except OSError as e:
    raise WorkdirError(f"cannot write to the workdir {workdir}: {e.strerror or e}. "
                       "Pass a --workdir on a writable disk with free space.") from e
  return workdir


class WorkdirLock:
  """One training run per workdir: an exclusive lock on `<workdir>/.lock`.

  The OS releases it when the process ends, however it ends (SIGKILL too),
  so a stale lock never blocks a restart.
  """

  def __init__(self, workdir: str):
    self.workdir = workdir
    self.path = os.path.join(workdir, ".lock")
    self._file = None

  def __enter__(self):
    if jax.process_index() != 0:  # the hosts of one run share the workdir
      return self
    f = open(self.path, "a+")
    try:
      fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
      f.seek(0)
      owner = f.read().strip() or "owner unknown"
      f.close()
      raise WorkdirError(f"another training run is using the workdir {self.workdir} ({owner}). "
                         "Wait for it to finish or stop it, or pass a different --workdir.")
    f.seek(0)
    f.truncate()
    f.write(f"pid {os.getpid()} on {socket.gethostname()}, since "
            f"{time.strftime('%Y-%m-%d %H:%M:%S')}\n")
    f.flush()
    self._file = f
    return self

  def __exit__(self, *exc):
    if self._file is not None:
      self._file.truncate(0)
      fcntl.flock(self._file, fcntl.LOCK_UN)
      self._file.close()
      self._file = None


class StopSignals:
  """SIGTERM / SIGINT become a request to checkpoint and stop after the current step.

  A second signal ends the process at once (exit status 128 + signal), without
  a traceback: raising in the main thread would still wait for the steps
  already queued on the devices, and for threads, before the process exits.
  The checkpoints on disk are complete either way (unfinished saves are
  temporary folders, removed on the next start).
  """
  SIGNALS = (signal.SIGTERM, signal.SIGINT)

  def __init__(self):
    self.received = None
    self._previous = {}

  def __enter__(self):
    if threading.current_thread() is threading.main_thread():
      for sig in self.SIGNALS:
        self._previous[sig] = signal.signal(sig, self._handle)
    return self

  def _handle(self, signum, frame):
    name = signal.Signals(signum).name
    if self.received is not None:
      print(f"\n{name} received again: stopping now, without saving (the last complete "
            "checkpoint is kept; run the same command again to resume from it).",
            file=sys.stderr, flush=True)
      os._exit(128 + signum)
    self.received = signum
    print(f"\n{name} received: saving a checkpoint after the current step, then stopping "
          "(send it again to stop at once, without saving).", file=sys.stderr, flush=True)

  def __exit__(self, *exc):
    for sig, handler in self._previous.items():
      signal.signal(sig, handler)

  def requested(self, step: int, every: int) -> bool:
    """Whether to stop now. Several hosts must agree on the step, so they compare
    notes every `every` steps (one small collective); one host checks every step."""
    if jax.process_count() == 1:
      return self.received is not None
    if step % every:
      return False
    received = parallel.process_max(self.received or 0)
    self.received = self.received or (received or None)
    return received > 0


def _flatten(d: dict, prefix: str = "") -> dict:
  out = {}
  for k, v in d.items():
    if isinstance(v, dict):
      out.update(_flatten(v, f"{prefix}{k}."))
    else:
      out[f"{prefix}{k}"] = v
  return out


def config_differences(saved: dict, new: dict, safe: frozenset = RESUME_SAFE_FIELDS
                       ) -> list[str]:
  """`field: saved -> new` for every field that differs and is not in `safe`.

  Fields only one side has (a newer jaxgan added or dropped them) are not
  differences.
  """
  a, b = _flatten(saved), _flatten(json.loads(json.dumps(new)))
  return [f"{k}: {a[k]!r} (saved) -> {b[k]!r}" for k in sorted(a.keys() & b.keys())
          if a[k] != b[k] and k not in safe]


def check_resumable(config, workdir: str, family_fields: frozenset = frozenset()) -> None:
  """Refuse to resume a workdir with a config that changes the model, data or recipe;
  `family_fields`: the task's own resume-safe fields."""
  path = os.path.join(workdir, "config.json")
  saved = read_saved_config(workdir)
  if saved is None:
    return
  safe = RESUME_SAFE_FIELDS | family_fields
  diffs = config_differences(saved, config.to_dict(), safe)
  if diffs:
    raise ConfigError(
        f"{workdir} holds a run trained with a different config, so it cannot be resumed with "
        "this one: " + "; ".join(diffs) + ". Use a new --workdir, or the saved values (in "
        f"{path}). Fields that may change on resume: {', '.join(sorted(safe))}.")


# Where each host finds its data and keeps its caches may differ; all else must match.
HOST_LOCAL_FIELDS = frozenset({"dataset", "tfds_data_dir", "download", "cache_dir",
                               "compilation_cache"})


def check_same_config_on_all_hosts(config) -> None:
  """Refuse to start a multi-host run whose hosts were given different configs."""
  if jax.process_count() == 1:
    return
  fields = {k: v for k, v in _flatten(json.loads(config.to_json_best_effort())).items()
            if k not in HOST_LOCAL_FIELDS}
  differ = parallel.differing_processes(json.dumps(fields, sort_keys=True))
  if differ:
    raise ConfigError(f"process(es) {differ} were started with a config that differs from "
                      "process 0's: start every host with the same command (only "
                      f"{', '.join(sorted(HOST_LOCAL_FIELDS))} may differ).")


def save_config(config, workdir: str) -> None:
  if jax.process_index() == 0:
    path = os.path.join(workdir, "config.json")
    with open(path + ".tmp", "w") as f:
      f.write(config.to_json_best_effort(indent=2, sort_keys=True))
    os.replace(path + ".tmp", path)


def read_saved_config(workdir: str) -> dict | None:
  """The workdir's config.json as a dict, or None if it has none."""
  path = os.path.join(workdir, "config.json")
  if not os.path.exists(path):
    return None
  try:
    with open(path) as f:
      saved = json.load(f)
  except (OSError, ValueError) as e:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
    raise WorkdirError(f"{path} cannot be read as a config ({e}). It records the run's recipe; "
                       "restore it from a backup, or train in a new --workdir.") from None
  if not isinstance(saved, dict):
    raise WorkdirError(f"{path} holds no config (a JSON {type(saved).__name__}); restore it "
                       "from a backup, or train in a new --workdir.")
  return saved


def load_config(workdir: str):
  """The config a workdir was trained with (written by `run`)."""
  import ml_collections
  saved = read_saved_config(workdir)
  if saved is None:
    raise WorkdirError(f"{workdir} has no config.json: it is not a jaxgan workdir, or training "
                       "never started there. Pass the --workdir that train.py used.")
  return ml_collections.ConfigDict(saved)


def restore_latest(workdir: str, build_task: Callable) -> tuple:
  """For evaluation: (config, task, state, step) of a workdir's latest checkpoint.

  `build_task(config, meta)` makes the task from the saved config and the
  checkpoint's metadata; the state is unreplicated.
  """
  config = load_config(workdir)
  # Read-only: a trainer may be writing this workdir right now (evaluating a live run is
  # natural), so the reader never tidies, moves or deletes its files.
  ckpt = Checkpointer(workdir, read_only=True)
  try:
    if ckpt.latest_step() is None:
      raise WorkdirError(f"no checkpoint under {ckpt.directory}: train first with train.py "
                         f"--workdir {workdir}")
    task = build_task(config, ckpt.newest_readable_meta())
    state, _, step = ckpt.restore_latest_good(task.init_state(jax.random.PRNGKey(0)))
    if state is None:
      raise WorkdirError(f"no checkpoint under {ckpt.directory} can be read (see the warnings "
                         "above); train again, or evaluate a copy of the run.")
  finally:
    ckpt.close()
  # The restore target was built on the host CPU (parallel.on_host); evaluate on a device.
  return config, task, jax.device_put(state, task.devices[0]), step


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
  main = jax.process_index() == 0
  skip = skips_nonfinite(config)
  total = task.total_steps
  if total > MAX_STEPS:
    raise ConfigError(f"the run would take {total:,} steps ({task.steps_per_epoch:,} per epoch "
                      f"x {task.num_epochs} epochs); at most {MAX_STEPS:,} are supported (the "
                      "step counter is a 32-bit integer). Lower --config.num_epochs.")
  stop = total if config.num_train_steps < 0 else min(total, config.num_train_steps)
  ckpt = Checkpointer(workdir, config.keep_checkpoints)
  try:
    writer = MetricWriter(workdir, kept=ckpt.describe_kept)
  except BaseException:
    ckpt.close()
    raise

  try:
    if ckpt.all_steps():
      check_resumable(config, workdir, task.resume_safe_fields)
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
  except BaseException:
    _close_quietly(ckpt, writer)
    raise
  start = int(state.step)
  try:
    save_config(config, workdir)
  except OSError as e:
    _close_quietly(ckpt, writer)
    raise WorkdirError(f"cannot write {workdir}/config.json: {e.strerror or e}. "
                       f"{ckpt.describe_kept().capitalize()}. Free disk space (or fix the "
                       "permissions) and run the same command again.") from e
  if main:
    print(f"{task.describe()}\ntraining steps {start} -> {stop} of {total} "
          f"({task.steps_per_epoch} per epoch) on {len(devices)} x {devices[0].device_kind}"
          f" x {jax.process_count()} process(es); workdir {workdir}", flush=True)

  p_step = task.compile_step(devices)
  throughput = f"{task.throughput_unit}_per_s"
  state = parallel.replicate(state, devices)
  result = {"step": start, "train": {}, "eval": {}}
  step = saved = start
  skipped_total = 0

  def save(step):
    meta = {"step": step, "epoch": step // task.steps_per_epoch, "steps_per_epoch":
            task.steps_per_epoch, "position_in_epoch": step % task.steps_per_epoch,
            **task.checkpoint_meta()}
    ckpt.save(step, parallel.unreplicate(state), meta)
    return step

  signals, stopping, partial = StopSignals(), False, False
  if jax.process_count() == 1:  # several hosts agree on where to stop at step boundaries
    task.stop_requested = lambda: signals.received is not None
  # Without an accelerator the steps queued ahead of Python run one after another on the
  # same cores: a short queue keeps a stop request from waiting behind many of them.
  max_queued = 2 if devices[0].platform == "cpu" else None
  try:
    with signals:
      while step < stop and not stopping:
        epoch, pos = divmod(step, task.steps_per_epoch)
        epoch_end = min((epoch + 1) * task.steps_per_epoch, stop)
        bar = progress_bar(task.steps_per_epoch, f"epoch {epoch + 1}/{task.num_epochs}",
                           initial=pos, enabled=config.get("progress_bar", True))
        history, interval_start, t0 = [], step, time.perf_counter()
        while step < epoch_end:
          state, metrics = p_step(state, task.train_batch(step))
          if metrics is None:  # stopped inside the step; its progress is in checkpoint_meta
            partial = stopping = True
          else:
            history.append(metrics)
            step += 1
            bar.update(1)
            if max_queued and len(history) > max_queued:
              jax.block_until_ready(history[-1 - max_queued])
            if step == start + 1:  # the first step compiles: time it apart from throughput
              jax.block_until_ready(metrics)
              writer.write(step, "train", {"compile_s": time.perf_counter() - t0})
              interval_start, t0 = step, time.perf_counter()
            stopping = signals.requested(step, config.log_every_steps)
          if (is_due(step, config.log_every_steps, epoch_end) or stopping) and history:
            train, bad = _summarize(history, skip)
            if bad is not None:
              _raise_non_finite(bad[1], bad[2], step - len(history) + bad[0] + 1, ckpt)
            if skip:
              skipped_total += int(train["skipped"])
              if train["skipped"] == len(history):
                _raise_non_finite("every update of the last log interval", float("nan"), step,
                                  ckpt, skipping=True)
            if step > interval_start:
              train[throughput] = ((step - interval_start) * task.units_per_step
                                   / (time.perf_counter() - t0))
            writer.write(step, "train", train, epoch=step / task.steps_per_epoch)
            ckpt.poll()  # a background save that failed stops the run now, naming its step
            bar.set_postfix({k: f"{v:.4g}" for k, v in train.items()
                             if k in (*task.progress_keys, throughput, "skipped")})
            result["train"] = train
            history, interval_start, t0 = [], step, time.perf_counter()
          if not partial and is_due(step, config.get("sample_every_steps", 0), stop):
            task.periodic_outputs(state, step, writer)
          if stopping:
            break
        bar.close()
        if stopping:
          break
        epochs_done, into_epoch = divmod(step, task.steps_per_epoch)
        at_epoch_end = into_epoch == 0
        finished = step == stop
        if finished or (at_epoch_end and is_due(epochs_done, config.eval_every_epochs)):
          result["eval"] = task.evaluate(state)
          writer.write(step, "eval", result["eval"], epoch=step / task.steps_per_epoch)
          if main and result["eval"]:
            print(f"step {step} (epoch {step / task.steps_per_epoch:.2f}): "
                  + ", ".join(f"{k} {v:.4f}" for k, v in result["eval"].items()), flush=True)
        if finished or (at_epoch_end and is_due(epochs_done, config.checkpoint_every_epochs)):
          saved = save(step)
      if stopping:
        if step > saved or partial:
          saved = save(step)
        ckpt.wait()
        name = signal.Signals(signals.received).name
        raise Interrupted(f"{name} at step {step}: the checkpoint of step {saved} is in "
                          f"{ckpt.directory}. Run the same command again to resume.",
                          128 + signals.received)
    if start >= stop:
      if main:
        print(f"already trained to step {start} (target {stop}); evaluating only", flush=True)
      result["eval"] = task.evaluate(state)
    if skipped_total and main:
      print(f"{skipped_total} update(s) skipped for non-finite values "
            "(--config.on_nonfinite=skip)", flush=True)
    result["step"] = step
  except BaseException:
    _close_quietly(ckpt, writer)  # the error that stopped the run is the one to report
    raise
  try:
    ckpt.close()
  finally:
    writer.close()
  return result


def _close_quietly(*resources) -> None:
  """Close each, while another error is on its way up: a failure here (the same full disk,
  most likely) is a warning, not a replacement for the message that explains the stop."""
  for resource in resources:
    try:
      resource.close()
    except Exception as e:  # noqa: BLE001 - reported, and the original error follows
      print(f"warning: while stopping: {e}", file=sys.stderr, flush=True)
