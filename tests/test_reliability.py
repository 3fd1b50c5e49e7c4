"""Preemption, crashes, damaged checkpoints, NaNs, config changes, locks and bad input."""
import errno
import glob
import os
import signal
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import TINY_CLI, tiny_config, write_image_folder
from jaxgan import experiment
from jaxgan.checkpoint import Checkpointer
from jaxgan.errors import ConfigError, DatasetError, NonFiniteLossError, WorkdirError
from jaxgan.writers import read_metrics

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# A tiny classifier: 36 training images, batch 4 -> 9 steps per epoch.
TINY = TINY_CLI + ["--config.batch_size=4", "--config.log_every_steps=1"]


def final_state(workdir):
  ckpt = Checkpointer(workdir)
  try:
    return ckpt.restore(None)[0], ckpt.latest_step()
  finally:
    ckpt.close()


def assert_same_state(a, b):
  assert jax.tree_util.tree_structure(a) == jax.tree_util.tree_structure(b)
  for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)):
    np.testing.assert_array_equal(x, y)


def start_training(folder, workdir, *extra):
  return subprocess.Popen([sys.executable, "train.py", *TINY, f"--config.dataset={folder}",
                           f"--workdir={workdir}", *extra], cwd=ROOT,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for_training(workdir, proc, timeout=120):
  """Until the run has logged a training step (it is inside the loop)."""
  deadline = time.time() + timeout
  while time.time() < deadline:
    if any("loss" in r for r in read_metrics(workdir)):
      return
    if proc.poll() is not None:
      raise AssertionError(f"the run ended early: {proc.communicate()}")
    time.sleep(0.05)
  raise AssertionError("the run did not start training in time")


@pytest.mark.parametrize("sig, code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_signal_saves_a_checkpoint_and_the_next_run_resumes_from_it(image_folder, tmp_path,
                                                                   sig, code):
  workdir = str(tmp_path / "run")
  proc = start_training(image_folder, workdir, "--config.num_epochs=400")
  wait_for_training(workdir, proc)
  proc.send_signal(sig)
  out, err = proc.communicate(timeout=120)
  assert proc.returncode == code, err
  assert "Run the same command again to resume" in err and "Traceback" not in err
  state, step = final_state(workdir)
  assert 0 < step < 1200 and int(state["step"]) == step
  # Resuming goes on from there and ends where an uninterrupted run ends.
  target = step + 4
  out = subprocess.run([sys.executable, "train.py", *TINY, f"--config.dataset={image_folder}",
                        f"--workdir={workdir}", "--config.num_epochs=400",
                        f"--config.num_train_steps={target}"], cwd=ROOT, capture_output=True,
                       text=True, timeout=300)
  assert out.returncode == 0, out.stderr
  assert f"training steps {step} -> {target}" in out.stdout
  straight = str(tmp_path / "straight")
  experiment.train_and_evaluate(
      tiny_config(image_folder, batch_size=4, log_every_steps=1, num_epochs=400,
                  num_train_steps=target), straight)
  assert_same_state(final_state(workdir)[0], final_state(straight)[0])


def test_sigkill_at_random_moments_then_resume_equals_an_uninterrupted_run(image_folder, tmp_path):
  # Checkpoint and evaluate every epoch (3 steps), so kills land in steps, saves and evals.
  extra = ["--config.num_epochs=120", "--config.eval_every_epochs=1",
           "--config.checkpoint_every_epochs=1", "--config.keep_checkpoints=2"]
  workdir = str(tmp_path / "killed")
  rng = np.random.default_rng(0)
  kills = 0
  for delay in rng.uniform(0.0, 2.0, size=4):
    proc = start_training(image_folder, workdir, *extra)
    wait_for_training(workdir, proc)
    time.sleep(delay)
    if proc.poll() is None:
      proc.kill()
      kills += 1
    proc.communicate(timeout=60)
  assert kills >= 3
  proc = start_training(image_folder, workdir, *extra)
  out, err = proc.communicate(timeout=300)
  assert proc.returncode == 0, err
  straight = str(tmp_path / "straight")
  experiment.train_and_evaluate(
      tiny_config(image_folder, batch_size=4, log_every_steps=1, num_epochs=120,
                  eval_every_epochs=1, checkpoint_every_epochs=1, keep_checkpoints=2), straight)
  a, step_a = final_state(workdir)
  b, step_b = final_state(straight)
  assert step_a == step_b == 1080
  assert_same_state(a, b)
  assert not glob.glob(os.path.join(workdir, "checkpoints", "*tmp*"))  # leftovers cleaned up


def _largest_file(directory):
  files = [f for f in glob.glob(os.path.join(directory, "**", "*"), recursive=True)
           if os.path.isfile(f)]
  return max(files, key=os.path.getsize)


@pytest.mark.parametrize("damage", ["flip_bytes", "truncate", "delete_meta"])
def test_damaged_latest_checkpoint_falls_back_and_is_kept_aside(image_folder, tmp_path, damage,
                                                                capsys):
  config = lambda cap: tiny_config(image_folder, batch_size=12, num_epochs=3,  # 3 steps each
                                   num_train_steps=cap)
  workdir, straight = str(tmp_path / "run"), str(tmp_path / "straight")
  experiment.train_and_evaluate(config(6), workdir)
  assert Checkpointer(workdir).all_steps() == [3, 6]
  victim = os.path.join(workdir, "checkpoints", "6")
  if damage == "delete_meta":
    for f in glob.glob(os.path.join(victim, "meta", "*")):
      os.remove(f)
  else:
    path = _largest_file(os.path.join(victim, "state"))
    data = bytearray(open(path, "rb").read())
    if damage == "truncate":
      data = data[:len(data) // 3]
    else:
      mid = len(data) // 2
      data[mid:mid + 64] = bytes(b ^ 0xFF for b in data[mid:mid + 64])
    open(path, "wb").write(bytes(data))
  capsys.readouterr()
  result = experiment.train_and_evaluate(config(-1), workdir)
  err = capsys.readouterr().err
  assert "checkpoints/6 is damaged" in err and "previous checkpoint is used" in err
  assert result["step"] == 9
  aside = glob.glob(os.path.join(workdir, "damaged_checkpoints", "6-*"))
  assert len(aside) == 1 and os.path.isdir(aside[0])  # kept, not deleted
  experiment.train_and_evaluate(config(-1), straight)
  assert_same_state(final_state(workdir)[0], final_state(straight)[0])


def poison(task, at_step, through=None):
  """Make the loss of the steps that start from `at_step` <= `state.step` <= `through`
  (default: `at_step`) NaN."""
  original = task.train_step
  through = at_step if through is None else through

  def train_step(state, batch, rng):
    new, metrics = original(state, batch, rng)
    bad = (state.step >= at_step) & (state.step <= through)
    metrics["loss"] = jnp.where(bad, jnp.nan, metrics["loss"])
    return new, metrics

  task.train_step = train_step
  return task


def train_poisoned(config, workdir, at_step, through=None):
  from jaxgan import parallel
  from jaxgan.loop import run
  devices = parallel.local_devices(1)
  return run(poison(experiment.build_task(config, devices), at_step, through), config, workdir,
             devices)


def test_non_finite_loss_names_the_exact_step_and_keeps_the_checkpoint(image_folder, tmp_path):
  workdir = str(tmp_path / "run")
  config = tiny_config(image_folder, batch_size=12, num_epochs=3, log_every_steps=10)
  with pytest.raises(NonFiniteLossError, match=r"loss became nan at step 5; .*step 3\) is kept"):
    train_poisoned(config, workdir, at_step=4)
  assert Checkpointer(workdir).all_steps() == [3]


def test_skip_policy_drops_the_bad_update_and_counts_it(image_folder, tmp_path, capsys):
  skipped, clean = str(tmp_path / "skipped"), str(tmp_path / "clean")
  cfg = lambda steps: tiny_config(image_folder, batch_size=4, num_epochs=2, log_every_steps=2,
                                  on_nonfinite="skip", num_train_steps=steps)
  result = train_poisoned(cfg(4), skipped, at_step=3)  # the 4th update is dropped
  assert "1 update(s) skipped" in capsys.readouterr().out
  assert result["train"]["skipped"] == 1 and np.isfinite(result["train"]["loss"])
  experiment.train_and_evaluate(cfg(3), clean)
  a, b = final_state(skipped)[0], final_state(clean)[0]
  assert int(a["step"]) == 4 and int(b["step"]) == 3
  assert_same_state(a["params"], b["params"])
  assert_same_state(a["opt_state"], b["opt_state"])
  # A whole log interval of dropped updates stops the run, without suggesting skip again.
  with pytest.raises(NonFiniteLossError, match="every update of the last log interval") as e:
    train_poisoned(cfg(6), str(tmp_path / "all_bad"), at_step=2, through=3)
  assert "Lower the learning rate or use" in str(e.value) and "on_nonfinite" not in str(e.value)
  with pytest.raises(ConfigError, match="on_nonfinite"):
    experiment.train_and_evaluate(tiny_config(image_folder, on_nonfinite="ignore"),
                                  str(tmp_path / "x"))


def test_resume_refuses_a_changed_model_and_accepts_more_epochs(image_folder, tmp_path):
  workdir = str(tmp_path / "run")
  experiment.train_and_evaluate(tiny_config(image_folder, batch_size=12, num_epochs=1), workdir)
  config_json = open(os.path.join(workdir, "config.json")).read()
  with pytest.raises(ConfigError, match=r"learning_rate: .*model\.nf: 4 \(saved\) -> 8"):
    experiment.train_and_evaluate(
        tiny_config(image_folder, batch_size=12, num_epochs=1, model__nf=8, learning_rate=0.2),
        workdir)
  assert open(os.path.join(workdir, "config.json")).read() == config_json  # nothing written
  assert Checkpointer(workdir).all_steps() == [3]
  # A shrunken dataset would scramble the data order: refused too.
  small = write_image_folder(tmp_path / "small", per_class=(6, 2))
  with pytest.raises(ConfigError, match="steps per epoch"):
    experiment.train_and_evaluate(tiny_config(small, batch_size=12, num_epochs=2), workdir)
  result = experiment.train_and_evaluate(tiny_config(image_folder, batch_size=12, num_epochs=2),
                                         workdir)
  assert result["step"] == 6


def test_a_second_run_on_the_same_workdir_refuses_to_start(image_folder, tmp_path):
  workdir = str(tmp_path / "run")
  os.makedirs(workdir)
  holder = subprocess.Popen(
      [sys.executable, "-c", "import sys, time; from jaxgan.workdir import WorkdirLock\n"
       f"with WorkdirLock({workdir!r}):\n  print('locked', flush=True); time.sleep(600)"],
      cwd=ROOT, stdout=subprocess.PIPE, text=True)
  try:
    assert holder.stdout.readline().strip() == "locked"
    with pytest.raises(WorkdirError, match=rf"another training run .*pid {holder.pid}"):
      experiment.train_and_evaluate(tiny_config(image_folder), workdir)
    assert not os.path.exists(os.path.join(workdir, "config.json"))
  finally:
    holder.kill()  # a killed holder leaves no stale lock behind
    holder.wait()
  assert experiment.train_and_evaluate(tiny_config(image_folder, num_epochs=1), workdir)["step"]


def test_disk_full_while_saving_is_a_clear_error_and_keeps_the_previous_checkpoint(
    image_folder, tmp_path, monkeypatch):
  import orbax.checkpoint as ocp
  workdir = str(tmp_path / "run")
  experiment.train_and_evaluate(tiny_config(image_folder, batch_size=12, num_epochs=1), workdir)
  original = ocp.CheckpointManager.save

  def full_disk(self, step, *args, **kwargs):
    if step == 6:
      raise OSError(errno.ENOSPC, "No space left on device")
    return original(self, step, *args, **kwargs)

  monkeypatch.setattr(ocp.CheckpointManager, "save", full_disk)
  with pytest.raises(WorkdirError,
                     match=r"step 6 .*No space left.*checkpoint of step 3 is intact.*Free disk"):
    experiment.train_and_evaluate(tiny_config(image_folder, batch_size=12, num_epochs=2), workdir)
  monkeypatch.undo()
  state, step = final_state(workdir)
  assert step == 3 and int(state["step"]) == 3


def write_bad_files(folder):
  d = os.path.join(folder, "train", "a")
  open(os.path.join(d, "empty.png"), "wb").close()
  good = open(os.path.join(d, "0000.png"), "rb").read()
  open(os.path.join(d, "truncated.png"), "wb").write(good[:len(good) // 2])
  open(os.path.join(d, "text.jpg"), "w").write("not an image")


def test_unreadable_files_are_skipped_with_a_count_or_stop_the_run(image_folder, tmp_path):
  from jaxgan.data import load_classification_data
  write_bad_files(image_folder)
  with pytest.warns(UserWarning, match="skipped 3 unreadable image file"):
    data = load_classification_data(tiny_config(image_folder))
  assert len(data.images("train")) == 36
  for cache in ("none", str(tmp_path / "cache"), str(tmp_path / "cache")):  # cold, then cached
    with pytest.raises(DatasetError, match=r"3 unreadable image file.*bad_images=skip"):
      load_classification_data(tiny_config(image_folder, bad_images="stop", cache_dir=cache))


def test_wrong_type_on_the_command_line_is_one_readable_line(image_folder, tmp_path):
  out = subprocess.run([sys.executable, "train.py", *TINY, "--config.batch_size=abc",
                        f"--config.dataset={image_folder}", f"--workdir={tmp_path / 'w'}"],
                       cwd=ROOT, capture_output=True, text=True, timeout=120)
  assert out.returncode != 0 and "Traceback" not in out.stderr
  assert "batch_size" in out.stderr and "abc" in out.stderr
  assert not os.path.exists(tmp_path / "w")


def test_images_smaller_than_the_training_size_are_scaled_up(tmp_path):
  from PIL import Image
  from jaxgan.data.folder import read_images
  for i, size in enumerate([(3, 5), (2, 2), (40, 9)]):
    Image.fromarray(np.full((size[1], size[0], 3), 40 * i, np.uint8)).save(tmp_path / f"{i}.png")
  images = read_images(str(tmp_path), 8, None, cache_dir=None)
  assert images.shape == (3, 8, 8, 3)
  np.testing.assert_array_equal(images[1], 40)  # a flat 2x2 image stays flat at 8x8


def test_checkpoints_with_kernels_in_flax_layout_are_converted_as_they_restore(tmp_path,
                                                                               monkeypatch):
  from jaxgan import checkpoint
  rng = np.random.default_rng(0)
  normal = lambda *shape: rng.normal(size=shape).astype(np.float32)
  state = {"params": {"Conv_0": {"kernel": normal(8, 3, 3, 4), "bias": normal(8)},
                      "Dense_0": {"kernel": normal(5, 2)}},
           "opt": {"mu": {"Conv_0": {"kernel": normal(8, 3, 3, 4)}}}, "step": np.int32(7)}
  # As jaxgan wrote them before conv kernels were stored (out, kh, kw, in): flax's
  # (kh, kw, in, out), and no layout in the metadata.
  old = jax.tree_util.tree_map(lambda x: x.transpose(1, 2, 3, 0) if x.ndim == 4 else x, state)
  with monkeypatch.context() as m:
    m.setattr(checkpoint, "KERNEL_LAYOUT", {})
    ckpt = Checkpointer(str(tmp_path / "old"))
    ckpt.save(1, old, {})
    ckpt.close()
  new = Checkpointer(str(tmp_path / "new"))
  new.save(1, state, {})
  new.close()
  target = jax.tree_util.tree_map(np.zeros_like, state)
  for workdir in ("old", "new"):
    ckpt = Checkpointer(str(tmp_path / workdir))
    for restored in (ckpt.restore(target)[0], ckpt.restore(None)[0]):
      got = jax.tree_util.tree_leaves_with_path(restored)
      want = jax.tree_util.tree_leaves_with_path(state)
      assert [p for p, _ in got] == [p for p, _ in want]
      for (_, a), (_, b) in zip(got, want):
        np.testing.assert_array_equal(a, b)
  # A checkpoint that records the layout never takes the old-layout path: a changed model
  # whose kernels, read in the old layout, would have the stored shapes does not fit it.
  permuted = jax.tree_util.tree_map(lambda x: x.transpose(3, 0, 1, 2) if x.ndim == 4 else x,
                                    target)
  with pytest.raises(ConfigError, match="do not fit"):
    Checkpointer(str(tmp_path / "new")).restore(permuted)
