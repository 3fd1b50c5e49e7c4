"""Orbax checkpoints of a whole training state plus a JSON of metadata.

Orbax writes each step into a temporary directory and renames it when
complete, so the latest checkpoint on disk is never half written.
"""
import os
from typing import Any

import jax
import orbax.checkpoint as ocp

from jaxgan.errors import WorkdirError

PyTree = Any


class Checkpointer:
  """Save/restore `(state, meta)` under `<workdir>/checkpoints/<step>`."""

  def __init__(self, workdir: str, max_to_keep: int = 3):
    self.directory = os.path.join(os.path.abspath(workdir), "checkpoints")
    options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True,
                                           enable_async_checkpointing=True)
    try:
      self.manager = ocp.CheckpointManager(self.directory, options=options,
                                           item_names=("state", "meta"))
    except OSError as e:
      raise WorkdirError(f"cannot create the checkpoint directory {self.directory}: {e}. "
                         "Pick a --workdir you can write to.") from e

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def all_steps(self) -> list[int]:
    return list(self.manager.all_steps())

  def save(self, step: int, state: PyTree, meta: dict) -> None:
    """Save host copies of `state` (unreplicated) and a JSON-able `meta` dict."""
    self.manager.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)))

  def restore(self, target: PyTree | None, step: int | None = None) -> tuple[PyTree, dict]:
    """Restore into the structure (and dtypes) of `target`; latest step by default.

    With `target=None` the state comes back as nested dicts of numpy arrays.
    """
    step = self.latest_step() if step is None else step
    if step is None:
      raise FileNotFoundError(f"no checkpoint in {self.directory}")
    abstract = (None if target is None
                else jax.tree_util.tree_map(ocp.utils.to_shape_dtype_struct, target))
    restored = self.manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract), meta=ocp.args.JsonRestore()))
    return restored["state"], dict(restored["meta"])

  def restore_meta(self, step: int | None = None) -> dict:
    step = self.latest_step() if step is None else step
    return dict(self.manager.restore(step, args=ocp.args.Composite(
        meta=ocp.args.JsonRestore()))["meta"])

  def wait(self) -> None:
    self.manager.wait_until_finished()

  def close(self) -> None:
    self.manager.wait_until_finished()
    self.manager.close()
