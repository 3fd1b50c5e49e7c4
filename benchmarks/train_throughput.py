"""Throughput of the full train step of a model family, on this machine, beside PyTorch.

    python -m benchmarks.train_throughput                     # notebook Darknet, images/s
    python -m benchmarks.train_throughput --preset small      # Darknet((1, 1), nf=16)
    python -m benchmarks.train_throughput --preset wgan64 --batch_sizes 64  # gen iters/s
    python -m benchmarks.train_throughput --batch_sizes 256,512 --dtypes bfloat16,float32
    python -m benchmarks.train_throughput --preset cyclegan --batch_sizes 1 --dtypes float32
    python -m benchmarks.train_throughput --torch off         # jaxgan only
    python -m benchmarks.train_throughput --json results.json # everything below, as JSON

The timed step is the real one on random uint8 data held on the devices:
for classifiers gather, crop/flip, normalise, forward, backward, sync, SGD
update (images/s); for the WGAN presets one generator iteration of the
steady-state schedule (5 critic steps on fresh real batches + 1 generator
step, generator iterations/s); for CycleGAN one reference iteration (crop and
flip, both generators' step, pools, both discriminators' step; iterations/s,
the reference's s/iteration is 1 / that).

Each row reports:
- compile s: the first step (tracing + XLA compilation + one run), apart;
- step ms and per second over `--steps` steps after `--warm_steps` (5) more
  untimed ones (the H100 runs of 2026-11-27 used one);
- TFLOP/s and MFU: FLOPs per step from XLA's HLO cost analysis of the
  step program (2 per multiply-add), per device as pmap compiles it, times
  the devices: the whole global step. The program is lowered for the host
  CPU from the same shapes and analysed before optimisation: GPU backends
  (PJRT plugins) offer no analysis of a lowered program, and a compiled
  GPU program's analysis counts cuDNN calls and elementwise ops otherwise. The
  analysis counts a loop body once, so the WGAN's critic steps (a lax.scan
  on GPU) are counted as n_critic x one critic program + the generator
  program. XLA counts only the multiply-adds that touch real inputs, not
  the padding, so on small grids the count is below layer arithmetic (the
  notebook Darknet, whose last groups run on 4x4 and 2x2 grids: 1.85 against
  2.41 GFLOP per training image) and the MFU conservative by as much.
  MFU = achieved FLOP/s / (peak dense FLOP/s per device x devices),
  peaks from common.PEAK_TFLOPS matched on the device kind, or `--peak_tflops`.
  For float32 the TF32 tensor-core peak is used on Ampere and newer GPUs,
  because XLA's default precision runs float32 convolutions and matmuls in
  TF32 there (the PyTorch rows allow TF32 too). Unknown on CPU (shown "-").
- peak GB: the device allocator's `peak_bytes_in_use` (GPU/TPU; "-" on CPU).
  JAX offers no reset, so it is the process's high-water mark so far: run
  the largest configuration last, or one configuration per invocation.

With PyTorch importable (`--torch auto`, the default) each jaxgan row is
followed by torch_reference.py's PyTorch twin of the same preset,
batch and dtype: eager (float32, or bfloat16 autocast = AMP), eager
channels_last (CUDA only) and torch.compile; then the jaxgan/PyTorch
throughput ratio per device against the best eager variant and against
torch.compile. PyTorch rows report the jaxgan program's FLOPs count for
their MFU (same model, same step). When the PyTorch rows run, JAX does not
preallocate GPU memory, so the two share the GPU. The JSON holds the device
name, the software versions and every row.
"""
import argparse
import importlib
import os
import time

import jax
import numpy as np

from benchmarks import common
from benchmarks.common import PRESETS
from jaxgan import cli, parallel
from jaxgan.errors import ConfigError, UserError
from jaxgan.models import count_params
from jaxgan.models.layers import COMPUTE_DTYPES

TORCH_MODES = ("auto", "off", "only")
# Config fields this script sets from its own flags, which its rows record: a --set of one
# would time another step than the row names. field: the fix.
FLAG_FIELDS = {"batch_size": "use --batch_sizes", "dtype": "use --dtypes",
               "num_devices": "use --num_devices"}


# ---- jaxgan's rows -------------------------------------------------------------------------------
def peak_memory_bytes(device):
  """The allocator's high-water mark on `device` (None where it keeps none, e.g. CPU)."""
  try:
    stats = device.memory_stats()
  except Exception:  # backends without allocator statistics
    return None
  return int(stats["peak_bytes_in_use"]) if stats and "peak_bytes_in_use" in stats else None


