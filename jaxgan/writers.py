"""Where metrics go: TensorBoard event files, a plain JSON-lines log, the console.

Only process 0 writes. TensorBoard files come from tensorboardX's event-file
writer, which needs no TensorFlow (the GPU machines have none).
"""
import contextlib
import json
import math
import os
import shutil
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

  def write_text(self, step: int, tag: str, text: str) -> None:
    """Markdown in TensorBoard's text tab (the run's config and library versions)."""
    if not self.enabled:
      return
    from tensorboardX import summary
    with self._failing_as_user_error(_LOG):
      self._event(step, summary.text(tag, text))
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


# Where no bar can be drawn (a log file, SLURM, nohup), progress is a plain line at most this
# often (and at the end of each epoch / of the work).
PLAIN_EVERY_S = 30.0


def draws_bars(stream) -> bool:
  """Whether a tqdm bar on `stream` shows as a bar: a terminal, or a notebook (whose widget
  does not use the stream). Anywhere else its redraws pile up as `\\r`-joined text."""
  from tqdm.autonotebook import tqdm as auto
  from tqdm.std import tqdm as std
  try:
    return auto is not std or stream.isatty()
  except (AttributeError, ValueError):  # no isatty, or a closed stream
    return False


def compact(v: float) -> str:
  """3 significant digits; 1,000 to 10 million without an exponent (throughputs)."""
  return f"{v:.0f}" if 1000 <= abs(v) < 1e7 else f"{v:.3g}"


def duration(seconds: float) -> str:
  """41.2s, 2m41s, 3h02m."""
  if seconds < 60:
    return f"{seconds:.1f}s"
  m, s = divmod(round(seconds), 60)
  return f"{m}m{s:02d}s" if m < 60 else f"{m // 60}h{m % 60:02d}m"


class PlainBar:
  """tqdm's update / close on a stream that is not a terminal: a line every
  `PLAIN_EVERY_S` seconds and one at the end, `<desc>: 2000/5000 images, 410 images/s`."""

  def __init__(self, total: int, desc: str, initial: int = 0, unit: str = "step",
               stream=None):
    self.total, self.desc, self.n, self.unit = total, desc, initial, unit
    self.stream = stream or sys.stderr
    self.t0 = self.last = time.monotonic()
    self.initial = self.shown = initial

  def update(self, n: int = 1) -> None:
    self.n += n
    if time.monotonic() - self.last >= PLAIN_EVERY_S:
      self._line()

  def _line(self) -> None:
    now = time.monotonic()
    rate = (self.n - self.initial) / max(now - self.t0, 1e-9)
    print(f"{self.desc}: {self.n}/{self.total} {self.unit}s, {compact(rate)} {self.unit}s/s",
          file=self.stream, flush=True)
    self.last, self.shown = now, self.n

  def close(self) -> None:
    if self.n != self.shown:
      self._line()


def progress_bar(total: int, desc: str, initial: int = 0, enabled: bool = True,
                 unit: str = "step"):
  """Progress on stderr, process 0 only (nothing when `enabled` is false): a tqdm bar on a
  terminal, plain lines elsewhere (`PlainBar`)."""
  shown = enabled and jax.process_index() == 0
  if shown and not draws_bars(sys.stderr):
    return PlainBar(total, desc, initial, unit)
  from tqdm.auto import tqdm
  return tqdm(total=total, initial=initial, desc=desc, unit=unit, dynamic_ncols=True,
              disable=not shown, file=sys.stderr, leave=True)


