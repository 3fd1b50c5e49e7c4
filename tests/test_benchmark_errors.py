"""The benchmark scripts' user errors: one line `error: ...`, exit status 2, no traceback,
before anything is measured (nothing here compiles a step)."""
import json
import os
import subprocess
import sys

import pytest

from benchmarks import common, compare_runs, gpu_kernels
from benchmarks import train_throughput as tt

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = ["--config", "configs/tiny_darknet.py"]


def exits_with(capsys, call, *argv) -> str:
  """The one line `call(argv)` prints to stderr as it exits with status 2."""
  with pytest.raises(SystemExit) as exit_:
    call(list(argv))
  err = capsys.readouterr().err
  assert exit_.value.code == 2, err
  assert err.startswith("error: ") and err.count("\n") == 1, err
  return err


@pytest.mark.parametrize("override,message", [
    # A key the preset's config lacks would be recorded in the row while the default step runs.
    ("stack_networks=true", "--preset small has no field stack_networks (presets that have "
                            "it: cyclegan)"),
    ("bogus=1", "--preset small has no field bogus"),
    ("model.nff=3", "no field model.nff; did you mean model.nf?"),
    ("model.nf.x=1", "has model.nf as a value, not a group of fields"),
    # Fields the script sets from its own flags, which the row records.
    ("batch_size=8", "use --batch_sizes"),
    ("dtype=\"float32\"", "use --dtypes"),
    ('model.nf="x"', "--set model.nf=\"x\": Could not override field 'nf'"),
])
def test_throughput_set_takes_only_fields_of_the_preset(capsys, override, message):
  err = exits_with(capsys, tt.parse_args, "--preset", "small", "--torch", "off", "--set", override)
  assert message in err


def test_gpu_kernels_set_takes_only_fields_of_the_preset(capsys):
  err = exits_with(capsys, gpu_kernels.main, "--preset", "small", "--set", "model.nff=3")
  assert "did you mean model.nf?" in err
  err = exits_with(capsys, gpu_kernels.main, "--preset", "small", "--set", "batch_size=8")
  assert "use --batch_size" in err


def test_config_for_adds_no_field():
  """The config is locked while overrides apply: a caller past parse_args cannot add one."""
  with pytest.raises(KeyError):
    common.config_for("small", 8, "float32", 1, ["bogus=1"])
  assert common.config_for("small", 8, "float32", 1, ["model.nf=8"]).model.nf == 8


@pytest.mark.parametrize("argv,message", [
    (["--batch_sizes", "0"], "'0': give positive whole numbers"),
    (["--batch_sizes", "-16"], "'-16': give positive whole numbers"),
    (["--batch_sizes", "abc"], "'abc': give positive whole numbers"),
    (["--batch_sizes", "8,"], "'8,': give positive whole numbers"),
    (["--dtypes", "float32,float16"], "'float16' is not supported; use one or more of "
                                      "bfloat16,float32"),
    (["--num_devices", "0"], "--num_devices=0: give a count of at least 1, or -1 for all"),
])
def test_throughput_flag_values_are_checked_when_parsed(capsys, argv, message):
  assert message in exits_with(capsys, tt.parse_args, *argv)


@pytest.mark.parametrize("argv,message", [
    (["--num_devices", "5"], "--num_devices: num_devices=5 but this process has 4 local "
                             "device(s)"),
    (["--batch_sizes", "8,6"], "--batch_sizes 6 does not split evenly over 4 devices"),
    # A --set value the task refuses (validate_config), before any data or compile.
    (["--set", "model.nf=0"], "model.nf must be a whole number >= 1, got 0"),
])
def test_throughput_errors_found_at_run_time_are_one_line(capsys, argv, message):
  """conftest gives 4 CPU devices."""
  err = exits_with(capsys, tt.main, "--preset", "small", "--torch", "off", "--dtypes",
                   "float32", "--batch_sizes", "8", *argv)
  assert message in err


def test_throughput_torch_only_without_torch_is_one_line(capsys, monkeypatch):
  monkeypatch.setattr(tt, "torch_available", lambda: False)
  err = exits_with(capsys, tt.main, "--preset", "small", "--torch", "only")
  assert "--torch only needs PyTorch installed" in err


def run_module(name, *argv, **kwargs):
  return subprocess.run([sys.executable, "-m", name, *argv], cwd=ROOT, capture_output=True,
                        text=True, timeout=120, **kwargs)


def time_to_accuracy(*argv):
  out = run_module("benchmarks.time_to_accuracy", *argv)
  assert out.returncode == 2, out.stderr
  assert out.stderr.startswith("error: ") and out.stderr.count("\n") == 1, out.stderr
  return out.stderr


def test_time_to_accuracy_names_a_misspelt_config_field_and_a_bad_value():
  err = time_to_accuracy(*TINY, "--config.lerning_rate=1")
  assert "--config.lerning_rate is not a field of this config. Did you mean 'learning_rate'?" in err
  err = time_to_accuracy(*TINY, "--seeds=three")
  assert "--seeds=three: invalid literal for int()" in err


@pytest.mark.parametrize("argv,message", [
    (["--config", "configs/wgan_cifar10.py"], "--config is a 'wgan' recipe; "
                                              "time_to_accuracy.py times classifier recipes"),
    (TINY + ["--seeds", "0"], "--seeds=0 runs no seed"),
    (TINY + ["--target_from", "missing.json"], "--target_from=missing.json: No such file"),
])
def test_time_to_accuracy_refuses_what_it_cannot_run(argv, message):
  assert message in time_to_accuracy(*argv)


@pytest.mark.parametrize("content,message", [
    ("{not json", "is not JSON"),
    ("[1, 2]", "holds no 'torch' or 'jaxgan' measurement"),
    # Its runs' histories hold only the metric it compared: a target of another metric.
    (json.dumps({"metric": "accuracy", "torch": {"summary": {"final_mean": 0.9}}}),
     "measured 'accuracy', not 'accuracy_flip_tta'; pass --metric=accuracy"),
])
def test_time_to_accuracy_target_from_must_be_its_own_json(tmp_path, content, message):
  path = tmp_path / "reference.json"
  path.write_text(content)
  assert message in time_to_accuracy(*TINY, f"--target_from={path}")


@pytest.mark.parametrize("content,message", [
    ("{truncated", "not JSON (Expecting property name"),
    ("[1, 2]", "not a train_throughput.py report"),
    ('{"results": [1]}', "not a train_throughput.py report"),
    # A time_to_accuracy.py JSON: valid, but no result rows.
    ('{"metric": "accuracy", "jaxgan": {}}', "not a train_throughput.py report"),
])
def test_compare_runs_names_a_file_it_cannot_read(tmp_path, capsys, content, message):
  good, bad = tmp_path / "good.json", tmp_path / "bad.json"
  good.write_text(json.dumps({"machine": {}, "results": []}))
  bad.write_text(content)
  assert compare_runs.main([str(good), str(bad)]) == 2
  err = capsys.readouterr().err
  assert err.startswith(f"error: {bad}: {message}") and err.count("\n") == 1, err
