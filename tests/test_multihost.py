"""Multi-host runs: two train.py processes on one machine joined by jax.distributed, the
way the hosts of a TPU pod or GPU cluster are.

Each process has one CPU device: XLA:CPU's gloo collectives deadlock once a few dozen
steps are in flight when a process drives two devices (seen with jax 0.10.2, and with a
bare pmap/psum loop), so the two-devices-per-host layout is not usable on CPU.
"""
import importlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from conftest import TINY_CLI, tiny_config, tiny_fast_config, write_image_folder
from jaxgan import parallel
from jaxgan.checkpoint import Checkpointer
from jaxgan.errors import ConfigError
from jaxgan.experiment import train_and_evaluate
from jaxgan.workdir import _flatten

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def free_port() -> int:
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def host_env(port: int, process_id: int) -> dict:
  env = {k: v for k, v in os.environ.items() if k not in ("JAX_PLATFORMS", "JAX_PROCESS_ID")}
  flags = re.sub(r"--xla_force_host_platform_device_count=\d+", "", os.environ.get("XLA_FLAGS", ""))
  flags += " --xla_force_host_platform_device_count=1"
  return {**env, "XLA_FLAGS": flags, "JAX_PLATFORMS": "cpu",
          "JAX_COORDINATOR_ADDRESS": f"localhost:{port}", "JAX_NUM_PROCESSES": "2",
          "JAX_PROCESS_ID": str(process_id)}


def start_hosts(args, workdir, per_host_args=((), ())):
  """train.py on two processes (process 0 first)."""
  port = free_port()
  return [subprocess.Popen(
      [sys.executable, "train.py", *args, *extra, "--config.distributed=True",
       "--config.progress_bar=False", f"--workdir={workdir}"],
      cwd=REPO, env=host_env(port, i), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
      text=True) for i, extra in enumerate(per_host_args)]


def finish(procs, timeout=300):
  """[(exit code, output)] in process order."""
  try:
    outs = [p.communicate(timeout=timeout)[0] for p in procs]
  finally:
    for p in procs:
      p.kill()
  return [(p.returncode, out) for p, out in zip(procs, outs)]


def run_hosts(args, workdir, per_host_args=((), ()), timeout=300):
  return finish(start_hosts(args, workdir, per_host_args), timeout)


def wait_for_a_logged_step(workdir, procs, timeout=120):
  path = os.path.join(workdir, "metrics.jsonl")
  deadline = time.time() + timeout
  while time.time() < deadline:
    if os.path.exists(path) and any('"loss"' in line for line in open(path)):
      return
    if any(p.poll() is not None for p in procs):
      raise AssertionError(f"a host ended early: {finish(procs)}")
    time.sleep(0.05)
  raise AssertionError(f"no training step was logged in time: {finish(procs, 1)}")


def assert_ok(results):
  for i, (rc, out) in enumerate(results):
    assert rc == 0, f"process {i} exited {rc}:\n{out[-3000:]}"


def checkpoint_params(workdir, step):
  state, _ = Checkpointer(workdir, read_only=True).restore(None, step)
  return state["params"]


def eval_rows(workdir):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [r for r in map(json.loads, f) if r.get("split") == "eval"]


def cli_for(config_file, config):
  """train.py flags that turn `config_file`'s defaults into `config`."""
  module = importlib.import_module("configs." + os.path.splitext(os.path.basename(config_file))[0])
  base, want = _flatten(module.get_config().to_dict()), _flatten(config.to_dict())
  text = lambda v: f"({','.join(map(str, v))},)" if isinstance(v, (tuple, list)) else str(v)
  return [f"--config={config_file}"] + [f"--config.{k}={text(v)}" for k, v in want.items()
                                        if k not in base or base[k] != v]


# Full-batch steps without augmentation: a step's update does not depend on which host
# holds which image, so two hosts of one device each must match one host of two devices.
FULL_BATCH = {"batch_size": 36, "augment__pad": 0, "augment__flip": False,
              "log_every_steps": 1, "keep_checkpoints": 4}


