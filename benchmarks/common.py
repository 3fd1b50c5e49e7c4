"""What several benchmark scripts share: the presets (a recipe's config on fake data, built
into a task), the machine's description, phase timing, FLOP rates and JSON output, and the
command-line checks of a preset's config overrides (`--set`).

No PyTorch here (torch_reference.py holds the PyTorch side), so that the JAX-only scripts
run where it is not installed.
"""
import argparse
import difflib
import importlib
import json
import os
import platform
import sys
import time

import flax
import jax
import jaxlib
import optax

from jaxgan import parallel
from jaxgan.experiment import build_task, validate_config

# preset: (config module, model overrides, first timed step)
PRESETS = {
    "darknet": ("darknet_cifar10", dict(num_blocks=(1, 2, 4, 6, 3), nf=32), 0),
    "small": ("darknet_cifar10", dict(num_blocks=(1, 1), nf=16), 0),
    "wrn22": ("wrn22_cifar10", {}, 0),
    # WGAN steps past the 100-critic-step warm-up, where iterations have 5 critic steps.
    "wgan64": ("wgan_lsun_bedroom", {}, 26),
    "wgan32": ("wgan_cifar10", {}, 26),
    # The reference CycleGAN: two 9-block generators, two PatchGANs, 256x256 crops of 286.
    "cyclegan": ("cyclegan_horse2zebra", {}, 0),
    # configs/cifar10_fast.py's whole step (FastNet, groups, smoothing, flips, averaging).
    "fastnet": ("cifar10_fast", {}, 0),
}

# Dense (no sparsity) peak TFLOP/s per device, from NVIDIA's data sheets. First match of a
# substring of the device kind wins, so specific names come first. "tf32" is the tensor-core
# rate XLA's default precision gives float32 convolutions and matmuls on Ampere and newer.
PEAK_TFLOPS = (
    ("H100 PCIe", {"bfloat16": 756.0, "tf32": 378.0, "float32": 51.2}),
    ("H100 NVL", {"bfloat16": 835.0, "tf32": 417.5, "float32": 60.0}),
    ("H100", {"bfloat16": 989.0, "tf32": 494.7, "float32": 66.9}),  # SXM
    ("H200", {"bfloat16": 989.0, "tf32": 494.7, "float32": 66.9}),  # H100 SXM's compute
    ("A100", {"bfloat16": 312.0, "tf32": 156.0, "float32": 19.5}),
    # V100 has float16 tensor cores (125) but none for bfloat16 or TF32.
    ("V100", {"float16": 125.0, "bfloat16": 15.7, "float32": 15.7}),
)


# ---- presets -------------------------------------------------------------------------------------
def config_for(preset, batch_size, dtype, num_devices, overrides=()):
  """A preset's config on fake data; `overrides`: "field.path=<JSON value>" strings."""
  module, model, _ = PRESETS[preset]
  config = importlib.import_module(f"jaxgan.configs.{module}").get_config()
  config.model.update(model)
  config.dataset = "fake"
  config.train_subset = max(16 * batch_size, 2048 if config.get("task") != "cyclegan" else 64)
  if "eval_subset" in config:
    config.eval_subset = 64
  config.batch_size = batch_size
  config.dtype = dtype
  config.num_devices = num_devices
  config.lock()  # an override must name a field of the preset, not add one no step reads
  for override in overrides:
    key, value = override.split("=", 1)
    value = json.loads(value)
    config.update_from_flattened_dict({key: tuple(value) if isinstance(value, list) else value})
  config.unlock()
  return config


def build_preset(preset, batch_size, dtype, num_devices, phase=lambda name: None, overrides=()):
  """(task, devices, fresh state not yet replicated, pmapped step) of a preset."""
  config = config_for(preset, batch_size, dtype, num_devices, overrides)
  devices = parallel.local_devices(num_devices)
  validate_config(config, len(devices))  # a --set value that cannot work, named
  task = build_task(config, devices)
  phase("data and model")
  state = task.init_state(jax.random.PRNGKey(0))
  jax.block_until_ready(state)
  phase("initialisation")
  return task, devices, state, task.compile_step(devices)


def override_problem(overrides, preset: str, flag_fields: dict, xla_hint: str) -> str | None:
  """What is wrong with config_for's "field=<JSON>" overrides of `preset`, for a script's
  --set; None if nothing. XLA's flags cannot be one: the benchmarks start JAX before they read
  a config. Nor can the fields the script sets from its flags (`flag_fields`: field -> fix)."""
  for override in overrides:
    key, _, value = override.partition("=")
    if key == "xla_flags":
      return f"--set xla_flags: JAX starts before the config is read here; {xla_hint}"
    if key in flag_fields:
      return f"--set {key}: this script sets it; {flag_fields[key]}"
    problem = field_problem(key, preset)
    if problem:
      return problem
    try:
      json.loads(value)
    except json.JSONDecodeError:
      return f"--set {override}: the value after '=' must be JSON, e.g. {key}=true"
    try:
      config_for(preset, 1, "float32", -1, [override])
    except TypeError as e:  # ml_collections: a value of another type than the field's
      return f"--set {override}: {e}"
  return None


