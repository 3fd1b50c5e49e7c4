"""Throughput of the full train step of a model family, on this machine.

    python benchmarks/train_throughput.py                      # notebook Darknet, images/s
    python benchmarks/train_throughput.py --preset small       # Darknet((1, 1), nf=16)
    python benchmarks/train_throughput.py --preset wgan64 --batch_sizes 64   # gen iters/s
    python benchmarks/train_throughput.py --batch_sizes 256,512 --dtypes bfloat16,float32
    python benchmarks/train_throughput.py --preset cyclegan --batch_sizes 1 --dtypes float32

The timed step is the real one on random uint8 data held on the devices:
for classifiers gather, crop/flip, normalise, forward, backward, sync, SGD
update (images/s); for the WGAN presets one generator iteration of the
steady-state schedule (5 critic steps on fresh real batches + 1 generator
step, generator iterations/s); for CycleGAN one reference iteration (crop and
flip, both generators' step, pools, both discriminators' step; iterations/s,
the reference's s/iteration is 1 / that). Compile time is reported apart. Prints a
table and writes JSON with the device and software versions.
"""
import argparse
import json
import os
import platform
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

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
}


def config_for(preset, batch_size, dtype, num_devices):
  import importlib
  module, model, _ = PRESETS[preset]
  config = importlib.import_module(f"configs.{module}").get_config()
  config.model.update(model)
  config.dataset = "fake"
  config.train_subset = max(16 * batch_size, 2048 if config.get("task") != "cyclegan" else 64)
  if "eval_subset" in config:
    config.eval_subset = 64
  config.batch_size = batch_size
  config.dtype = dtype
  config.num_devices = num_devices
  return config


def measure(preset, batch_size, dtype, steps, num_devices):
  import jax
  from jaxgan import parallel
  from jaxgan.experiment import build_task
  from jaxgan.models import count_params
  config = config_for(preset, batch_size, dtype, num_devices)
  devices = parallel.local_devices(num_devices)
  task = build_task(config, devices)
  state = task.init_state(jax.random.PRNGKey(0))
  n_params = sum(count_params(getattr(state, f)) for f in ("params", "g_params", "d_params")
                 if hasattr(state, f))
  state = parallel.replicate(state, devices)
  p_step = task.compile_step(devices)
  first = PRESETS[preset][2]
  t0 = time.perf_counter()
  state, metrics = p_step(state, task.train_batch(first))
  jax.block_until_ready(metrics)
  compile_s = time.perf_counter() - t0
  state, metrics = p_step(state, task.train_batch(first + 1))  # one more warm step
  jax.block_until_ready(metrics)
  t0 = time.perf_counter()
  for i in range(steps):
    state, metrics = p_step(state, task.train_batch(first + 2 + i))
  jax.block_until_ready((state, metrics))
  dt = time.perf_counter() - t0
  return {"preset": preset, "params": n_params, "batch_size": batch_size, "dtype": dtype,
          "devices": len(devices), "steps": steps, "compile_s": round(compile_s, 2),
          "step_ms": round(1000 * dt / steps, 2), "unit": f"{task.throughput_unit}_per_s",
          "per_s": round(steps * task.units_per_step / dt, 2)}


def machine():
  import flax
  import jax
  import optax
  d = jax.local_devices()[0]
  return {"platform": d.platform, "device_kind": d.device_kind,
          "local_devices": jax.local_device_count(), "cpu": platform.processor() or platform.machine(),
          "cpu_count": os.cpu_count(), "python": platform.python_version(), "jax": jax.__version__,
          "flax": flax.__version__, "optax": optax.__version__}


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--preset", choices=sorted(PRESETS), default="darknet")
  parser.add_argument("--batch_sizes", default="256")
  parser.add_argument("--dtypes", default="bfloat16,float32")
  parser.add_argument("--steps", type=int, default=10)
  parser.add_argument("--num_devices", type=int, default=-1)
  parser.add_argument("--json", default="", help="write results here (default: print only)")
  args = parser.parse_args()
  info = machine()
  print("machine: " + ", ".join(f"{k}={v}" for k, v in info.items()), flush=True)
  rows = []
  print(f"{'preset':8s} {'params':>11s} {'batch':>6s} {'dtype':>9s} {'compile s':>10s} "
        f"{'step ms':>9s} {'per second':>18s}")
  for dtype in args.dtypes.split(","):
    for bs in map(int, args.batch_sizes.split(",")):
      r = measure(args.preset, bs, dtype, args.steps, args.num_devices)
      rows.append(r)
      print(f"{r['preset']:8s} {r['params']:>11,d} {bs:>6d} {dtype:>9s} {r['compile_s']:>10.2f} "
            f"{r['step_ms']:>9.2f} {r['per_s']:>9.2f} {r['unit'].replace('_per_s', '/s')}",
            flush=True)
  if args.json:
    with open(args.json, "w") as f:
      json.dump({"machine": info, "results": rows}, f, indent=2)


if __name__ == "__main__":
  main()
