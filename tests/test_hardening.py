"""Real faults around training: a full disk, signals, readers beside a live run, bad values."""
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from conftest import tiny_config, tiny_wgan_config, write_image_folder
from jaxgan import experiment
from jaxgan.checkpoint import Checkpointer
from jaxgan.errors import ConfigError, Interrupted, WorkdirError
from jaxgan.writers import MetricWriter, read_metrics

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture
def small_disk(tmp_path):
  """A real 4 MB filesystem (tmpfs), where writes fail with ENOSPC once it is full."""
  mount = tmp_path / "disk"
  mount.mkdir()
  made = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount)],
                        capture_output=True)
  if made.returncode:
    pytest.skip("cannot mount a small filesystem here (needs root): "
                + made.stderr.decode().strip())
  yield str(mount)
  subprocess.run(["umount", "-l", str(mount)], check=False)


def _fill_and_train(folder, disk, when, n):
  """Exit status, stderr and run time of tests/fill_disk_run.py (see there)."""
  t0 = time.time()
  try:
    out = subprocess.run([sys.executable, os.path.join(ROOT, "tests", "fill_disk_run.py"),
                          folder, os.path.join(disk, "run"), when, str(n)], cwd=ROOT,
                         capture_output=True, text=True, timeout=120)
  except subprocess.TimeoutExpired:
    pytest.fail(f"training on a full disk hung (no exit in 120 s after filling it ({when} {n}))")
  # Orbax's threads print their own tracebacks meanwhile, sometimes onto the same line.
  errors = [line[line.index("error: "):] for line in out.stderr.splitlines() if "error: " in line]
  if not errors:
    errors = [out.stderr[-3000:]]  # for the assertion message: what ended it instead
  return out.returncode, errors, time.time() - t0


def test_a_full_disk_during_training_stops_it_with_one_clear_message(image_folder, small_disk):
  # Filled before step 10: the save of step 9 may or may not have finished; then the
  # training log (one line per step) fails as soon as its page of the disk is full.
  code, errors, _ = _fill_and_train(image_folder, small_disk, "step", 10)
  assert code == 2 and len(errors) == 1, errors
  message = errors[0]
  assert "No space left on device" in message and "Free disk space" in message
  workdir = os.path.join(small_disk, "run")
  ckpt = Checkpointer(workdir, read_only=True)
  finished = ckpt.finished_steps()
  ckpt.close()
  # The message names exactly what is on disk, and it restores.
  if finished:
    assert f"the checkpoint of step {finished[-1]} is intact" in message
    state, _ = Checkpointer(workdir, read_only=True).restore(None, finished[-1])
    assert int(state["step"]) == finished[-1]
  else:
    assert "no checkpoint had been written yet" in message
  # Once space is freed, every line of the log parses (one cut by the full disk is repaired).
  if os.path.exists(os.path.join(small_disk, "filler")):
    os.remove(os.path.join(small_disk, "filler"))
  MetricWriter(workdir).close()
  assert read_metrics(workdir)


def test_a_failed_background_save_is_reported_with_its_own_step(image_folder, small_disk):
  code, errors, _ = _fill_and_train(image_folder, small_disk, "save", 18)
  assert code == 2 and len(errors) == 1, errors[-1]
  # Step 18's save began, then the disk filled under it: the error names step 18 (not the
  # next save's step) and the checkpoint of step 9, which is complete.
  assert "could not write the checkpoint of step 18" in errors[0], errors[0]
  assert "No space left on device" in errors[0]
  assert "the checkpoint of step 9 is intact" in errors[0]
  ckpt = Checkpointer(os.path.join(small_disk, "run"), read_only=True)
  assert ckpt.finished_steps() == [9]
  ckpt.close()


def test_a_resumed_run_repairs_a_log_line_cut_short(tmp_path):
  path = tmp_path / "metrics.jsonl"
  path.write_text('{"step": 1, "split": "train", "loss": 1.0}\n{"step": 2, "split": "tr')
  writer = MetricWriter(str(tmp_path), enabled=True)
  writer.write(2, "train", {"loss": 0.5})
  writer.close()
  assert [(r["step"], r["loss"]) for r in read_metrics(str(tmp_path))] == [(1, 1.0), (2, 0.5)]