def field_problem(key: str, preset: str) -> str | None:
  """Why the dotted `key` names no field of `preset`'s config (None if it does): a misspelt
  key would otherwise be recorded in the row while the default step is timed."""
  parts = key.split(".")
  path, node = walk(preset, parts)
  if len(path) == len(parts):
    return None
  where = f"--set {key}: the config of --preset {preset}"
  if not hasattr(node, "keys"):
    return f"{where} has {'.'.join(path)} as a value, not a group of fields"
  missing = parts[len(path)]
  close = difflib.get_close_matches(missing, list(node.keys()), n=3)
  hint = f"; did you mean {' or '.join('.'.join(path + [c]) for c in close)}?" if close else ""
  others = [p for p in sorted(PRESETS) if len(walk(p, parts)[0]) == len(parts)]
  elsewhere = f" (presets that have it: {', '.join(others)})" if others else ""
  return f"{where} has no field {'.'.join(path + [missing])}{hint}{elsewhere}"


def walk(preset: str, parts: list):
  """(the leading `parts` of a dotted key that `preset`'s config has, the value at the last)."""
  node, path = config_for(preset, 1, "float32", -1), []
  for part in parts:
    if not hasattr(node, "keys") or part not in node:
      break
    node, path = node[part], path + [part]
  return path, node


# ---- measuring -----------------------------------------------------------------------------------
class Phases:
  """Prints each phase of a measurement to stderr as it ends, so that a run stopped by a
  timeout still shows where its time went (a whole row prints only at the end)."""

  def __init__(self, label):
    self.label, self.t = label, time.perf_counter()

  def __call__(self, phase):
    now = time.perf_counter()
    print(f"  [{self.label}] {phase}: {now - self.t:.1f} s", file=sys.stderr, flush=True)
    self.t = now


def peak_tflops(device_kind: str, dtype: str):
  """Peak dense TFLOP/s of one device of this kind for `dtype` (TF32 for float32 where the
  GPU has it); None when the kind is not in `PEAK_TFLOPS` (CPUs, unknown accelerators)."""
  for name, peaks in PEAK_TFLOPS:
    if name.lower() in device_kind.lower():
      return peaks.get("tf32" if dtype == "float32" else dtype, peaks.get("float32"))
  return None


def add_flop_rates(row, flops, peak_per_device):
  """TFLOP/s and MFU of a measured row given FLOPs per step and the peak per device."""
  row["flops_per_step"] = flops
  if not flops:
    return row
  rate = flops * 1000 / row["step_ms"]
  row["tflops_per_s"] = round(rate / 1e12, 3)
  if peak_per_device:
    row["peak_tflops_per_device"] = peak_per_device
    row["mfu"] = round(rate / (peak_per_device * 1e12 * row["devices"]), 4)
  return row


# ---- reporting -----------------------------------------------------------------------------------
def machine() -> dict:
  """The device, the software versions and the settings that decide the numbers; starts
  JAX's backend (set XLA_FLAGS before)."""
  d = jax.local_devices()[0]
  return {"platform": d.platform, "device_kind": d.device_kind,
          "local_devices": jax.local_device_count(),
          "cpu": platform.processor() or platform.machine(), "cpu_count": os.cpu_count(),
          "python": platform.python_version(), "jax": jax.__version__,
          "jaxlib": jaxlib.__version__, "flax": flax.__version__, "optax": optax.__version__,
          # What else decides the numbers: XLA's flags, and a compilation cache (warm compiles)
          # that only a JAX_COMPILATION_CACHE_DIR set by the caller would give.
          "xla_flags": os.environ.get("XLA_FLAGS", ""),
          "compilation_cache": jax.config.jax_compilation_cache_dir}


def print_machine(info: dict) -> None:
  print("machine: " + ", ".join(f"{k}={v}" for k, v in info.items()), flush=True)


def write_json(path: str, data, **kwargs) -> None:
  """`data` as indented JSON at `path` (`kwargs`: json.dump's)."""
  with open(path, "w") as f:
    json.dump(data, f, indent=2, **kwargs)


class ArgumentParser(argparse.ArgumentParser):
  """argparse's, printing a bad flag as the CLIs print a user error: one line, exit 2."""

  def error(self, message):
    self.exit(2, f"error: {message}\n")
