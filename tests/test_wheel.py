"""jaxgan as pip installs it from a wheel, used outside the checkout: the commands, a recipe
by name, and the Python API example of docs/api.md."""
import glob
import os
import re
import site
import subprocess
import sys

import pytest

from conftest import TINY_CLI

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# tiny_darknet by name, shrunk as the other CLI tests shrink it (TINY_CLI less its --config).
TINY_BY_NAME = ["--config", "tiny_darknet", *TINY_CLI[2:], "--config.batch_size=8",
                "--config.num_epochs=1"]


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
  """A fresh venv outside the checkout with the wheel built from it installed. Its
  dependencies come from this interpreter's site-packages (a .pth line), whose own jaxgan (an
  editable install of the checkout) is never imported there: .pth files of a folder added
  that way are not run."""
  pytest.importorskip("setuptools", minversion="77")
  base = tmp_path_factory.mktemp("wheel")
  dist, venv = base / "dist", base / "venv"
  build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                          "-q", "-w", str(dist), ROOT], capture_output=True, text=True, timeout=300)
  assert build.returncode == 0, build.stderr
  subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
  python = str(venv / "bin" / "python")
  purelib = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                           capture_output=True, text=True, check=True).stdout.strip()
  with open(os.path.join(purelib, "dependencies.pth"), "w") as f:
    f.write("\n".join(site.getsitepackages()) + "\n")
  (wheel,) = glob.glob(str(dist / "jaxgan-*.whl"))
  install = subprocess.run([sys.executable, "-m", "pip", "--python", python, "install", "-q",
                            "--no-deps", "--no-index", wheel], capture_output=True, text=True,
                           timeout=300)
  assert install.returncode == 0, install.stderr
  return venv


def run_in(venv, cwd, *args):
  env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
  return subprocess.run([str(venv / "bin" / args[0]), *args[1:]], cwd=cwd, env=env,
                        capture_output=True, text=True, timeout=300)


def test_the_wheel_holds_the_package_its_recipes_and_commands(installed, tmp_path):
  out = run_in(installed, tmp_path, "python", "-c",
               "import jaxgan, jaxgan.configs as c; print(jaxgan.__file__); print(c.names())")
  assert out.returncode == 0, out.stderr
  where, names = out.stdout.splitlines()
  assert where.startswith(str(installed)) and not where.startswith(ROOT)
  assert "'tiny_darknet'" in names and "'cyclegan_horse2zebra'" in names and "common" not in names
  for command in ("jaxgan-train", "jaxgan-evaluate", "jaxgan-translate"):
    out = run_in(installed, tmp_path, command, "--helpshort")  # absl's help exits with 1
    assert f"{command} --" in out.stdout and "  --workdir:" in out.stdout, (command, out.stderr)


def test_installed_commands_train_a_recipe_by_name_and_evaluate_it(installed, image_folder,
                                                                   tmp_path):
  workdir = str(tmp_path / "run")
  out = run_in(installed, tmp_path, "jaxgan-train", *TINY_BY_NAME,
               f"--config.dataset={image_folder}", f"--workdir={workdir}")
  assert out.returncode == 0, out.stderr
  assert "final eval: loss" in out.stdout
  out = run_in(installed, tmp_path, "jaxgan-evaluate", f"--workdir={workdir}", "--num_devices=1")
  assert out.returncode == 0, out.stderr
  assert re.search(r"accuracy \d\.\d{4}  with flip TTA", out.stdout)
  assert os.path.exists(os.path.join(workdir, "eval.json"))


def test_the_python_api_example_runs_outside_the_checkout(installed, image_folder, tmp_path):
  with open(os.path.join(ROOT, "docs", "api.md")) as f:
    (example,) = re.findall(r"```python\n(.*?)```", f.read(), re.S)
  assert "/path/to/cifar10" in example
  shrink = ("\nconfig.num_devices = 1; config.image_size = 8; config.augment.pad = 2\n"
            "config.model.num_blocks = (1,); config.model.nf = 4; config.batch_size = 8\n"
            "config.eval_batch_size = 8; config.train_subset = config.eval_subset = -1\n"
            "config.cache_dir = 'none'\n")
  example = example.replace("/path/to/cifar10", str(image_folder)).replace(
      "config.progress_bar = False\n", "config.progress_bar = False\n" + shrink)
  out = run_in(installed, tmp_path, "python", "-c", example)
  assert out.returncode == 0, out.stderr
  assert re.search(r"^step \d+: test accuracy \d\.\d{3}$", out.stdout, re.M), out.stdout
  assert os.path.exists(tmp_path / "runs" / "from_python" / "eval.json")