@pytest.mark.parametrize("blocked", ["metrics.jsonl", "tensorboard", "checkpoints"])
def test_an_unusable_log_or_checkpoint_path_fails_before_training(image_folder, tmp_path,
                                                                  blocked):
  # A folder where a file belongs, or a file where a folder belongs: a real fault that
  # holds even for root, who may write anywhere.
  workdir = tmp_path / "run"
  workdir.mkdir()
  if blocked == "metrics.jsonl":
    (workdir / blocked).mkdir()
  else:
    (workdir / blocked).write_text("not a folder")
  with pytest.raises(WorkdirError, match=rf"{blocked}|training log") as e:
    experiment.train_and_evaluate(tiny_config(image_folder, num_epochs=1), str(workdir))
  assert not (workdir / "config.json").exists()  # refused before the run began


def _checkpointed_run(folder, workdir, epochs=3):
  experiment.train_and_evaluate(
      tiny_config(folder, batch_size=12, num_epochs=epochs, keep_checkpoints=3), workdir)
  return sorted(int(n) for n in os.listdir(os.path.join(workdir, "checkpoints")) if n.isdigit())


def test_a_reader_never_moves_a_live_runs_checkpoints(image_folder, tmp_path):
  workdir = str(tmp_path / "run")
  steps = _checkpointed_run(image_folder, workdir)
  assert steps == [3, 6, 9]
  # The trainer deletes its oldest kept checkpoint while the reader is between listing the
  # steps and reading them, and the newest one is damaged (being rewritten, say).
  newest = os.path.join(workdir, "checkpoints", "9")
  data = [os.path.join(d, f) for d, _, fs in os.walk(newest) for f in fs if "ocdbt" in d]
  with open(max(data, key=os.path.getsize), "r+b") as f:
    f.truncate(8)
  real_restore = Checkpointer.restore

  def trainer_deletes_step_6_first(self, target, step=None):
    if step == 6:
      shutil.rmtree(os.path.join(workdir, "checkpoints", "6"))
    return real_restore(self, target, step)

  Checkpointer.restore = trainer_deletes_step_6_first
  try:
    result = experiment.evaluate(workdir, num_devices=1)
  finally:
    Checkpointer.restore = real_restore
  assert result["step"] == 3  # 9 damaged, 6 vanished: the previous one
  assert os.path.isdir(newest)  # a reader warns; it never moves the trainer's files
  assert not os.path.exists(os.path.join(workdir, "damaged_checkpoints"))


def test_evaluate_beside_a_training_run_never_fails(image_folder, tmp_path):
  """The case users hit: evaluate.py while train.py saves every epoch and keeps two."""
  workdir = str(tmp_path / "live")
  experiment.train_and_evaluate(tiny_config(image_folder, batch_size=12, num_epochs=1), workdir)
  train = subprocess.Popen(
      [sys.executable, "train.py", "--config", "configs/tiny_darknet.py",
       f"--config.dataset={image_folder}", f"--workdir={workdir}", "--config.num_devices=1",
       "--config.image_size=8", "--config.augment.pad=2", "--config.model.num_blocks=(1,)",
       "--config.model.nf=4", "--config.eval_batch_size=8", "--config.train_subset=-1",
       "--config.eval_subset=-1", "--config.cache_dir=none", "--config.progress_bar=False",
       "--config.batch_size=12", "--config.num_epochs=400", "--config.keep_checkpoints=2",
       "--config.eval_every_epochs=0"], cwd=ROOT, stdout=subprocess.DEVNULL,
      stderr=subprocess.PIPE, text=True)
  try:
    deadline = time.time() + 120
    while max((r["step"] for r in read_metrics(workdir)), default=0) < 12:
      assert train.poll() is None and time.time() < deadline, train.communicate()[1]
      time.sleep(0.1)
    seen = set()
    for _ in range(4):  # saves (and deletions) every 3 steps, while these read
      result = experiment.evaluate(workdir, num_devices=1)
      seen.add(result["step"])
      assert 0 <= result["accuracy"] <= 1
    assert train.poll() is None, train.communicate()[1]
  finally:
    train.send_signal(signal.SIGTERM)
    train.communicate(timeout=120)
  assert not os.path.exists(os.path.join(workdir, "damaged_checkpoints"))
  assert len(seen) > 1  # it did read a run that moved on