def assert_same_params(multi, single, steps, atol=2e-6, relative_norm=None):
  """Elementwise within `atol`, or with `relative_norm`, each array within that fraction
  of its norm."""
  for step in steps:
    for a, b in zip(jax.tree_util.tree_leaves(checkpoint_params(multi, step)),
                    jax.tree_util.tree_leaves(checkpoint_params(single, step))):
      if relative_norm is None:
        np.testing.assert_allclose(a, b, atol=atol, err_msg=f"step {step}")
      else:
        assert np.linalg.norm(a - b) <= relative_norm * np.linalg.norm(b), (step, a.shape)


def test_preempting_one_host_stops_both_and_they_resume_to_the_single_host_result(
    image_folder, tmp_path):
  """SIGTERM reaches one host only (as a preemption notice may); the hosts agree on a step
  to stop at, both checkpoint it, and the resumed run ends where one host with two
  devices ends."""
  config = tiny_config(image_folder, num_devices=-1, num_epochs=400, eval_every_epochs=1000,
                       checkpoint_every_epochs=1000, **FULL_BATCH)
  multi = str(tmp_path / "multi")
  procs = start_hosts(cli_for("configs/tiny_darknet.py", config), multi)
  wait_for_a_logged_step(multi, procs)
  procs[1].send_signal(signal.SIGTERM)
  results = finish(procs)
  stops = [re.search(r"stopped: SIGTERM at step (\d+)", out) for _, out in results]
  assert [rc for rc, _ in results] == [143, 143] and all(stops), results
  step = int(stops[0].group(1))
  assert int(stops[1].group(1)) == step and 0 < step < 400
  assert Checkpointer(multi, read_only=True).all_steps() == [step]

  config.num_train_steps = step + 2
  results = run_hosts(cli_for("configs/tiny_darknet.py", config), multi)
  assert_ok(results)
  assert f"training steps {step} -> {step + 2}" in results[0][1]
  single = str(tmp_path / "single")
  config.num_devices = 2
  train_and_evaluate(config, single)
  assert_same_params(multi, single, (step + 2,), relative_norm=1e-5)
  # Each host evaluates its half of the test images; the counts add up across hosts.
  (m,), (s,) = eval_rows(multi), eval_rows(single)
  assert m["step"] == s["step"] == step + 2 and m["accuracy"] == s["accuracy"]
  np.testing.assert_allclose(m["loss"], s["loss"], rtol=1e-4)
  # Both hosts report the same final metrics; only process 0 prints the run's progress.
  finals = [out.splitlines()[-1] for _, out in results]
  assert finals[0].startswith("final eval:") and finals[0] == finals[1]
  assert "training steps" not in results[1][1]


def test_two_hosts_whiten_fastnet_from_the_images_of_both(image_folder16, tmp_path):
  """Each host's patch moment covers its half of the 36 images; averaged over the hosts
  they give the filters one host builds from all 36, and the runs agree throughout."""
  config = tiny_fast_config(image_folder16, num_devices=-1, num_epochs=2, whiten_images=36,
                            **FULL_BATCH)
  multi, single = str(tmp_path / "multi"), str(tmp_path / "single")
  assert_ok(run_hosts(cli_for("configs/cifar10_fast.py", config), multi))
  config.num_devices = 2
  train_and_evaluate(config, single)
  # float32 rounding in the two moments moves the filters (eigenvectors of a 12x12
  # covariance with close eigenvalues) by ~1e-4 of their norm; a wrong average or
  # sample would move them by ~10%.
  assert_same_params(multi, single, (2,), relative_norm=1e-3)
  kernel = checkpoint_params(multi, 2)["whiten"]["kernel"]
  assert kernel.shape == (24, 2, 2, 3) and np.abs(kernel).max() > 1  # data-built, not random
  for m, s in zip(eval_rows(multi), eval_rows(single)):
    np.testing.assert_allclose(m["loss"], s["loss"], rtol=1e-5)
    assert m["accuracy_translate_tta"] == s["accuracy_translate_tta"]


