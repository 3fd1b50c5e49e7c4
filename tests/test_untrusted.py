"""evaluate.py and translate.py on folders someone else prepared: a shared workdir is data,
not instructions, and an output folder may hold planted links. Each test plants the real
thing (a config.json naming folders, symbolic links, an unwritable folder) and checks that
nothing outside the folders the user named is written, and that the user gets one clear
error instead of a traceback."""
import contextlib
import json
import os
import shutil
import subprocess
import sys

import jax
import numpy as np
import pytest

from conftest import tiny_config, write_image_folder
from jaxgan import experiment
from jaxgan.errors import ConfigError, WorkdirError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
  """A tiny classifier run (one step) and its dataset folder."""
  root = tmp_path_factory.mktemp("trained")
  data = write_image_folder(root / "data")
  workdir = str(root / "run")
  experiment.train_and_evaluate(tiny_config(data, num_train_steps=1), workdir)
  return workdir, data


def copy_run(trained, dest, **changes):
  """A copy of the trained workdir whose config.json has `changes` (`a__b` sets a.b)."""
  shutil.copytree(trained[0], dest)
  path = os.path.join(dest, "config.json")
  with open(path) as f:
    config = json.load(f)
  for key, value in changes.items():
    *parents, leaf = key.split("__")
    node = config
    for p in parents:
      node = node[p]
    node[leaf] = value
  with open(path, "w") as f:
    json.dump(config, f)
  return str(dest)