def test_wgan_stops_inside_the_critic_phase_and_resumes_exactly(tmp_path):
  folder = write_image_folder(tmp_path / "gan", classes=("x", "y"), per_class=(24, 0), size=16)
  from jaxgan.wgan import WGANTask
  batch = WGANTask.train_batch

  def ctrl_c_before_iteration_3(self, step):
    if step == 3:
      os.kill(os.getpid(), signal.SIGINT)  # handled at once: the flag is up before step 3
    return batch(self, step)

  # Every iteration has 12 critic steps; a stop used to wait for all of them.
  config = dict(critic_iters=12, critic_iters_boost=12, critic_loop="dispatch")
  stopped, straight = str(tmp_path / "stopped"), str(tmp_path / "straight")
  WGANTask.train_batch = ctrl_c_before_iteration_3
  try:
    with pytest.raises(Interrupted, match="SIGINT at step 3"):
      experiment.train_and_evaluate(tiny_wgan_config(folder, **config), stopped)
  finally:
    WGANTask.train_batch = batch
  ckpt = Checkpointer(stopped, read_only=True)
  assert ckpt.latest_step() == 3 and ckpt.restore_meta(3)["critic_steps_done"] == 1
  ckpt.close()
  on_scan = str(tmp_path / "on_scan")  # resumed where critic steps run as one program
  shutil.copytree(stopped, on_scan)
  experiment.train_and_evaluate(tiny_wgan_config(folder, num_train_steps=6, **config), stopped)
  experiment.train_and_evaluate(tiny_wgan_config(folder, num_train_steps=6, **config), straight)
  experiment.train_and_evaluate(
      tiny_wgan_config(folder, num_train_steps=6, **{**config, "critic_loop": "scan"}), on_scan)
  a, b, c = (Checkpointer(w, read_only=True).restore(None)[0] for w in (stopped, straight, on_scan))
  assert int(a["step"]) == int(b["step"]) == int(c["step"]) == 6
  for x, y, z in zip(*(jax.tree_util.tree_leaves(t) for t in (a, b, c))):
    np.testing.assert_array_equal(x, y)
    # The scan program finishes the stopped iteration's 11 critic steps, none twice or lost
    # (scan and dispatch agree to rounding: test_wgan.py).
    np.testing.assert_allclose(z, y, rtol=1e-4, atol=1e-6)


def test_a_second_ctrl_c_stops_at_once_without_a_traceback(tmp_path):
  folder = write_image_folder(tmp_path / "gan", classes=("x", "y"), per_class=(24, 0), size=16)
  workdir = str(tmp_path / "run")
  proc = subprocess.Popen(
      [sys.executable, "train.py", "--config", "configs/wgan_cifar10.py",
       f"--config.dataset={folder}", f"--workdir={workdir}", "--config.cache_dir=none",
       "--config.image_size=16", "--config.model.ngf=8", "--config.model.ndf=8",
       "--config.model.nz=8", "--config.batch_size=8", "--config.num_devices=1",
       "--config.progress_bar=False", "--config.log_every_steps=1",
       "--config.critic_iters_boost=100000"], cwd=ROOT, stdout=subprocess.PIPE,
      stderr=subprocess.PIPE, text=True)
  try:
    deadline = time.time() + 120
    while not os.path.exists(os.path.join(workdir, "config.json")):
      assert proc.poll() is None and time.time() < deadline, proc.communicate()
      time.sleep(0.1)
    time.sleep(1.0)  # in the first iteration's 100,000 critic steps
    proc.send_signal(signal.SIGINT)
    time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    t0 = time.time()
    _, err = proc.communicate(timeout=30)
  finally:
    proc.kill()
  assert time.time() - t0 < 10
  assert proc.returncode == 130, err
  assert "received again: stopping now" in err and "Traceback" not in err


@pytest.mark.parametrize("field, value, message", [
    ("seed", -1, r"seed must be in \[0, 2,147,483,646\], got -1"),
    ("num_grid_samples", 0, r"num_grid_samples must be in \[1, 4,096\], got 0"),
    ("iters_per_epoch", 0, r"iters_per_epoch must be in \[1, "),
    ("lr_d", 0.0, "lr_d must be positive, got 0.0"),
    ("clip", -0.01, "clip must be positive"),
    ("image_size", 100000, r"image_size must be in \[1, 8,192\], got 100000"),
])
def test_out_of_range_values_are_named_before_anything_runs(tmp_path, field, value, message):
  config = tiny_wgan_config(str(tmp_path / "nowhere"), **{field: value})
  with pytest.raises(ConfigError, match=message):
    experiment.train_and_evaluate(config, str(tmp_path / "run"))
  assert not os.path.exists(tmp_path / "run" / "config.json")


def test_a_step_count_past_32_bits_is_refused(image_folder, tmp_path):
  with pytest.raises(ConfigError, match=r"at most 2,147,483,647 .*num_epochs"):
    experiment.train_and_evaluate(tiny_config(image_folder, num_epochs=10**9),
                                  str(tmp_path / "run"))
  assert not (tmp_path / "run" / "config.json").exists()