class TrainingProgress:
  """The console view of a training run; only process 0 shows anything.

  With `shown` (config.progress_bar): on a terminal, a tqdm bar per epoch whose total runs to
  the run's real end (`stop` caps the last one), its postfix the latest metrics that fit the
  width; elsewhere no bar, but a plain line on stderr at most every `PLAIN_EVERY_S` seconds
  and at the end of each epoch, never cut:

      step 120/1334 (epoch 1/1)  9.1 iters/s  eta 2m18s  loss_D_A 0.21 loss_G_A 0.53 ...

  Throughput is the loop's (`metrics(..., rate)`: measured over a log interval, the compiling
  first step left out), else measured here since `compiled`. `write` prints a stdout line
  without breaking a bar, shown or not.
  """

  def __init__(self, stop: int, steps_per_epoch: int, unit: str, units_per_step: int = 1,
               shown: bool = True, main: bool | None = None):
    self.main = jax.process_index() == 0 if main is None else main
    self.shown = shown and self.main
    self.terminal = self.shown and draws_bars(sys.stderr)
    self.stop, self.steps_per_epoch = stop, steps_per_epoch
    self.unit, self.units_per_step = unit, units_per_step
    self.num_epochs = -(-stop // steps_per_epoch)  # where the run really ends
    self.bar, self.note, self.items, self.rate, self.since = None, "", [], None, None
    self.step = self.lined = 0
    self.epoch = 1
    self.last_line = time.monotonic()

  def start_epoch(self, step: int, note: str = "") -> None:
    """Before the steps of an epoch, from global step `step`."""
    self.step, self.note = step, note
    if not self.terminal:
      return
    from tqdm.auto import tqdm
    epoch, pos = divmod(step, self.steps_per_epoch)
    total = min(self.steps_per_epoch, self.stop - epoch * self.steps_per_epoch)
    self.epoch = epoch + 1
    self.bar = tqdm(total=total, initial=pos, desc=self._desc(self.epoch), file=sys.stderr,
                    dynamic_ncols=True, leave=True, bar_format=(
                        "{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} "
                        "[{elapsed}<{remaining}{postfix}]"))
    self._postfix()

  def _desc(self, epoch: int) -> str:
    return f"epoch {epoch}/{self.num_epochs}" + (f", {self.note}" if self.note else "")

  def compiled(self, step: int) -> None:
    """The first step is done: measure throughput from here."""
    self.since = (step, time.monotonic())

  def advance(self, step: int, note: str = "") -> None:
    """After each step: `step` is done; `note` says what the next one does unusually."""
    self.step = step
    changed, self.note = note != self.note, note
    if self.bar is not None:
      if changed:
        self.bar.set_description_str(self._desc(self.epoch), refresh=False)
      self.bar.update(1)
    elif self.shown and time.monotonic() - self.last_line >= PLAIN_EVERY_S:
      self.line()

  def metrics(self, values: dict, rate: float | None) -> None:
    """The latest log interval's metrics to show, and its throughput (units / s)."""
    self.items, self.rate = [(k, compact(v)) for k, v in values.items()], rate
    if self.bar is not None:
      self._postfix()

  def _rate(self) -> float | None:
    if self.rate is not None or self.since is None or self.step <= self.since[0]:
      return self.rate
    done = (self.step - self.since[0]) * self.units_per_step
    return done / max(time.monotonic() - self.since[1], 1e-9)

  def _postfix(self) -> None:
    """As many of the metrics as fit the terminal's width after the bar's own text (a
    cut line would show half a number); the rest are in metrics.jsonl and TensorBoard."""
    rate = self._rate()
    parts = [f"{compact(rate)} {self.unit}/s"] if rate is not None else []
    parts += [f"{k} {v}" for k, v in self.items]
    # The rest of the line: ": 100%|", a bar of 10, "| n/total [elapsed<remaining, ", "]";
    # up to 17 for the times (h:mm:ss); tqdm leaves the last column free.
    room = (shutil.get_terminal_size((100, 24)).columns - 1 - len(self.bar.desc)
            - 2 * len(str(self.bar.total)) - 44)
    fitted = []
    for part in parts:
      if len(", ".join([*fitted, part])) > room:
        break
      fitted.append(part)
    self.bar.set_postfix_str(", ".join(fitted), refresh=False)

  def line(self) -> None:
    """The plain progress line: where the run stands, its speed, time left, metrics."""
    epoch = -(-self.step // self.steps_per_epoch) or 1
    text = f"step {self.step}/{self.stop} ({self._desc(epoch)})"
    rate = self._rate()
    if rate:
      text += f"  {compact(rate)} {self.unit}/s"
      if self.step < self.stop:
        text += f"  eta {duration((self.stop - self.step) * self.units_per_step / rate)}"
    if self.items:
      text += "  " + " ".join(f"{k} {v}" for k, v in self.items)
    print(text, file=sys.stderr, flush=True)
    self.last_line, self.lined = time.monotonic(), self.step

  def end_epoch(self) -> None:
    if self.bar is not None:
      self.bar.close()
      self.bar = None
    elif self.shown and self.lined != self.step:
      self.line()

  def write(self, text: str) -> None:
    """A line on stdout (process 0), above a bar if one is drawn."""
    if not self.main:
      return
    if self.bar is not None:
      from tqdm.auto import tqdm
      tqdm.write(text, file=sys.stdout)
      sys.stdout.flush()
    else:
      print(text, flush=True)


def read_metrics(workdir: str) -> list[dict]:
  """All records of `<workdir>/metrics.jsonl` (for tests and notebooks)."""
  path = os.path.join(workdir, "metrics.jsonl")
  if not os.path.exists(path):
    return []
  with open(path) as f:
    return [json.loads(line) for line in f if line.strip()]
