"""Installing jaxgan anywhere: pyproject's extras and Python bound, constraints.txt, LICENSE,
and the one-line warning when an accelerator goes unused."""
import hashlib
import importlib.metadata
import os
import re
import sys
import tomllib

import jax
import pytest
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name

from jaxgan import parallel

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
  PROJECT = tomllib.load(f)["project"]


def read(name: str) -> str:
  with open(os.path.join(ROOT, name)) as f:
    return f.read()


def constraints() -> dict:
  """{normalised name: version} of constraints.txt, every line `name==version`."""
  pins = {}
  for line in read("constraints.txt").splitlines():
    line = line.strip()
    if line and not line.startswith("#"):
      name, sep, version = line.partition("==")
      assert sep and re.fullmatch(r"[\w.+-]+", version), f"not an exact pin: {line!r}"
      assert canonicalize_name(name) not in pins, f"pinned twice: {name}"
      pins[canonicalize_name(name)] = version
  return pins


def test_accelerator_extras_are_jaxs_own_extras_of_the_installed_jax():
  extras = PROJECT["optional-dependencies"]
  jax_extras = set(importlib.metadata.metadata("jax").get_all("Provides-Extra"))
  for extra, jax_extra in (("cuda12", "cuda12"), ("cuda13", "cuda13"), ("tpu", "tpu"),
                           ("gpu-aot", "cuda12-local")):
    (requirement,) = map(Requirement, extras[extra])
    assert requirement.name == "jax" and requirement.extras == {jax_extra}, extra
    assert not requirement.specifier, f"{extra}: the installed jax decides the version"
    assert jax_extra in jax_extras, f"jax {jax.__version__} has no extra {jax_extra!r}"
  (viewer,) = map(Requirement, extras["tensorboard"])
  assert viewer.name == "tensorboard"
  readme = read("README.md")
  install = readme[readme.index("## Install"):readme.index("\n## ", readme.index("## Install") + 1)]
  for extra in ("cuda12", "cuda13", "tpu", "tensorboard", "test", "torch", "gpu-aot"):
    assert extra in install, f"README's Install section does not name the {extra} extra"
  assert "-c constraints.txt" in install


def test_requires_python_is_3_11_and_this_interpreter_meets_it():
  required = SpecifierSet(PROJECT["requires-python"])
  assert "3.11.0" in required and "3.10.14" not in required
  assert ".".join(map(str, sys.version_info[:3])) in required
  assert "Python 3.11 or newer" in read("README.md")


def test_constraints_pin_every_dependency_within_pyprojects_bounds():
  pins = constraints()
  requirements = [Requirement(r) for r in
                  PROJECT["dependencies"] + PROJECT["optional-dependencies"]["test"]]
  for requirement in requirements:
    if requirement.marker and not requirement.marker.evaluate():
      continue  # e.g. `tensorflow` off Linux x86-64, where constraints.txt has tensorflow-cpu
    name = canonicalize_name(requirement.name)
    assert name in pins, f"constraints.txt does not pin {requirement.name}"
    assert requirement.specifier.contains(pins[name], prereleases=True), (
        f"constraints.txt pins {requirement.name}=={pins[name]}, outside pyproject's "
        f"{requirement.specifier}: regenerate it (see its header)")
  # CI installs a local CPU wheel of torch, which a pin would conflict with.
  assert "torch" not in pins
  # Every pip install of jaxgan in CI uses the constraints.
  installs = [l for l in read(".ci/run").splitlines() if re.match(r"\s*pip install .*-e ", l)]
  assert len(installs) == 2 and all("-c constraints.txt" in l for l in installs)


def test_license_is_the_apache_2_0_text():
  assert PROJECT["license"] == "Apache-2.0"
  text = read("LICENSE")
  assert text.lstrip().startswith("Apache License\n                           Version 2.0, "
                                  "January 2004")
  assert "END OF TERMS AND CONDITIONS" in text
  assert text.rstrip().endswith("limitations under the License.")
  # The text of https://www.apache.org/licenses/LICENSE-2.0.txt, byte for byte.
  assert hashlib.sha256(text.encode()).hexdigest() == (
      "cfc7749b96f63bd31c3c42b5c471bf756814053e847c10f3eb003417bc523d30")


@pytest.fixture
def unchecked(monkeypatch):
  """A process that has not checked for an unused accelerator yet, with JAX_PLATFORMS unset
  (conftest sets it to cpu, which silences the check)."""
  monkeypatch.setattr(parallel, "_accelerator_checked", False)
  platforms = jax.config.jax_platforms
  jax.config.update("jax_platforms", None)
  yield
  jax.config.update("jax_platforms", platforms)


def test_an_unused_gpu_is_reported_once(unchecked, tmp_path, monkeypatch, capsys):
  device = tmp_path / "nvidia0"
  device.write_bytes(b"")
  monkeypatch.setattr(parallel, "ACCELERATOR_PROBES", (
      (str(tmp_path / "absent"), "a TPU"), (str(device), "an NVIDIA GPU")))
  parallel.local_devices()
  parallel.local_devices(1)
  err = capsys.readouterr().err
  line = (f"warning: this machine has an NVIDIA GPU ({device}) but JAX sees only the CPU, so "
          "it runs on the CPU. Install JAX's CUDA build: pip install -e \".[cuda12]\", or "
          "\".[cuda13]\" for CUDA 13 drivers (see README, Install).\n")
  assert err.count("warning:") == 1 and line in err


def test_no_warning_without_an_accelerator_or_with_jax_platforms_set(unchecked, tmp_path,
                                                                     monkeypatch, capsys):
  monkeypatch.setattr(parallel, "ACCELERATOR_PROBES", ((str(tmp_path / "nvidia0"),
                                                        "an NVIDIA GPU"),))
  parallel.local_devices()
  (tmp_path / "nvidia0").write_bytes(b"")
  assert parallel.warn_if_accelerator_unused() is None  # checked once per process
  monkeypatch.setattr(parallel, "_accelerator_checked", False)
  jax.config.update("jax_platforms", "cpu")  # the CPU asked for on purpose
  parallel.local_devices()
  assert "warning" not in capsys.readouterr().err
