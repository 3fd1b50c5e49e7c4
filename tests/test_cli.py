"""train.py and evaluate.py as a user runs them."""
import json
import os
import re
import subprocess
import sys

import pytest

from conftest import TINY_CLI

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = TINY_CLI + ["--config.batch_size=8", "--config.num_epochs=1"]


def run(*args):
  return subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True,
                        timeout=300)


def test_train_then_evaluate_from_the_command_line(image_folder, tmp_path):
  workdir, dump = str(tmp_path / "run"), tmp_path / "xla_dump"
  out = run("train.py", *TINY, f"--config.dataset={image_folder}", "--config.seed=3",
            "--config.weight_decay=0.0005", "--config.learning_rate=0.1", f"--workdir={workdir}",
            "--config.eval_subset=5",
            f"--config.xla_flags=--xla_dump_to={dump}")
  assert out.returncode == 0, out.stderr
  assert "final eval: loss" in out.stdout
  # XLA got --config.xla_flags: it dumped the programs it compiled.
  assert any(name.startswith("module_") for name in os.listdir(dump))
  with open(os.path.join(workdir, "config.json")) as f:
    saved = json.load(f)
  # The overrides reached the run.
  assert saved["model"]["num_blocks"] == [1] and saved["seed"] == 3
  assert saved["weight_decay"] == 0.0005 and saved["learning_rate"] == 0.1
  assert os.listdir(os.path.join(workdir, "checkpoints")) == ["4"]

  out = run("evaluate.py", f"--workdir={workdir}", "--num_devices=1")
  assert out.returncode == 0, out.stderr
  assert "with flip TTA" in out.stdout and " a " in out.stdout.replace("\n", " ")
  with open(os.path.join(workdir, "eval.json")) as f:
    assert json.load(f)["num_examples"] == 12  # every test image, not training's eval_subset
  out = run("evaluate.py", f"--workdir={workdir}", "--num_devices=1", "--eval_subset=6",
            "--name=first6")
  assert out.returncode == 0, out.stderr
  assert "(test, 6 images)" in out.stdout and "eval_first6.json" in out.stdout
  # A named evaluation is kept beside the first one, which it leaves alone.
  for name, count in (("eval.json", 12), ("eval_first6.json", 6)):
    with open(os.path.join(workdir, name)) as f:
      saved = json.load(f)
    assert saved["num_examples"] == count and saved["eval_json"] == os.path.join(workdir, name)
  # Where the time went: measured, compiling a part of it.
  assert re.search(r"^took \d+ s, \d+ s of it compiling$", out.stdout, re.M)
  assert 0 < saved["seconds"]["compiling"] <= saved["seconds"]["total"]


@pytest.mark.parametrize("override,message", [
    ("--config.batch_size=64", "batch_size=64 is larger than the 36 training images"),
    ("--config.learning_rate=-1", "learning_rate must be positive"),
    ("--config.dataset=/nonexistent/cifar", "does not exist"),
    ("--config.augment.pad_mode=wrap", "pad_mode must be one of"),
    ("--config.xla_flags=xla_gpu_graph_min_graph_size=1", "is not an XLA flag"),
    ("--config.model.nf=0", r"model.nf must be a whole number >= 1, got 0"),
    ("--config.model.num_blocks=(1,x)", r"model.num_blocks must be whole numbers >= 0"),
    ("--config.train_subset=-7", r"train_subset must be -1 \(all images\) or >= 1"),
    ("--config.eval_every_epochs=-1", "eval_every_epochs must be >= 0"),
    ("--config.batch_size=abc", r"flag --config.batch_size=abc: invalid literal .* --helpshort"),
    ("--config=configs/nonexistent.py", r"--config: \[Errno 2\] No such file or directory: "
                                        r"'configs/nonexistent.py'. Give a recipe file"),
])
def test_user_errors_print_a_message_not_a_traceback(image_folder, tmp_path, override, message):
  out = run("train.py", *TINY, f"--config.dataset={image_folder}", override,
            f"--workdir={tmp_path / 'run'}")
  assert out.returncode == 2
  assert re.search(message, out.stderr), out.stderr
  assert "Traceback" not in out.stderr


def test_unknown_config_field_is_named(tmp_path):
  out = run("train.py", *TINY, "--config.modle.nf=8", f"--workdir={tmp_path / 'run'}")
  assert out.returncode == 2
  assert "--config.modle.nf is not a field of this config" in out.stderr, out.stderr
  assert "Traceback" not in out.stderr


def test_evaluate_on_a_non_workdir_is_a_clear_error(tmp_path):
  out = run("evaluate.py", f"--workdir={tmp_path}")
  assert out.returncode == 2 and "no config.json" in out.stderr


# What C++ libraries print before absl's logging starts (glog lines dated 0000 00:00).
_CXX_STARTUP = re.compile(r"WARNING: All log messages before absl::InitializeLog|I0000 00:00:")


def test_evaluate_and_translate_errors_are_one_paragraph(tmp_path):
  """A workdir whose run never saved, a damaged config.json, bad flag values."""
  from jaxgan.configs import cyclegan_horse2zebra, tiny_darknet
  never_saved, cyclegan, damaged = (tmp_path / n for n in ("never_saved", "cyclegan", "damaged"))
  for workdir, config in ((never_saved, tiny_darknet), (cyclegan, cyclegan_horse2zebra)):
    workdir.mkdir()
    (workdir / "config.json").write_text(config.get_config().to_json())
  damaged.mkdir()
  (damaged / "config.json").write_text('{"task": "classifier", ')
  images = tmp_path / "images"
  images.mkdir()
  from PIL import Image
  Image.new("RGB", (8, 8)).save(images / "a.png")
  cases = [
      (["evaluate.py", f"--workdir={never_saved}"], "no checkpoint under"),
      (["translate.py", f"--workdir={cyclegan}", f"--input={images}", f"--output={tmp_path}/o"],
       "no checkpoint under"),
      (["evaluate.py", f"--workdir={damaged}"], "config.json cannot be read as a config"),
      (["evaluate.py", f"--workdir={never_saved}", "--num_devices=64"], "--num_devices: "),
      (["evaluate.py", f"--workdir={never_saved}", "--num_samples=1"], "--num_samples must be"),
      (["evaluate.py", f"--workdir={never_saved}", "--batch_size=0"], "--batch_size must be"),
      (["evaluate.py", f"--workdir={never_saved}", "--eval_subset=-3"], "--eval_subset must be"),
  ]
  for args, message in cases:
    out = run(*args)
    assert out.returncode == 2, (args, out.stderr)
    # The message, then nothing else: no traceback from a background thread either. (Where
    # JAX's CUDA plugin is installed, its C++ start-up lines come first: not ours to silence.)
    lines = [line for line in out.stderr.strip().splitlines() if not _CXX_STARTUP.match(line)]
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], (
        args, out.stderr)
  assert not os.path.exists(tmp_path / "o")  # translate failed before writing anything