def cost_flops(make, *args) -> float:
  """FLOPs XLA's cost analysis counts in one device's program of the pmapped function that
  `make(devices)` builds, called on `args` (replicated / sharded over the first axis).

  The program is lowered for one host-CPU device from the arguments' shapes: the same
  per-device HLO, analysed before any backend rewrites it, and the CPU backend offers the
  analysis of a lowered program where GPU plugins (PJRT C API) do not, whose compiled-program
  analysis would also count cuDNN calls and elementwise ops differently.
  """
  cpu = jax.devices("cpu")[:1]
  shapes = jax.tree_util.tree_map(
      lambda x: jax.ShapeDtypeStruct((1,) + tuple(x.shape[1:]), x.dtype), args)
  cost = make(cpu).lower(*shapes).cost_analysis()
  if isinstance(cost, (list, tuple)):  # older JAX: one dict per program
    cost = cost[0]
  return float(cost["flops"])


def flops_per_step(task, state, batch, devices) -> float:
  """FLOPs of one global train step: the per-device program's count times the devices.

  The WGAN's programs are analysed apart (n_critic critic steps + one generator step):
  the cost analysis counts the body of the critic steps' lax.scan once, and on CPU the
  step is several dispatched programs anyway.
  """
  if not hasattr(task, "critic_update"):
    return cost_flops(task.compile_step, state, batch) * len(devices)
  key = jax.random.PRNGKey(0)
  critic = lambda s, b: task.critic_update(s, b["images"], b["index"][0], key)
  generator = lambda s, b: task.generator_update(s, b["index"].shape[1], key)
  program = lambda fn: lambda d: parallel.pmap_step(fn, d, donate_state=False)
  n_critic = batch["index"].shape[1]  # (devices, n_critic, device batch)
  per_device = (n_critic * cost_flops(program(critic), state, batch)
                + cost_flops(program(generator), state, batch))
  return per_device * len(devices)


def measure(preset, batch_size, dtype, steps, num_devices, peak_tflops_per_device=None,
            warm_steps=5, overrides=()):
  """Time jaxgan's step for a preset; FLOPs, MFU (when the peak is known) and peak memory.
  `overrides`: config_for's "field.path=<JSON value>" strings."""
  phase = common.Phases(f"jaxgan {preset} {dtype} batch {batch_size}")
  task, devices, state, p_step = common.build_preset(preset, batch_size, dtype, num_devices,
                                                     phase, overrides)
  n_params = sum(count_params(getattr(state, f)) for f in ("params", "g_params", "d_params")
                 if hasattr(state, f))
  state = parallel.replicate(state, devices)
  first = PRESETS[preset][2]
  t0 = time.perf_counter()
  state, metrics = p_step(state, task.train_batch(first))
  jax.block_until_ready(metrics)
  compile_s = time.perf_counter() - t0
  phase("first step (compilation)")
  for i in range(warm_steps):
    state, metrics = p_step(state, task.train_batch(first + 1 + i))
  jax.block_until_ready((state, metrics))
  phase(f"{warm_steps} warm steps")
  first += 1 + warm_steps
  t0 = time.perf_counter()
  for i in range(steps):
    state, metrics = p_step(state, task.train_batch(first + i))
  jax.block_until_ready((state, metrics))
  dt = time.perf_counter() - t0
  phase(f"{steps} timed steps")
  row = {"framework": "jaxgan", "variant": "pmap", "preset": preset, "params": n_params,
         "batch_size": batch_size, "dtype": dtype, "devices": len(devices),
         "device": devices[0].device_kind, "steps": steps, "warm_steps": warm_steps,
         "overrides": list(overrides),
         # The last timed step's metrics (device 0): runs that differ only in XLA flags or
         # overrides must agree on them, so a fast but wrong setting shows.
         "last_metrics": {k: round(float(np.asarray(v)[0]), 6)
                          for k, v in jax.device_get(metrics).items() if np.size(v) == len(devices)},
         "compile_s": round(compile_s, 2),
         "step_ms": round(1000 * dt / steps, 2), "unit": f"{task.throughput_unit}_per_s",
         "per_s": round(steps * task.units_per_step / dt, 2),
         "peak_memory_bytes": peak_memory_bytes(devices[0]), "flops_per_step": None,
         "tflops_per_s": None, "mfu": None}
  # After the timing (the state is live again), from the step's own inputs.
  flops = flops_per_step(task, state, task.train_batch(first + steps), devices)
  phase("FLOPs count")
  peak = peak_tflops_per_device or common.peak_tflops(devices[0].device_kind, dtype)
  return common.add_flop_rates(row, flops, peak)