def test_settings_that_reach_outside_the_workdir_are_not_taken_from_its_config(trained,
                                                                                tmp_path):
  """XLA reads its flags once per process, so evaluate.py runs as a user starts it."""
  dump, cache, decoded = (tmp_path / name for name in ("dump", "planted_xla", "planted_decoded"))
  workdir = copy_run(trained, tmp_path / "run", xla_flags=f"--xla_dump_to={dump}",
                     compilation_cache=str(cache), cache_dir=str(decoded))
  env = {k: v for k, v in os.environ.items() if k != "JAX_COMPILATION_CACHE_DIR"}
  env["JAXGAN_CACHE_DIR"] = str(tmp_path / "users_own_cache")  # where jaxgan's own caches go
  out = subprocess.run([sys.executable, "evaluate.py", f"--workdir={workdir}", "--num_devices=1"],
                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
  assert out.returncode == 0, out.stderr
  # --xla_dump_to would have written the compiled programs there; the cache folder would have
  # been made and filled (and its entries loaded back as programs); decoded images cached.
  assert not dump.exists() and not cache.exists() and not decoded.exists()
  assert os.path.exists(os.path.join(workdir, "eval.json"))
  assert (tmp_path / "users_own_cache" / "xla").is_dir()
  notes = [line for line in out.stderr.splitlines() if line.startswith("note:")]
  assert len(notes) == 1, out.stderr
  for flag in (f"--xla_flags=--xla_dump_to={dump}", f"--compilation_cache={cache}",
               f"--cache_dir={decoded}"):
    assert flag in notes[0]


def weights_file(path, seed=0):
  """A small generator in the reference repository's state-dict layout (as an .npz)."""
  from jaxgan.models.cyclegan import ResnetGenerator, _reference_keys
  template = jax.eval_shape(ResnetGenerator(4, 1, 3).init, jax.random.PRNGKey(0),
                            np.zeros((1, 32, 32, 3), np.float32))["params"]
  rng, state = np.random.default_rng(seed), {}
  for prefix, where in _reference_keys(1, 5).items():
    node = template
    for name in where.split("/"):
      node = node[name]
    out, kh, kw, inp = node["kernel"].shape
    state[f"{prefix}.weight"] = rng.normal(0, 0.05, (out, inp, kh, kw)).astype(np.float32)
    state[f"{prefix}.bias"] = np.zeros(node["bias"].shape, np.float32)
  np.savez(path, **state)
  return str(path)


def photos(root, names):
  from PIL import Image
  rng = np.random.default_rng(1)
  for name in names:
    os.makedirs(os.path.dirname(os.path.join(root, name)), exist_ok=True)
    Image.fromarray(rng.integers(0, 256, (12, 16, 3), dtype=np.uint8)).save(
        os.path.join(root, name), format="PNG" if name.endswith(".png") else "JPEG")
  return str(root)


def tree(root):
  return sorted(os.path.relpath(os.path.join(d, f), root) for d, _, fs in os.walk(root) for f in fs)


def test_translate_never_writes_through_links_planted_in_the_output(tmp_path):
  weights = weights_file(tmp_path / "G.npz")
  inp = photos(tmp_path / "in", ["a.png", "sub/b.png"])
  original = (tmp_path / "in" / "a.png").read_bytes()
  out, outside, victim = tmp_path / "out", tmp_path / "outside", tmp_path / "victim.png"
  out.mkdir()
  outside.mkdir()
  victim.write_bytes(b"someone else's file")
  # A link to an original at the temporary name translate.py used to write through.
  os.symlink(tmp_path / "in" / "a.png", out / "a.png.tmp.png")
  result = experiment.translate(inp, str(out), weights=weights)
  assert result["written"] == 2 and (tmp_path / "in" / "a.png").read_bytes() == original
  assert not os.path.islink(out / "a.png") and os.path.islink(out / "a.png.tmp.png")
  # A link at an output's name, and a subfolder link that leads out of --output: refused
  # before anything is translated.
  for name, target in (("a.png", victim), ("sub", outside)):
    shutil.rmtree(out / name) if name == "sub" else os.remove(out / name)
    os.symlink(target, out / name)
    with pytest.raises(WorkdirError, match=rf"out/{name} is a symbolic link.*never writes"):
      experiment.translate(inp, str(out), weights=weights)
    os.remove(out / name)
  assert victim.read_bytes() == b"someone else's file" and os.listdir(outside) == []
  # Should a link appear after that check, the write itself refuses it.
  from jaxgan.images import png_writer, write_file
  os.symlink(outside, out / "sub")
  with pytest.raises(WorkdirError, match="symbolic link"):
    write_file(str(out), "sub/b.png", png_writer(np.zeros((2, 2, 3), np.uint8)))
  assert os.listdir(outside) == [] and tree(tmp_path / "in") == ["a.png", "sub/b.png"]


def test_output_names_that_are_folders(tmp_path):
  weights = weights_file(tmp_path / "G.npz")
  # An input file beside an input folder of its output's name: the file keeps its extension.
  inp = photos(tmp_path / "in", ["x.jpg", "x.png/y.jpg"])
  result = experiment.translate(inp, str(tmp_path / "out"), weights=weights)
  assert result["written"] == 2 and tree(tmp_path / "out") == ["x.jpg.png", "x.png/y.png"]
  # A folder in --output where a translation goes: one clear error, nothing translated.
  inp = photos(tmp_path / "in2", ["x.jpg"])
  (tmp_path / "out2" / "x.png").mkdir(parents=True)
  with pytest.raises(WorkdirError, match=r"out2/x.png is a folder, where jaxgan would write"):
    experiment.translate(inp, str(tmp_path / "out2"), weights=weights)


@contextlib.contextmanager
def unwritable(folder):
  """`folder` refuses new files: read-only for a user; immutable (chattr +i) for root, whom
  permissions do not stop."""
  root = os.geteuid() == 0
  if root and subprocess.run(["chattr", "+i", folder], capture_output=True).returncode:
    pytest.skip("running as root where chattr +i is unavailable: cannot make a folder unwritable")
  if not root:
    os.chmod(folder, 0o555)
  try:
    if os.access(folder, os.W_OK) and not root:
      pytest.skip("this file system ignores the folder's permissions")
    yield
  finally:
    if root:
      subprocess.run(["chattr", "-i", folder], check=True)
    else:
      os.chmod(folder, 0o755)


def test_evaluate_outputs_a_link_and_an_unwritable_workdir(trained, tmp_path, monkeypatch, capsys):
  workdir = copy_run(trained, tmp_path / "run")
  victim = tmp_path / "someone_elses_file"
  victim.write_text("precious")
  os.symlink(victim, os.path.join(workdir, "eval.json"))
  with pytest.raises(WorkdirError, match=r"eval.json is a symbolic link"):
    experiment.evaluate(workdir, num_devices=1)
  assert victim.read_text() == "precious"
  os.remove(os.path.join(workdir, "eval.json"))
  # Unwritable from the start: refused before any work, saying what to do.
  with unwritable(workdir):
    with pytest.raises(WorkdirError, match=r"cannot write to .*run .*evaluate a copy"):
      experiment.evaluate(workdir, num_devices=1)
  # Unwritable by the time the results are saved: they are still returned (and printed).
  import jaxgan.checkpoint
  restore = jaxgan.checkpoint.restore_latest
  with contextlib.ExitStack() as stack:
    def restore_then_lock(*args, **kwargs):
      restored = restore(*args, **kwargs)
      stack.enter_context(unwritable(workdir))
      return restored
    monkeypatch.setattr(jaxgan.checkpoint, "restore_latest", restore_then_lock)
    result = experiment.evaluate(workdir, num_devices=1)
  assert result["not_written"] == ["eval.json"] and result["num_examples"] == 12
  assert "warning: could not write" in capsys.readouterr().err
  assert not os.path.exists(os.path.join(workdir, "eval.json"))


def test_edited_config_and_foreign_checkpoints_are_clear_errors(trained, tmp_path):
  cases = [({"task": "wgan"}, ConfigError, r"config.json has no field 'loss', which a wgan run"),
           ({"image_size": "8"}, ConfigError, r"config.json: field 'image_size' is '8' \(a string"),
           ({"model": "big"}, ConfigError, r"field 'model' is 'big' .* a group of fields"),
           ({"task": 3}, ConfigError, r"field 'task' is 3; jaxgan's tasks are")]
  for i, (changes, error, message) in enumerate(cases):
    with pytest.raises(error, match=message):
      experiment.evaluate(copy_run(trained, tmp_path / str(i), **changes), num_devices=1)
  # Checkpoints of another kind of run (a GAN's state, no classifier statistics).
  from jaxgan.checkpoint import Checkpointer
  workdir = copy_run(trained, tmp_path / "foreign")
  shutil.rmtree(os.path.join(workdir, "checkpoints"))
  ckpt = Checkpointer(workdir)
  ckpt.save(1, {"g_params": {"w": np.zeros(3, np.float32)}}, {"num_a": 4})
  ckpt.close()
  with pytest.raises(WorkdirError, match=r"hold no input statistics .* another kind of run"):
    experiment.evaluate(workdir, num_devices=1)


def test_num_samples_is_bounded_by_memory(tmp_path):
  from jaxgan.configs import wgan_cifar10
  (tmp_path / "config.json").write_text(wgan_cifar10.get_config().to_json())
  with pytest.raises(ConfigError, match=r"--num_samples=1,000,000,000 needs about .* GiB of "
                                        r"memory .* use at most [\d,]+ here"):
    experiment.evaluate(str(tmp_path), num_samples=10 ** 9, num_devices=1)
  from jaxgan import wgan
  wgan.check_evaluation(wgan_cifar10.get_config(), num_samples=5_000)  # ~1 GiB: it passes
