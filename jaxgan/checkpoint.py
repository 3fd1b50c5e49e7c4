"""Orbax checkpoints of a whole training state plus a JSON of metadata.

Orbax writes each step into a temporary directory and renames it when
complete, so a crash mid-save never leaves a half-written step that looks
finished (leftover temporary directories are removed on the next start).
Each save also records per-array checksums in the metadata; a checkpoint
that cannot be read or does not match them is moved aside to
`<workdir>/damaged_checkpoints/` and the previous one is used.

Convolution kernels are stored (out, kh, kw, in) (`layers.Conv`). Checkpoints
written before that held them in flax's (kh, kw, in, out) and say nothing of
their layout in the metadata; they are converted as they are restored.
"""
import errno
import json
import os
import shutil
import sys
import time
import zlib
from typing import Any, Callable

import jax
import numpy as np
import orbax.checkpoint as ocp

from jaxgan import parallel
from jaxgan.errors import ConfigError, WorkdirError
from jaxgan.workdir import load_config

PyTree = Any
KERNEL_LAYOUT = {"conv_kernel_layout": "out,kh,kw,in"}
READER_ATTEMPTS = 4  # a reader beside a live run lists the steps again this often


def _is_conv_kernel(path, x) -> bool:
  return bool(path) and getattr(path[-1], "key", None) == "kernel" and np.ndim(x) == 4


def _in_flax_layout(target: PyTree) -> PyTree:
  """Shapes and dtypes of `target` with each conv kernel (out, kh, kw, in) as (kh, kw, in, out)."""
  def legacy(path, x):
    if not _is_conv_kernel(path, x):
      return x
    return jax.ShapeDtypeStruct(tuple(x.shape[1:]) + tuple(x.shape[:1]), x.dtype,
                                sharding=getattr(x, "sharding", None))
  return jax.tree_util.tree_map_with_path(legacy, target)


def _from_flax_layout(state: PyTree) -> PyTree:
  return jax.tree_util.tree_map_with_path(
      lambda p, x: np.ascontiguousarray(np.transpose(np.asarray(x), (3, 0, 1, 2)))
      if _is_conv_kernel(p, x) else x, state)


def checksums(state: PyTree) -> list:
  """Sorted (crc32, dtype, shape) of every array: independent of how the tree is keyed."""
  out = []
  for x in jax.tree_util.tree_leaves(jax.device_get(state)):
    x = np.ascontiguousarray(x)
    out.append([zlib.crc32(x.view(np.uint8).reshape(-1)) if x.size else 0, str(x.dtype),
                list(x.shape)])
  return sorted(out)


def _listing_steps(list_them: Callable):
  """Orbax lists the step folders, then reads each one's time: a live trainer may delete one
  in between (it keeps only the newest few). Listing again then sees the folders as they are."""
  for attempt in range(READER_ATTEMPTS):
    try:
      return list_them()
    except FileNotFoundError:
      if attempt == READER_ATTEMPTS - 1:
        raise
      time.sleep(0.1 * (attempt + 1))


class DamagedCheckpointError(Exception):
  pass


class VanishedCheckpointError(DamagedCheckpointError):
  """The step was deleted while being read (the trainer keeps only the newest few)."""


_DISK_FULL_REASONS = ("No space left on device", "Disk quota exceeded")


def _short_reason(e: BaseException) -> str:
  """The part of a write error a user needs: Orbax and TensorStore wrap the OS error in
  their own messages (with the whole storage spec)."""
  if isinstance(e, OSError) and e.strerror:
    return e.strerror
  text = str(e)
  for reason in (*_DISK_FULL_REASONS, "Read-only file system", "Permission denied"):
    if reason in text:
      return reason
  return text.split(" [tensorstore_spec")[0].splitlines()[0][:300] if text else type(e).__name__


def _disk_error(e: BaseException) -> bool:
  return isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT, errno.EROFS,
                                                errno.EACCES)