# ---- PyTorch's rows ------------------------------------------------------------------------------
def torch_available() -> bool:
  try:
    importlib.import_module("torch")
  except ImportError:
    return False
  return True


def torch_variants(device: str, requested: str = "auto"):
  """The PyTorch variants to run: channels_last only pays off on CUDA."""
  if requested != "auto":
    return requested.split(",")
  if device.startswith("cuda"):
    return ["eager", "channels_last", "compile"]
  return ["eager", "compile"]


def ratios(jax_row, torch_rows):
  """jaxgan's throughput per device over PyTorch's (one device): against the best eager
  variant (eager or channels_last; AMP for bfloat16) and against torch.compile."""
  ok = [r for r in torch_rows if "error" not in r]
  jax_per_device = jax_row["per_s"] / jax_row["devices"]
  eager = [r["per_s"] for r in ok if r["variant"] in ("eager", "channels_last")]
  compiled = [r["per_s"] for r in ok if r["variant"] == "compile"]
  return {"vs_torch_eager": round(jax_per_device / max(eager), 3) if eager else None,
          "vs_torch_compile": round(jax_per_device / compiled[0], 3) if compiled else None}


# ---- the table and the command line --------------------------------------------------------------
def _fmt(value, spec, missing="-"):
  return missing if value is None else format(value, spec)


def _times(ratio):
  return "n/a" if ratio is None else f"{ratio:.2f}x"


HEADER = (f"{'framework':22s} {'preset':8s} {'params':>11s} {'batch':>6s} {'dtype':>9s} "
          f"{'compile s':>10s} {'step ms':>9s} {'per second':>20s} {'TFLOP/s':>8s} {'MFU':>6s} "
          f"{'peak GB':>8s}")


def format_row(r):
  name = f"{r['framework']} {r['variant']}"
  if "error" in r:
    return f"{name:22s} {r['preset']:8s} failed: {r['error'][:200]}"
  mem = None if r["peak_memory_bytes"] is None else r["peak_memory_bytes"] / 2**30
  unit = r["unit"].replace("_per_s", "/s")
  return (f"{name:22s} {r['preset']:8s} {r['params']:>11,d} {r['batch_size']:>6d} "
          f"{r['dtype']:>9s} {r['compile_s']:>10.2f} {r['step_ms']:>9.2f} "
          f"{r['per_s']:>10.2f} {unit:>9s} {_fmt(r['tflops_per_s'], '8.3f'):>8s} "
          f"{_fmt(r['mfu'], '6.1%'):>6s} {_fmt(mem, '8.2f'):>8s}")


def batch_sizes(text: str) -> list:
  """--batch_sizes: positive whole numbers, comma-separated."""
  try:
    sizes = [int(s) for s in text.split(",")]
  except ValueError:
    sizes = []
  if not sizes or min(sizes) < 1:
    raise argparse.ArgumentTypeError(f"{text!r}: give positive whole numbers separated by "
                                     "commas, e.g. 256,512")
  return sizes


def dtypes(text: str) -> list:
  """--dtypes: jaxgan's compute dtypes, comma-separated."""
  names = text.split(",")
  unknown = [n for n in names if n not in COMPUTE_DTYPES]
  if unknown:
    raise argparse.ArgumentTypeError(f"{unknown[0]!r} is not supported; use one or more of "
                                     f"{','.join(sorted(COMPUTE_DTYPES))}")
  return names