def test_hosts_with_unequal_shares_run_the_same_steps(tmp_path):
  """15 training images: one host reads 8, the other 7. With 4 per host per step the larger
  share alone would give 2 steps an epoch against 1, and the hosts would wait on each
  other's collectives forever; the smallest share decides for both."""
  folder = write_image_folder(tmp_path / "data", per_class=(5, 2))
  config = tiny_config(folder, num_devices=-1, batch_size=8, num_epochs=3,
                       checkpoint_every_epochs=1)
  workdir = str(tmp_path / "w")
  results = run_hosts(cli_for("configs/tiny_darknet.py", config), workdir, timeout=150)
  assert_ok(results)
  assert Checkpointer(workdir, read_only=True).all_steps() == [1, 2, 3]
  # With a batch no share can fill, both hosts stop with the same clear error.
  config.batch_size = 16
  results = run_hosts(cli_for("configs/tiny_darknet.py", config), str(tmp_path / "w2"),
                      timeout=150)
  for rc, out in results:
    assert rc == 2, out[-3000:]
    assert ("--config.batch_size=16 (8 per host) is larger than the 7 training images of "
            "the smallest host's share") in out

def test_hosts_started_with_different_configs_stop_with_a_clear_error(image_folder, tmp_path):
  cli = TINY_CLI + [f"--config.dataset={image_folder}", "--config.num_devices=-1",
                    "--config.batch_size=12"]
  results = run_hosts(cli, str(tmp_path / "w"),
                      per_host_args=((), ("--config.learning_rate=0.3",)))
  for rc, out in results:
    assert rc == 2, out[-3000:]
    assert "process(es) [1] were started with a config that differs from process 0's" in out
  assert not os.path.exists(tmp_path / "w" / "checkpoints" / "1")


@pytest.mark.parametrize("family", ["wgan", "cyclegan"])
def test_gan_hosts_keep_one_model(family, image_folder, tmp_path):
  """Every checkpoint compares the hosts' state checksums and refuses to save if they
  differ, so finishing with checkpoints written means the hosts stayed in step."""
  if family == "wgan":
    args = ["--config=configs/wgan_cifar10.py", f"--config.dataset={image_folder}",
            "--config.image_size=16", "--config.model.ngf=8", "--config.model.ndf=8",
            "--config.model.nz=8", "--config.batch_size=8", "--config.critic_iters=2",
            "--config.critic_warmup_iters=2", "--config.critic_iters_boost=3",
            "--config.iters_per_epoch=2"]
    steps_per_epoch = 2
  else:
    args = ["--config=configs/cyclegan_horse2zebra.py", "--config.dataset=fake",
            "--config.train_subset=4", "--config.load_size=28", "--config.image_size=24",
            "--config.model.ngf=4", "--config.model.ndf=4", "--config.model.n_blocks=1",
            "--config.pool_size=4", "--config.batch_size=4", "--config.decay_epochs=1"]
    steps_per_epoch = 2  # 4 images per domain on each host, 2 per host per step
  args += ["--config.num_epochs=2", "--config.cache_dir=none", "--config.sample_every_steps=0"]
  workdir = str(tmp_path / family)
  assert_ok(run_hosts(args, workdir))
  ckpt = Checkpointer(workdir, read_only=True)
  assert ckpt.all_steps() == [steps_per_epoch, 2 * steps_per_epoch]
  state, _ = ckpt.restore(None)
  assert all(np.all(np.isfinite(x)) for x in jax.tree_util.tree_leaves(state))


def test_distributed_settings_are_checked(monkeypatch):
  monkeypatch.setattr(jax.distributed, "is_initialized", lambda: False)
  monkeypatch.setenv("JAX_NUM_PROCESSES", "two")
  with pytest.raises(ConfigError, match="JAX_NUM_PROCESSES='two' is not a non-negative"):
    parallel.maybe_initialize_distributed(True)
  parallel.maybe_initialize_distributed(False)  # one host: nothing to start
  assert parallel.differing_processes("anything") == []


def test_distributed_without_a_coordinator_says_what_to_set():
  env = {k: v for k, v in os.environ.items() if not k.startswith("JAX_")}
  code = ("from jaxgan import parallel\n"
          "try:\n  parallel.maybe_initialize_distributed(True)\n"
          "except Exception as e:\n  print(type(e).__name__, e)\n")
  out = subprocess.run([sys.executable, "-c", code], cwd=REPO, env={**env, "JAX_PLATFORMS": "cpu"},
                       capture_output=True, text=True, timeout=120).stdout
  assert out.startswith("ConfigError --config.distributed=True but JAX could not start"), out
  assert "JAX_COORDINATOR_ADDRESS=<host0>:<port>" in out
