"""Where metrics go: TensorBoard event files, a plain JSON-lines log, the console.

Only process 0 writes. TensorBoard files come from tensorboardX's event-file
writer, which needs no TensorFlow (the GPU machines have none).
"""
import contextlib
import json
import math
import os
import sys
import time
from typing import Callable, Mapping

import jax

from jaxgan.errors import WorkdirError


def _scalar(v):
  try:
    return float(v)
  except (TypeError, ValueError):
    return None


_LOG = "the training log (metrics.jsonl, tensorboard/)"


def repair_truncated_line(path: str) -> None:
  """Cut a last line that has no newline: a run stopped while writing it (disk full, a
  kill), and a resumed run's records must not be glued onto the fragment."""
  try:
    with open(path, "rb+") as f:
      size = f.seek(0, os.SEEK_END)
      if size == 0:
        return
      f.seek(size - 1)
      if f.read(1) == b"\n":
        return
      tail = max(0, size - (1 << 20))  # records are short: look back at most 1 MiB
      f.seek(tail)
      f.truncate(tail + f.read().rfind(b"\n") + 1)
  except FileNotFoundError:
    return


class MetricWriter:
  """Writes scalars to `<workdir>/tensorboard` and `<workdir>/metrics.jsonl`.

  Every write happens in the calling thread, so a full disk or a lost
  permission raises at once, as a WorkdirError that names the file and (from
  `kept`) what is safe on disk; a writer thread that died would leave training
  blocked on its queue.
  """

  def __init__(self, workdir: str, enabled: bool | None = None,
               kept: Callable[[], str] | None = None):
    self.enabled = jax.process_index() == 0 if enabled is None else enabled
    self.workdir = workdir
    self._kept = kept or (lambda: "")
    self._tb = None
    self._log = None
    if self.enabled:
      with self._failing_as_user_error(_LOG):
        log_path = os.path.join(workdir, "metrics.jsonl")
        repair_truncated_line(log_path)
        self._log = open(log_path, "a")
        tb_dir = os.path.join(workdir, "tensorboard")
        os.makedirs(tb_dir, exist_ok=True)
        from tensorboardX.event_file_writer import EventsWriter
        self._tb = EventsWriter(os.path.join(tb_dir, "events"))

  @contextlib.contextmanager
  def _failing_as_user_error(self, what: str):
    try:
      yield
    except OSError as e:
      self.enabled = False  # nothing more is written, and close() does not try again
      where = e.filename or self.workdir
      kept = self._kept()
      raise WorkdirError(
          f"cannot write {what} ({where}): {e.strerror or e}. Training stopped"
          + (f"; {kept}" if kept else "") + ". Free disk space (or fix the permissions) and run "
          "the same command again to resume.") from e

  def _event(self, step: int, summary) -> None:
    from tensorboardX.proto.event_pb2 import Event
    self._tb.write_event(Event(wall_time=time.time(), step=int(step), summary=summary))

  def write(self, step: int, split: str, metrics: Mapping[str, float], **extra) -> None:
    """One record: scalars under `<split>/<name>` in TensorBoard, a line in metrics.jsonl."""
    if not self.enabled or not metrics:  # e.g. a GAN's evaluation, which has no metric
      return
    from tensorboardX import summary
    record = {"step": int(step), "split": split, "time": round(time.time(), 3), **extra}
    with self._failing_as_user_error(_LOG):
      for name, value in metrics.items():
        v = _scalar(value)
        if v is None:
          continue
        record[name] = v
        if math.isfinite(v):
          self._event(step, summary.scalar(f"{split}/{name}", v))
      self._log.write(json.dumps(record) + "\n")
      self._log.flush()
      self._tb.flush()

  def write_image(self, step: int, tag: str, image, filename: str | None = None) -> None:
    """A uint8 HWC image to TensorBoard, and to `<workdir>/<filename>` (PNG) if given."""
    if not self.enabled:
      return
    from tensorboardX import summary
    with self._failing_as_user_error("a sample grid"):
      self._event(step, summary.image(tag, image, dataformats="HWC"))
      self._tb.flush()
      if filename:
        from jaxgan.images import save_png
        save_png(os.path.join(self.workdir, filename), image)

  def flush(self) -> None:
    if self.enabled:
      with self._failing_as_user_error(_LOG):
        self._tb.flush()
        self._log.flush()

  def close(self) -> None:
    if not self.enabled:
      return
    try:
      with self._failing_as_user_error(_LOG):
        self._tb.close()
        self._log.close()
    finally:
      self.enabled = False
      for f in (self._tb, self._log):
        try:
          f.close()
        except (OSError, ValueError):  # already reported above, or already closed
          pass


def progress_bar(total: int, desc: str, initial: int = 0, enabled: bool = True,
                 unit: str = "step"):
  """A tqdm bar on stderr (process 0 only; hidden when `enabled` is false)."""
  from tqdm.auto import tqdm
  return tqdm(total=total, initial=initial, desc=desc, unit=unit, dynamic_ncols=True,
              disable=not enabled or jax.process_index() != 0, file=sys.stderr, leave=True)


def read_metrics(workdir: str) -> list[dict]:
  """All records of `<workdir>/metrics.jsonl` (for tests and notebooks)."""
  path = os.path.join(workdir, "metrics.jsonl")
  if not os.path.exists(path):
    return []
  with open(path) as f:
    return [json.loads(line) for line in f if line.strip()]
