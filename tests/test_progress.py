"""What a training run shows while it runs and when it ends, on a terminal and in a log file,
and what it records about itself (config, library versions)."""
import glob
import io
import json
import os
import re
import struct
import sys

import pytest

from conftest import tiny_config, tiny_wgan_config, write_image_folder
from jaxgan import experiment, writers
from jaxgan.workdir import library_versions


class Terminal(io.StringIO):
  """A stderr that says it is a terminal, so tqdm draws its bars into it."""

  def isatty(self):
    return True


def read_events(workdir):
  """Every Event of the run's TensorBoard files (TFRecord framing: length, its CRC, data, CRC)."""
  from tensorboardX.proto.event_pb2 import Event
  events = []
  for path in glob.glob(os.path.join(workdir, "tensorboard", "events*")):
    data = open(path, "rb").read()
    at = 0
    while at < len(data):
      (n,) = struct.unpack("<Q", data[at:at + 8])
      events.append(Event.FromString(data[at + 12:at + 12 + n]))
      at += 12 + n + 4
  return events


def texts(workdir) -> dict:
  return {v.tag: v.tensor.string_val[0].decode() for e in read_events(workdir)
          for v in e.summary.value if v.tensor.string_val}


@pytest.fixture(scope="module")
def wgan_run(tmp_path_factory):
  """A WGAN capped at 6 of its 8 generator iterations, progress on, stderr no terminal, a
  plain line after every step (the warm-up is 2 iterations)."""
  tmp = tmp_path_factory.mktemp("progress")
  folder = write_image_folder(tmp / "gan", classes=("x", "y"), per_class=(24, 0), size=16)
  workdir = str(tmp / "run")
  out, err = io.StringIO(), io.StringIO()
  with pytest.MonkeyPatch.context() as mp:
    mp.setattr(writers, "PLAIN_EVERY_S", 0.0)
    mp.setattr(sys, "stdout", out)
    mp.setattr(sys, "stderr", err)
    result = experiment.train_and_evaluate(
        tiny_wgan_config(folder, progress_bar=True, num_train_steps=6, log_every_steps=2),
        workdir)
  return workdir, result, out.getvalue(), err.getvalue()


def test_without_a_terminal_progress_is_plain_lines_to_the_real_end(wgan_run):
  _, result, out, err = wgan_run
  assert result["step"] == 6
  assert "\r" not in err and "\r" not in out
  lines = [line for line in err.splitlines() if line.startswith("step ")]
  assert [int(re.match(r"step (\d+)/6 ", line)[1]) for line in lines] == [1, 2, 3, 4, 5, 6]
  assert "/8" not in err  # the schedule's 8 iterations are not where this run ends
  assert lines[0].startswith("step 1/6 (epoch 1/2, critic warm-up 2/2)")
  assert lines[1].startswith("step 2/6 (epoch 1/2)  ")  # the warm-up is over
  assert re.match(r"step 6/6 \(epoch 2/2\)  [\d.]+ iters/s  loss_d \S+ loss_g \S+ d_real \S+ "
                  r"d_fake \S+$", lines[-1]), lines[-1]


def test_the_first_step_is_announced_as_compiling_and_timed(wgan_run):
  out = wgan_run[2].splitlines()
  at = out.index("compiling the train step ...")
  assert re.fullmatch(r"compiled in \d+\.\d s \(the first step took \d+\.\d s in all\)",
                      out[at + 1]), out[at + 1]


def test_a_gan_run_ends_with_a_summary_line(wgan_run):
  out = wgan_run[2].strip().splitlines()
  assert re.fullmatch(r"done: step 6 of 6, [\d.]+s, [\d.]+ iters/s; last loss_d \S+ loss_g \S+ "
                      r"d_real \S+ d_fake \S+", out[-1]), out[-1]


def test_config_and_versions_reach_tensorboard_and_the_workdir(wgan_run):
  workdir = wgan_run[0]
  shown = texts(workdir)
  assert '"critic_iters": 2' in shown["run/config/text_summary"]
  versions = library_versions()
  assert set(versions) == {"python", "jaxgan", "jax", "jaxlib", "flax", "optax",
                           "orbax-checkpoint", "numpy"}
  assert "not installed" not in versions.values()
  for name, version in versions.items():
    assert f"| {name} | {version} |" in shown["run/versions/text_summary"]
  with open(os.path.join(workdir, "versions.json")) as f:
    assert json.load(f) == versions
  with open(os.path.join(workdir, "config.json")) as f:
    assert "jax" not in json.load(f)  # config.json stays the config alone


def test_on_a_terminal_the_bars_end_where_the_run_ends(image_folder, tmp_path, monkeypatch,
                                                       capsys):
  monkeypatch.setattr(sys, "stderr", Terminal())  # 4 steps per epoch, 8 in all, capped at 6
  monkeypatch.setenv("COLUMNS", "200")
  result = experiment.train_and_evaluate(
      tiny_config(image_folder, progress_bar=True, num_train_steps=6), str(tmp_path / "run"))
  bars = [frame for frame in sys.stderr.getvalue().split("\r") if frame.strip()]
  assert bars[-1].startswith("epoch 2/2: 100%|") and "| 2/2 [" in bars[-1], bars[-1]
  assert re.search(r"\d+ images/s, loss \S+, accuracy \S+\]", bars[-1]), bars[-1]
  assert not any("/8" in b or "it/s" in b or "step/s" in b for b in bars)
  out = capsys.readouterr().out
  assert result["eval"] and "done:" not in out  # train.py prints the final evaluation


def test_a_bar_shows_only_the_metrics_that_fit_the_terminal(monkeypatch):
  monkeypatch.setattr(sys, "stderr", Terminal())
  monkeypatch.setenv("COLUMNS", "96")
  view = writers.TrainingProgress(1334, 1334, "iters", main=True)
  view.start_epoch(0)
  view.metrics({k: 0.123456 for k in ("G_A", "G_B", "cycle_A", "cycle_B", "idt_A", "idt_B")}, 9.1)
  view.advance(1)
  view.bar.refresh()
  frame = sys.stderr.getvalue().split("\r")[-1]
  assert "9.1 iters/s, G_A 0.123, G_B 0.123" in frame and len(frame.rstrip()) < 96, frame
  assert "cycle_A" not in frame and frame.rstrip().endswith("G_B 0.123]")  # whole items


def test_a_plain_bar_prints_a_final_line_without_carriage_returns(monkeypatch):
  err = io.StringIO()
  monkeypatch.setattr(sys, "stderr", err)
  bar = writers.progress_bar(5, "translating AtoB", unit="image")
  for _ in range(5):
    bar.update(1)
  bar.close()
  assert re.fullmatch(r"translating AtoB: 5/5 images, \S+ images/s\n", err.getvalue())
  quiet = writers.progress_bar(5, "decoding", enabled=False)
  quiet.update(5)
  quiet.close()
  assert err.getvalue().count("\n") == 1


def test_numbers_are_compact():
  assert [writers.compact(v) for v in (0.000123456, -0.0123, 2.5, 12345.6, 3e7)] == [
      "0.000123", "-0.0123", "2.5", "12346", "3e+07"]
  assert [writers.duration(s) for s in (41.23, 161, 10920)] == ["41.2s", "2m41s", "3h02m"]
