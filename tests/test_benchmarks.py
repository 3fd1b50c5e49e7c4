"""benchmarks.train_throughput on the CPU at tiny size: the report's fields, FLOPs against
an analytic count, MFU arithmetic and the PyTorch rows when torch is installed."""
import json
import os
import pathlib

import jax
import pytest

from benchmarks import common
from benchmarks import train_throughput as tt
from conftest import tiny_wgan_config

ROOT = pathlib.Path(__file__).resolve().parent.parent


def conv_macs(pixels, k, cin, cout):
  """Multiply-adds of a k x k convolution over `pixels` positions (no border effects)."""
  return pixels * k * k * cin * cout


def small_darknet_forward_macs(size=32, nf=16, num_classes=10):
  """The 'small' preset, Darknet((1, 1), nf=16), from its layer list."""
  s = size * size
  macs = conv_macs(s, 3, 3, nf)  # stem
  macs += conv_macs(s // 4, 3, nf, 2 * nf)  # group 0 opens with stride 2
  macs += conv_macs(s // 4, 1, 2 * nf, nf) + conv_macs(s // 4, 3, nf, 2 * nf)  # ResLayer
  macs += conv_macs(s // 4, 3, 2 * nf, 4 * nf)  # group 1 keeps the grid
  macs += conv_macs(s // 4, 1, 4 * nf, 2 * nf) + conv_macs(s // 4, 3, 2 * nf, 4 * nf)
  return macs + 4 * nf * num_classes


def test_report_has_flops_memory_and_torch_rows(tmp_path, monkeypatch):
  out = tmp_path / "report.json"
  monkeypatch.setenv("XLA_PYTHON_CLIENT_PREALLOCATE", "false")  # main() sets it; undo after
  # Default --num_devices: the 4 fake CPU devices of conftest, 2 images each.
  tt.main(["--preset", "small", "--batch_sizes", "8", "--dtypes", "float32", "--steps", "1",
           "--torch_variants", "eager", "--json", str(out)])
  report = json.loads(out.read_text())
  for key in ("platform", "device_kind", "jax", "jaxlib", "flax", "optax", "cpu_count"):
    assert key in report["machine"]
  # The settings that change the numbers are recorded: XLA's flags, and this suite's cache.
  assert report["machine"]["xla_flags"] == os.environ["XLA_FLAGS"]
  assert report["machine"]["compilation_cache"] == os.environ["JAXGAN_TEST_COMPILE_CACHE"]
  jax_rows = [r for r in report["results"] if r["framework"] == "jaxgan"]
  assert len(jax_rows) == 1
  row = jax_rows[0]
  for key in ("preset", "params", "batch_size", "dtype", "devices", "compile_s", "step_ms",
              "unit", "per_s", "peak_memory_bytes", "flops_per_step", "tflops_per_s", "mfu"):
    assert key in row
  assert row["devices"] == 4 and row["per_s"] > 0
  # The last step's metrics, to check that a faster setting still computes the same step.
  assert "loss" in row["last_metrics"] and 0 < row["last_metrics"]["loss"] < 10
  assert row["peak_memory_bytes"] is None and row["mfu"] is None  # CPU: unknown, not made up
  # The whole global step, all devices: about 3 x the forward pass (forward, two backward).
  analytic = 3 * 2 * small_darknet_forward_macs() * 8
  assert analytic / 1.5 < row["flops_per_step"] < analytic * 1.5, (row["flops_per_step"],
                                                                   analytic)
  assert row["tflops_per_s"] > 0
  if tt.torch_available():
    torch_rows = [r for r in report["results"] if r["framework"] == "torch"]
    assert [r["variant"] for r in torch_rows] == ["eager"]
    assert "error" not in torch_rows[0], torch_rows[0].get("error")
    assert torch_rows[0]["per_s"] > 0 and torch_rows[0]["params"] == row["params"]
    assert row["vs_torch_eager"] > 0 and report["ratios"][0]["vs_torch_eager"] > 0
    assert report["machine"]["torch"]


def test_set_overrides_jaxgan_config_and_is_recorded(tmp_path, capsys):
  out = tmp_path / "report.json"
  tt.main(["--preset", "small", "--batch_sizes", "8", "--dtypes", "float32", "--steps", "1",
           "--warm_steps", "0", "--torch", "off", "--set", "model.nf=8", "--json", str(out)])
  row = json.loads(out.read_text())["results"][0]
  assert row["overrides"] == ["model.nf=8"]
  # Half the width is a quarter of the multiply-adds: the step measured is the narrow one.
  analytic = 3 * 2 * small_darknet_forward_macs(nf=8) * 8
  assert analytic / 1.5 < row["flops_per_step"] < analytic * 1.5
  # The PyTorch twin would not follow an override, and a value must be JSON.
  for argv, message in ((["--set", "model.nf=8"], "--torch off"),
                        (["--torch", "off", "--set", "model.nf=yes"], "must be JSON"),
                        (["--torch", "off", "--set", 'xla_flags="--xla_x=1"'], "XLA_FLAGS")):
    with pytest.raises(SystemExit):
      tt.parse_args(argv)
    assert message in capsys.readouterr().err


def test_each_torch_row_reaches_the_json_before_the_next_variant_runs(tmp_path, monkeypatch):
  """A run stopped in a later variant (a timeout's kill, here an interrupt) keeps the rows
  measured before it: on the H100 the CycleGAN eager rows were lost to torch.compile's."""
  pytest.importorskip("torch")
  import benchmarks.torch_reference as tr
  out = tmp_path / "report.json"

  def fake_measure(preset, batch_size, dtype, variant, steps, device, warm_steps):
    assert warm_steps == 2
    if variant == "compile":
      raise KeyboardInterrupt
    return {"framework": "torch", "variant": variant, "preset": preset, "params": 1,
            "batch_size": batch_size, "dtype": dtype, "devices": 1, "compile_s": 1.0,
            "step_ms": 2.0, "per_s": 4.0, "unit": "images_per_s", "tflops_per_s": None,
            "mfu": None, "peak_memory_bytes": None}

  monkeypatch.setattr(tr, "measure_torch", fake_measure)
  with pytest.raises(KeyboardInterrupt):
    tt.main(["--preset", "small", "--batch_sizes", "8", "--dtypes", "float32", "--torch",
             "only", "--torch_device", "cpu", "--torch_variants", "eager,channels_last,compile",
             "--warm_steps", "2",
             "--json", str(out)])
  rows = json.loads(out.read_text())["results"]
  assert [r["variant"] for r in rows] == ["eager", "channels_last"]


def dcgan_forward_macs(isize=16, nz=8, ngf=8, ndf=8):
  """DCGAN_G(16, nz, 3, ngf, 1) and DCGAN_D(16, 3, ndf, 1) per image; a transposed conv's
  multiply-adds are its input positions x k^2 x cin x cout."""
  assert isize == 16  # widths below are for 16x16
  g = (conv_macs(1, 4, nz, 2 * ngf) + conv_macs(16, 4, 2 * ngf, ngf)
       + conv_macs(64, 3, ngf, ngf) + conv_macs(64, 4, ngf, 3))
  d = (conv_macs(64, 4, 3, ndf) + conv_macs(64, 3, ndf, ndf) + conv_macs(16, 4, ndf, 2 * ndf)
       + conv_macs(1, 4, 2 * ndf, 1))
  return g, d


def test_wgan_flops_count_every_critic_step():
  from jaxgan import parallel
  from jaxgan.wgan import WGANTask
  config = tiny_wgan_config("fake", train_subset=64, critic_loop="scan")
  devices = parallel.local_devices(1)
  task = WGANTask.build(config, devices)
  state = parallel.replicate(task.init_state(jax.random.PRNGKey(0)), devices)
  batch = task.train_batch(0)  # a warm-up iteration: critic_iters_boost = 4 critic steps
  assert batch["index"].shape[1] == 4
  flops = tt.flops_per_step(task, state, batch, devices)
  g, d = dcgan_forward_macs()
  # Critic step: G forward, D forward on real and fake, their backward (~2x): G + 6 D.
  # Generator step: G forward and backward (3 G), D forward and input gradients (2 D).
  analytic = 2 * config.batch_size * (4 * (g + 6 * d) + 3 * g + 2 * d)
  assert analytic / 1.5 < flops < analytic * 1.5, (flops, analytic)


def test_peaks_match_device_kinds_and_give_mfu():
  assert common.peak_tflops("NVIDIA H100 80GB HBM3", "bfloat16") == 989.0
  assert common.peak_tflops("NVIDIA H100 80GB HBM3", "float32") == 494.7  # TF32, XLA's default
  assert common.peak_tflops("NVIDIA H100 PCIe", "bfloat16") == 756.0
  assert common.peak_tflops("NVIDIA H200", "bfloat16") == 989.0
  assert common.peak_tflops("NVIDIA A100-SXM4-80GB", "float32") == 156.0
  assert common.peak_tflops("Tesla V100-SXM2-16GB", "float32") == 15.7
  assert common.peak_tflops("cpu", "float32") is None
  row = {"step_ms": 10.0, "devices": 2, "mfu": None, "tflops_per_s": None}
  common.add_flop_rates(row, 2e12, 100.0)  # 2 TFLOP in 10 ms on 2 x 100 TFLOP/s
  assert row["tflops_per_s"] == pytest.approx(200.0) and row["mfu"] == pytest.approx(1.0)


def test_ratios_use_the_best_eager_variant_and_compile():
  jax_row = {"per_s": 300.0, "devices": 1}
  torch_rows = [{"variant": "eager", "per_s": 100.0}, {"variant": "channels_last", "per_s": 150.0},
                {"variant": "compile", "per_s": 200.0}, {"variant": "compile", "error": "x"}]
  assert tt.ratios(jax_row, torch_rows) == {"vs_torch_eager": 2.0, "vs_torch_compile": 1.5}
  assert tt.ratios(jax_row, [{"variant": "eager", "error": "x"}]) == {
      "vs_torch_eager": None, "vs_torch_compile": None}


def test_jaxgan_and_the_benchmark_do_not_import_torch():
  """PyTorch is optional: only the benchmarks' torch_* modules may import it."""
  import subprocess
  import sys
  # Each command module (jaxgan.cli.train, ...) defines its process's absl flags, as the
  # benchmark scripts do: they are entry points, one per process.
  code = ("import pkgutil, importlib, sys, jaxgan, benchmarks\n"
          "for m in pkgutil.walk_packages(jaxgan.__path__, 'jaxgan.'):\n"
          "  if m.name in ('jaxgan.cli.train', 'jaxgan.cli.evaluate', 'jaxgan.cli.translate'):\n"
          "    continue\n"
          "  importlib.import_module(m.name)\n"
          "import benchmarks.train_throughput\n"
          "assert 'torch' not in sys.modules, 'torch was imported'\n"
          "for m in pkgutil.iter_modules(benchmarks.__path__, 'benchmarks.'):\n"
          "  if not m.name.startswith('benchmarks.torch_'):\n"
          "    importlib.import_module(m.name)\n"
          "assert 'torch' not in sys.modules, 'torch was imported'\n")
  subprocess.run([sys.executable, "-c", code], check=True, cwd=str(ROOT))


def test_profile_summary_splits_device_and_host_lines_and_ranks_each_kernel_once():
  from benchmarks.profile_step import summarize, union_ms
  assert union_ms([(0, 10), (5, 10), (30, 5), (31, 1)]) == 0.02  # us: [0, 15) + [30, 35)
  procs = {1: "/device:GPU:0", 2: "/host:CPU"}
  threads = {(1, 7): "Stream #7(Compute)", (1, 9): "XLA Modules", (1, 11): "XLA Ops",
             (2, 3): "python"}
  ev = lambda pid, tid, ts, dur, name: {"ph": "X", "pid": pid, "tid": tid, "ts": ts, "dur": dur,
                                        "name": name}
  events = []
  for step in range(2):  # 2 steps of 10 ms wall; on the stream 3 kernels, 4 ms busy per step
    t = step * 10_000
    events += [ev(1, 7, t, 2000, "conv"), ev(1, 7, t + 1000, 1000, "conv"),  # overlapping
               ev(1, 7, t + 5000, 2000, "update"), ev(1, 9, t, 9000, "jit_step"),
               ev(1, 11, t, 2000, "convolution.3"),  # a stream kernel again, by HLO name
               ev(2, 3, t, 500, "PmapFunction")]
  s = summarize(events, procs, threads, steps=2, wall_ms=20.0)
  assert s["wall_ms_per_step"] == 10.0
  lines = {r["thread"]: r for r in s["device_lines"]}
  stream, modules = lines["Stream #7(Compute)"], lines["XLA Modules"]
  assert stream["events_per_step"] == 3 and stream["busy_ms_per_step"] == 4.0
  assert stream["busy_fraction"] == 0.4
  assert modules["busy_ms_per_step"] == 9.0
  assert [r["thread"] for r in s["host_lines"]] == ["python"]
  assert len(s["device_lines"]) == 3
  # Only the stream's kernels are ranked (not the module span, nor "XLA Ops" repeating them).
  top = {e["name"]: e for e in s["top_device_events"]}
  assert set(top) == {"conv", "update"}
  assert top["conv"]["ms_per_step"] == 3.0 and top["conv"]["calls_per_step"] == 2.0
  assert s["top_host_events"][0] == {"name": "PmapFunction", "ms_per_step": 0.5,
                                     "calls_per_step": 1.0}


def test_compare_runs_sets_each_row_against_its_configurations_first(tmp_path, capsys):
  from benchmarks import compare_runs

  def report(name, flags, rows):
    path = tmp_path / name
    path.write_text(json.dumps({"machine": {"xla_flags": flags}, "results": rows}))
    return str(path)

  def row(preset, ms, loss, **extra):
    return {"framework": "jaxgan", "preset": preset, "batch_size": 1, "dtype": "bfloat16",
            "step_ms": ms, "last_metrics": {"loss": loss, "lr": 2e-4}, **extra}

  files = [report("base.json", "", [row("cyclegan", 50.0, 2.0), row("darknet", 8.0, 1.0),
                                    {"framework": "torch", "preset": "cyclegan"}]),
           report("graphs.json", "--xla_gpu_graph_min_graph_size=1",
                  [row("cyclegan", 20.0, 2.002), row("darknet", 10.0, 1.5)]),
           report("stacked.json", "", [row("cyclegan", 25.0, 2.0, overrides=["stack_networks=true"])]),
           report("failed.json", "", [{"framework": "jaxgan", "preset": "cyclegan",
                                       "error": "out of memory"}]),
           str(tmp_path / "timed_out.json")]
  assert compare_runs.main(files) == 0
  out = capsys.readouterr().out
  rows = {tuple(line.split()[:2]): line.split()[5:7] for line in out.splitlines()
          if ".json " in line and "failed" not in line}
  assert "timed_out.json: missing" in out and "failed: out of memory" in out
  # Each configuration against its own first row: speed-up, then the largest loss gap.
  assert rows == {("base.json", "cyclegan"): ["1.00x", "0.0e+00"],
                  ("base.json", "darknet"): ["1.00x", "0.0e+00"],
                  ("graphs.json", "cyclegan"): ["2.50x", "1.0e-03"],
                  ("graphs.json", "darknet"): ["0.80x", "3.3e-01"],
                  ("stacked.json", "cyclegan"): ["2.00x", "0.0e+00"]}
  assert "gpu_graph_min_graph_size=1" in out and "set stack_networks=true" in out
  assert compare_runs.main([str(tmp_path / "none.json")]) == 1