def parse_args(argv=None):
  parser = common.ArgumentParser(prog="python -m benchmarks.train_throughput",
                                  description=__doc__.split("\n")[0])
  parser.add_argument("--preset", choices=sorted(PRESETS), default="darknet")
  parser.add_argument("--batch_sizes", type=batch_sizes, default="256")
  parser.add_argument("--dtypes", type=dtypes, default="bfloat16,float32")
  parser.add_argument("--steps", type=int, default=10)
  parser.add_argument("--warm_steps", type=int, default=5,
                      help="untimed steps after the compiling one, before the timed ones (on "
                           "an H100 the Darknet step took several steps to settle)")
  parser.add_argument("--num_devices", type=int, default=-1, help="local devices (-1: all)")
  parser.add_argument("--peak_tflops", type=float, default=None,
                      help="peak dense TFLOP/s of one device for the MFU (default: from the "
                           "device kind; none on CPU)")
  parser.add_argument("--torch", choices=TORCH_MODES, default="auto",
                      help="PyTorch reference rows: auto (if torch imports), off, only")
  parser.add_argument("--torch_device", default="",
                      help="device of the PyTorch rows (default: cuda if available, else cpu)")
  parser.add_argument("--torch_variants", default="auto",
                      help="comma-separated of eager, channels_last, compile (default: all "
                           "three on CUDA, eager and compile on CPU)")
  parser.add_argument("--set", action="append", default=[], metavar="KEY=JSON",
                      help="override a field of the preset's jaxgan config, e.g. --preset "
                           "cyclegan --set stack_networks=true (needs --torch off: the PyTorch "
                           "twin would not follow it)")
  parser.add_argument("--json", default="", help="write results here (default: print only)")
  args = parser.parse_args(argv)
  if args.steps < 1 or args.warm_steps < 0:
    parser.error("--steps must be positive and --warm_steps not negative")
  if args.num_devices == 0 or args.num_devices < -1:
    parser.error(f"--num_devices={args.num_devices}: give a count of at least 1, or -1 for all")
  if args.set and args.torch != "off":
    parser.error("--set changes jaxgan's config only: add --torch off")
  problem = common.override_problem(args.set, args.preset, FLAG_FIELDS,
                                    "export XLA_FLAGS instead (the JSON records it)")
  if problem:
    parser.error(problem)
  return args


def check_devices(num_devices: int, batch_sizes: list) -> None:
  """Before any measurement: the devices asked for exist and split every batch evenly."""
  n = len(parallel.local_devices(num_devices, "--num_devices"))
  for bs in batch_sizes:
    if bs % n:
      raise ConfigError(f"--batch_sizes {bs} does not split evenly over {n} devices; use a "
                        f"multiple of {n}, or fewer devices with --num_devices")


def run(args, save=lambda report: None):
  """Measure every (dtype, batch size); returns the JSON-able report, printing the table and
  passing the report so far to `save` after each configuration (a timeout keeps those)."""
  use_torch = args.torch == "only" or (args.torch == "auto" and torch_available())
  if args.torch == "only" and not torch_available():
    raise UserError("--torch only needs PyTorch installed (pip install torch)")
  if args.torch != "only":
    check_devices(args.num_devices, args.batch_sizes)
  info = common.machine()
  if use_torch:
    # PyTorch is optional: the module that imports it loads only when its rows run.
    from benchmarks import torch_reference
    torch_device = args.torch_device or torch_reference.default_device()
    info.update(torch_reference.torch_machine(torch_device))
  common.print_machine(info)
  if args.torch == "auto" and not use_torch:
    print("PyTorch is not installed: no PyTorch rows (pip install torch for the ratios)")
  rows, comparisons = [], []
  report = {"machine": info, "preset": args.preset, "results": rows, "ratios": comparisons}
  print(HEADER)
  for dtype in args.dtypes:
    for bs in args.batch_sizes:
      jax_row = None
      if args.torch != "only":
        jax_row = measure(args.preset, bs, dtype, args.steps, args.num_devices, args.peak_tflops,
                          args.warm_steps, args.set)
        rows.append(jax_row)
        print(format_row(jax_row), flush=True)
        print(f"{'':22s} last step: " + ", ".join(f"{k} {v:.6g}" for k, v in
                                                 jax_row["last_metrics"].items()), flush=True)
      save(report)
      if not use_torch:
        continue
      def on_row(row):
        rows.append(row)
        print(format_row(row), flush=True)
        save(report)

      torch_rows = torch_reference.measure_torch_rows(
          args.preset, bs, dtype, args.steps, torch_device,
          torch_variants(torch_device, args.torch_variants), jax_row, args.peak_tflops, on_row,
          args.warm_steps)
      if jax_row:
        ratio = ratios(jax_row, torch_rows)
        jax_row.update(ratio)
        comparisons.append({"batch_size": bs, "dtype": dtype, **ratio})
        print(f"{'':22s} jaxgan / PyTorch per device: {_times(ratio['vs_torch_eager'])} best "
              f"eager, {_times(ratio['vs_torch_compile'])} torch.compile", flush=True)
      save(report)
  return report


def main(argv=None):
  args = parse_args(argv)
  if args.torch != "off":  # let PyTorch share the GPU: JAX allocates as it goes
    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
  def save(report):
    if args.json:
      common.write_json(args.json, report)

  with cli.user_errors():
    save(run(args, save))


if __name__ == "__main__":
  main()
