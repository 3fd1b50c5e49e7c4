"""The training loop every model family shares.

A family supplies a `Task` (model, optimiser, data, pure per-device step,
evaluation); this module owns everything around it: devices, the RNG,
resuming, periodic logging / evaluation / checkpointing, progress bars and
failing fast on a non-finite loss.
"""
import json
import logging
import math
import os
import time
from typing import Any, Callable, Mapping

import jax
import numpy as np

from jaxgan import parallel
from jaxgan.checkpoint import Checkpointer
from jaxgan.errors import NonFiniteLossError, WorkdirError
from jaxgan.writers import MetricWriter, progress_bar

PyTree = Any
# Metrics reported at their latest value rather than averaged over a log interval.
LATEST_VALUE_METRICS = ("lr", "momentum")


class Task:
  """What a model family provides to `run`. See `jaxgan.classifier` for one.

  Attributes: `steps_per_epoch`, `num_epochs`; throughput is reported as
  `<throughput_unit>_per_s`, counting `units_per_step` per step; the progress
  bar shows `progress_keys`. The state is a pytree with integer `step` and
  PRNG key `rng` fields.
  """
  steps_per_epoch: int
  num_epochs: int
  throughput_unit: str = "images"
  units_per_step: int = 1
  progress_keys: tuple = ("loss", "accuracy")

  def init_state(self, rng: jax.Array) -> PyTree:
    """A fresh host (unreplicated) training state."""
    raise NotImplementedError

  def train_step(self, state: PyTree, batch: PyTree, rng: jax.Array) -> tuple[PyTree, dict]:
    """Pure per-device step under pmap: (state, batch, rng) -> (state, metrics)."""
    raise NotImplementedError

  def compile_step(self, devices) -> Callable:
    """`step(state, batch) -> (state, metrics)` on replicated state, data parallel.

    By default `train_step` under pmap with the RNG folded with the step.
    """
    def step_fn(state, batch):
      return self.train_step(state, batch, jax.random.fold_in(state.rng, state.step))

    return parallel.pmap_step(step_fn, devices)

  def train_batch(self, step: int) -> PyTree:
    """The device inputs of global step `step` (sharded over the local devices)."""
    raise NotImplementedError

  def evaluate(self, state: PyTree) -> dict:
    """Evaluation metrics of a replicated state."""
    return {}

  def periodic_outputs(self, state: PyTree, step: int, writer: MetricWriter) -> None:
    """Work done every `config.sample_every_steps` steps (e.g. sample grids)."""

  def checkpoint_meta(self) -> dict:
    """JSON-able facts saved with each checkpoint (e.g. data statistics)."""
    return {}

  def describe(self) -> str:
    return type(self).__name__


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


def save_config(config, workdir: str) -> None:
  if jax.process_index() == 0:
    path = os.path.join(workdir, "config.json")
    with open(path + ".tmp", "w") as f:
      f.write(config.to_json_best_effort(indent=2, sort_keys=True))
    os.replace(path + ".tmp", path)


def load_config(workdir: str):
  """The config a workdir was trained with (written by `run`)."""
  import ml_collections
  path = os.path.join(workdir, "config.json")
  if not os.path.exists(path):
    raise WorkdirError(f"{workdir} has no config.json: it is not a jaxgan workdir, or training "
                       "never started there. Pass the --workdir that train.py used.")
  with open(path) as f:
    return ml_collections.ConfigDict(json.load(f))


def restore_latest(workdir: str, build_task: Callable) -> tuple:
  """For evaluation: (config, task, state, step) of a workdir's latest checkpoint.

  `build_task(config, meta)` makes the task from the saved config and the
  checkpoint's metadata; the state is unreplicated.
  """
  config = load_config(workdir)
  ckpt = Checkpointer(workdir)
  try:
    step = ckpt.latest_step()
    if step is None:
      raise WorkdirError(f"no checkpoint under {ckpt.directory}: train first with train.py "
                         f"--workdir {workdir}")
    task = build_task(config, ckpt.restore_meta(step))
    state, _ = ckpt.restore(task.init_state(jax.random.PRNGKey(0)), step)
  finally:
    ckpt.close()
  return config, task, state, step