class Checkpointer:
  """Save/restore `(state, meta)` under `<workdir>/checkpoints/<step>`."""

  def __init__(self, workdir: str, max_to_keep: int = 3, read_only: bool = False,
               clean_temporary: bool | None = None):
    # Orbax tidies unfinished saves in a background thread that close() does not wait for;
    # a reader that exits at once (no checkpoint yet) would kill it mid-way with a traceback.
    clean_temporary = not read_only if clean_temporary is None else clean_temporary
    self.workdir = os.path.abspath(workdir)
    self.directory = os.path.join(self.workdir, "checkpoints")
    self.read_only = read_only
    self._pending = None  # the step of a background save not yet seen to finish
    if os.path.lexists(self.directory) and not os.path.isdir(self.directory):
      raise WorkdirError(f"{self.directory} is not a folder, so no checkpoint can be "
                         f"{'read from' if read_only else 'written to'} it. Move that file away "
                         "(or pass another --workdir).")
    options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=not read_only,
                                           enable_async_checkpointing=True, read_only=read_only,
                                           cleanup_tmp_directories=clean_temporary)
    try:
      self.manager = _listing_steps(lambda: ocp.CheckpointManager(
          self.directory, options=options, item_names=("state", "meta")))
    except OSError as e:
      raise WorkdirError(f"cannot create the checkpoint directory {self.directory}: "
                         f"{e.strerror or e}. Pick a --workdir you can write to.") from e

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def all_steps(self) -> list[int]:
    return list(self.manager.all_steps())

  def finished_steps(self) -> list[int]:
    """Steps whose save completed: Orbax renames a step's folder to its number last."""
    try:
      names = os.listdir(self.directory)
    except OSError:
      return []
    return sorted(int(n) for n in names if n.isdigit())

  def describe_kept(self, failed: int | None = None) -> str:
    """What a user can resume from, for error messages."""
    good = [s for s in self.finished_steps() if s != failed]
    return (f"the checkpoint of step {good[-1]} is intact in {self.directory}" if good
            else "no checkpoint had been written yet")

  def save(self, step: int, state: PyTree, meta: dict) -> None:
    """Save host copies of `state` (unreplicated) and a JSON-able `meta` dict.

    A failed write (disk full, quota, permissions) becomes a WorkdirError; the
    checkpoints already on disk are left as they were.
    """
    state = jax.device_get(state)
    meta = {**meta, **KERNEL_LAYOUT, "checksums": checksums(state)}
    # Only process 0's arrays are written: a host whose replica drifted would vanish silently.
    differ = parallel.differing_processes(json.dumps(meta["checksums"]))
    if differ:
      good = self.all_steps()
      raise RuntimeError(
          f"the training state of process(es) {differ} differs from process 0's at step {step}, "
          "so the hosts no longer train one model; nothing was written"
          + (f" (checkpoint {good[-1]} is intact)" if good else "") + ". Start every host with "
          "the same command, code and jaxgan version.")
    if self._pending is not None:  # Orbax would wait for it inside save() and blame this step
      self.wait()
    try:
      self.manager.save(step, args=ocp.args.Composite(
          state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)))
    except Exception as e:
      self._raise_write_error(step, e)
    self._pending = step

  def poll(self) -> None:
    """Without waiting: if the background save has ended but its step never completed, raise
    the WorkdirError that names that step (Orbax only logs the failure)."""
    if self._pending is None or self.manager.is_saving_in_progress():
      return
    step, self._pending = self._pending, None
    if step in self.finished_steps():
      return
    try:
      self.manager.wait_until_finished()
    except Exception as e:
      self._raise_write_error(step, e)
    self._raise_write_error(step, RuntimeError("the save ended without completing"))

  def _raise_write_error(self, step: int, e: BaseException):
    cause = e if _disk_error(e) else (e.__cause__ or e.__context__ or e)
    reason = _short_reason(cause)
    full = reason in _DISK_FULL_REASONS or _disk_error(cause)
    hint = ("Free disk space (or raise the quota) and run the same command again to resume"
            if full else "Check the disk and run the same command again")
    raise WorkdirError(f"could not write the checkpoint of step {step} to {self.directory}: "
                       f"{reason}. Training stopped; {self.describe_kept(failed=step)}. "
                       f"{hint}.") from e

  def _restore(self, step: int, target: PyTree | None) -> tuple[PyTree, dict]:
    abstract = (None if target is None
                else jax.tree_util.tree_map(ocp.utils.to_shape_dtype_struct, target))
    restored = self.manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract), meta=ocp.args.JsonRestore()))
    return restored["state"], dict(restored["meta"])

  def restore(self, target: PyTree | None, step: int | None = None) -> tuple[PyTree, dict]:
    """Restore one step into the structure (and dtypes) of `target`; latest by default.

    With `target=None` the state comes back as nested dicts of numpy arrays.
    Raises DamagedCheckpointError if the step cannot be read or fails its
    checksums, ConfigError if it is readable but does not fit `target`.
    """
    step = self.latest_step() if step is None else step
    if step is None:
      raise FileNotFoundError(f"no checkpoint in {self.directory}")
    try:
      legacy = "conv_kernel_layout" not in self.restore_meta(step)
      stored = target if target is None or not legacy else _in_flax_layout(target)
      state, meta = self._restore(step, stored)
    except Exception as e:
      if not os.path.isdir(os.path.join(self.directory, str(step))):
        raise VanishedCheckpointError(f"step {step} was deleted while it was read") from e
      if target is None:
        raise DamagedCheckpointError(f"step {step} cannot be read: {e}") from e
      try:  # readable as stored? then it is the target (the config) that does not fit
        raw, _ = self._restore(step, None)
      except Exception:
        raise DamagedCheckpointError(f"step {step} cannot be read: {e}") from e
      raise ConfigError(_shape_mismatch(step, raw, target)) from e
    if "checksums" in meta and checksums(state) != meta["checksums"]:
      raise DamagedCheckpointError(f"step {step} does not match the checksums saved with it")
    if legacy:
      state = _from_flax_layout(state)
    # Orbax restores an array into a target of the same size whatever its shape.
    shapes = lambda tree: [np.shape(x) for x in jax.tree_util.tree_leaves(tree)]
    if target is not None and shapes(state) != shapes(target):
      raise ConfigError(_shape_mismatch(step, state, target))
    return state, meta

  def restore_latest_good(self, target: PyTree) -> tuple[PyTree | None, dict, int | None]:
    """(state, meta, step) of the newest checkpoint that reads back intact, or
    (None, {}, None) if there is none. A trainer moves damaged ones aside with a warning; a
    read-only reader (evaluation, possibly beside a live run) only warns and never moves,
    deletes or locks anything. A step deleted while being read is skipped."""
    warned = set()
    for attempt in range(READER_ATTEMPTS if self.read_only else 1):
      if attempt:  # a live run replaced every step listed: list them again
        time.sleep(0.2 * attempt)
        _listing_steps(self.manager.reload)
      for step in sorted(self.all_steps(), reverse=True):
        try:
          state, meta = self.restore(target, step)
          return state, meta, step
        except VanishedCheckpointError:
          continue  # the trainer keeps only the newest few; an older one may still be there
        except DamagedCheckpointError as e:
          if not self.read_only:
            self._set_aside(step, e)
          elif step not in warned:
            warned.add(step)
            print(f"warning: checkpoint {os.path.join(self.directory, str(step))} cannot be "
                  f"read ({e}); the previous one is used instead (expected for the newest "
                  "one if a training run is writing it now).", file=sys.stderr, flush=True)
    return None, {}, None

  def _set_aside(self, step: int, error: Exception) -> None:
    src = os.path.join(self.directory, str(step))
    dest_root = os.path.join(self.workdir, "damaged_checkpoints")
    dest = os.path.join(dest_root, f"{step}-{time.strftime('%Y%m%d-%H%M%S')}")
    message = (f"warning: checkpoint {src} is damaged ({error}); it is moved to {dest} and the "
               "previous checkpoint is used instead.")
    if jax.process_index() == 0:
      os.makedirs(dest_root, exist_ok=True)
      shutil.move(src, dest)
    print(message, file=sys.stderr, flush=True)
    self.manager.reload()

  def newest_readable_meta(self) -> dict:
    """The metadata of the newest checkpoint whose metadata reads ({} if none does):
    what a task needs to be built before `restore_latest_good` checks the arrays."""
    for step in sorted(self.all_steps(), reverse=True):
      try:
        return self.restore_meta(step)
      except Exception:  # damaged: restore_latest_good sets it aside with a warning
        continue
    return {}

  def restore_meta(self, step: int | None = None) -> dict:
    step = self.latest_step() if step is None else step
    return dict(self.manager.restore(step, args=ocp.args.Composite(
        meta=ocp.args.JsonRestore()))["meta"])

  def wait(self) -> None:
    try:
      self.manager.wait_until_finished()
    except Exception as e:
      self._raise_write_error(self._pending or self.latest_step() or 0, e)
    self.poll()

  def close(self) -> None:
    try:
      self.wait()
    finally:
      self.manager.close()


def _shape_mismatch(step: int, raw: PyTree, target: PyTree) -> str:
  def shapes(tree):
    return sorted((tuple(x.shape), str(np.dtype(x.dtype))) for x in jax.tree_util.tree_leaves(tree))

  have, want = shapes(raw), shapes(target)
  missing = [s for s in want if s not in have][:3]
  example = (f"e.g. shapes {missing} are not in the checkpoint" if missing else
             "the same shapes, on other arrays")
  return (f"checkpoint step {step} holds {len(have)} arrays that do not fit the model this config "
          f"builds ({len(want)} arrays; {example}). The "
          "config differs from the one the run was trained with: use a new --workdir, or the "
          "saved values (see config.json in the workdir).")


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
