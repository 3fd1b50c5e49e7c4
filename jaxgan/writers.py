"""Where metrics go: TensorBoard event files, a plain JSON-lines log, the console.

Only process 0 writes. TensorBoard files come from tensorboardX, which needs
no TensorFlow (the GPU machines have none).
"""
import json
import math
import os
import sys
import time
from typing import Mapping

import jax


def _scalar(v):
  try:
    return float(v)
  except (TypeError, ValueError):
    return None


class MetricWriter:
  """Writes scalars to `<workdir>/tensorboard` and `<workdir>/metrics.jsonl`."""

  def __init__(self, workdir: str, enabled: bool | None = None):
    self.enabled = jax.process_index() == 0 if enabled is None else enabled
    self.workdir = workdir
    self._tb = None
    self._log = None
    if self.enabled:
      from tensorboardX import SummaryWriter
      self._tb = SummaryWriter(os.path.join(workdir, "tensorboard"))
      self._log = open(os.path.join(workdir, "metrics.jsonl"), "a")

  def write(self, step: int, split: str, metrics: Mapping[str, float], **extra) -> None:
    """One record: scalars under `<split>/<name>` in TensorBoard, a line in metrics.jsonl."""
    if not self.enabled or not metrics:  # e.g. a GAN's evaluation, which has no metric
      return
    record = {"step": int(step), "split": split, "time": round(time.time(), 3), **extra}
    for name, value in metrics.items():
      v = _scalar(value)
      if v is None:
        continue
      record[name] = v
      if math.isfinite(v):
        self._tb.add_scalar(f"{split}/{name}", v, int(step))
    self._log.write(json.dumps(record) + "\n")
    self._log.flush()

  def write_image(self, step: int, tag: str, image, filename: str | None = None) -> None:
    """A uint8 HWC image to TensorBoard, and to `<workdir>/<filename>` (PNG) if given."""
    if not self.enabled:
      return
    self._tb.add_image(tag, image, int(step), dataformats="HWC")
    if filename:
      from jaxgan.images import save_png
      save_png(os.path.join(self.workdir, filename), image)

  def flush(self) -> None:
    if self.enabled:
      self._tb.flush()
      self._log.flush()

  def close(self) -> None:
    if self.enabled:
      self._tb.close()
      self._log.close()
      self.enabled = False


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