def _mean_metrics(history: list) -> dict:
  """Average a list of per-step replicated metric dicts (one device fetch)."""
  history = jax.device_get(history)
  keys = history[-1].keys()
  out = {}
  for k in keys:
    values = np.asarray([np.asarray(h[k])[0] for h in history], np.float64)
    out[k] = float(values[-1] if k in LATEST_VALUE_METRICS else values.mean())
  return out


def _check_finite(metrics: Mapping[str, float], first_step: int, last_step: int,
                  ckpt: Checkpointer) -> None:
  for name, value in metrics.items():  # any non-finite metric means the numbers are gone
    if not math.isfinite(value):
      good = ckpt.latest_step()
      where = (f"the last good checkpoint (step {good}) is kept in {ckpt.directory}"
               if good is not None else "no checkpoint had been written yet")
      raise NonFiniteLossError(
          f"{name} became {value} between steps {first_step} and {last_step}; training "
          f"stopped and {where}. Lower --config.learning_rate, or use --config.dtype=float32 "
          "if the run was in bfloat16.")


def run(task: Task, config, workdir: str, devices) -> dict:
  """Train `task` to `config.num_epochs` (capped by `config.num_train_steps`).

  Resumes from the latest checkpoint in `workdir`. Returns the last train and
  eval metrics: {"step": int, "train": {...}, "eval": {...}}.
  """
  main = jax.process_index() == 0
  ckpt = Checkpointer(workdir, config.keep_checkpoints)
  writer = MetricWriter(workdir)
  total = task.steps_per_epoch * task.num_epochs
  stop = total if config.num_train_steps < 0 else min(total, config.num_train_steps)

  state = task.init_state(jax.random.PRNGKey(config.seed))
  start = ckpt.latest_step()
  if start is not None:
    state, meta = ckpt.restore(state, start)
    logging.info("resumed from %s at step %d (epoch %d)", ckpt.directory, start,
                 start // task.steps_per_epoch)
  start = int(state.step)
  save_config(config, workdir)
  if main:
    print(f"{task.describe()}\ntraining steps {start} -> {stop} of {total} "
          f"({task.steps_per_epoch} per epoch) on {len(devices)} x {devices[0].device_kind}"
          f" x {jax.process_count()} process(es); workdir {workdir}", flush=True)

  p_step = task.compile_step(devices)
  throughput = f"{task.throughput_unit}_per_s"
  state = parallel.replicate(state, devices)
  result = {"step": start, "train": {}, "eval": {}}
  step = start
  try:
    while step < stop:
      epoch, pos = divmod(step, task.steps_per_epoch)
      epoch_end = min((epoch + 1) * task.steps_per_epoch, stop)
      bar = progress_bar(task.steps_per_epoch, f"epoch {epoch + 1}/{task.num_epochs}",
                         initial=pos, enabled=config.get("progress_bar", True))
      history, interval_start, t0 = [], step, time.perf_counter()
      while step < epoch_end:
        state, metrics = p_step(state, task.train_batch(step))
        history.append(metrics)
        step += 1
        bar.update(1)
        if step == start + 1:  # the first step compiles: time it apart from throughput
          jax.block_until_ready(metrics)
          writer.write(step, "train", {"compile_s": time.perf_counter() - t0})
          interval_start, t0 = step, time.perf_counter()
        if is_due(step, config.log_every_steps, epoch_end):
          train = _mean_metrics(history)
          if step > interval_start:
            train[throughput] = ((step - interval_start) * task.units_per_step
                                 / (time.perf_counter() - t0))
          _check_finite(train, step - len(history), step, ckpt)
          writer.write(step, "train", train, epoch=step / task.steps_per_epoch)
          bar.set_postfix({k: f"{v:.4g}" for k, v in train.items()
                           if k in (*task.progress_keys, throughput)})
          result["train"] = train
          history, interval_start, t0 = [], step, time.perf_counter()
        if is_due(step, config.get("sample_every_steps", 0), stop):
          task.periodic_outputs(state, step, writer)
      bar.close()
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
        meta = {"step": step, "epoch": step // task.steps_per_epoch,
                "position_in_epoch": step % task.steps_per_epoch, **task.checkpoint_meta()}
        ckpt.save(step, parallel.unreplicate(state), meta)
    if start >= stop:
      if main:
        print(f"already trained to step {start} (target {stop}); evaluating only", flush=True)
      result["eval"] = task.evaluate(state)
    result["step"] = step
  finally:
    ckpt.close()
    writer.close()
  return result
