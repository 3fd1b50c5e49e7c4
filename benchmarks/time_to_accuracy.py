"""Wall-clock time until a classifier recipe first reaches a test accuracy, over seeds.

    python benchmarks/time_to_accuracy.py --config configs/cifar10_fast.py \
        --dataset ../shared/data/cifar10-jpeg75.tar.xz --target 0.94 --seeds 5
    python benchmarks/time_to_accuracy.py --config configs/darknet_cifar10.py \
        --dataset cifar10 --target 0.94 --seeds 1 --metric accuracy_flip_tta

What is timed, as airbench times it: data is loaded and put on the device
first (not timed); compilation happens in a warm-up step and evaluation on a
throwaway state (reported as compile_s, not timed). Then each seed runs from
a fresh state: `init_s` (initialisation, including FastNet's whitening from
the data) + training time, synchronised at each epoch end, + the evaluation
that first reaches the target. Evaluations that do not reach it run after
every epoch but are not counted (their total is `other_evals_s`).
Training continues to the recipe's end so the final accuracy is reported
too: mean and spread over the seeds. Prints a table and writes JSON with the
device and software versions.
"""
import json
import os
import sys
import time

from absl import app, flags
from ml_collections import config_flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

_CONFIG = config_flags.DEFINE_config_file("config", None, "Recipe file (configs/*.py).")
_DATASET = flags.DEFINE_string("dataset", None, "Overrides config.dataset (TFDS name, folder "
                               "or archive of train/<class>/* and test/<class>/*).")
_TARGET = flags.DEFINE_float("target", 0.94, "Test accuracy to reach.")
_METRIC = flags.DEFINE_string("metric", "", "Evaluation metric compared with --target "
                              "(default: accuracy_translate_tta when the config has "
                              "tta_translate, else accuracy_flip_tta).")
_SEEDS = flags.DEFINE_integer("seeds", 3, "Runs, with seeds 0..N-1.")
_JSON = flags.DEFINE_string("json", "", "Write the results here too.")
_FRAMEWORK = flags.DEFINE_enum("framework", "jax", ["jax", "torch", "both"],
                               "jaxgan, the PyTorch reference of the same recipe on the same "
                               "data (benchmarks/torch_recipes.py), or both, one after the other.")
_TORCH_VARIANT = flags.DEFINE_enum("torch_variant", "channels_last",
                                   ["eager", "channels_last", "compile"],
                                   "PyTorch variant (bfloat16 configs use autocast).")
flags.mark_flags_as_required(["config"])


def default_metric(config) -> str:
  return "accuracy_translate_tta" if config.get("tta_translate", False) else "accuracy_flip_tta"


def _sync(tree):
  import jax
  return jax.block_until_ready(tree)


def run_seed(task, config, devices, p_step, metric: str, target: float, seed: int,
             report=print) -> dict:
  """One timed run of `task` from a fresh state with `seed`; see the module docstring."""
  import jax
  from jaxgan import parallel
  t0 = time.perf_counter()
  state = _sync(parallel.replicate(task.init_state(jax.random.PRNGKey(seed)), devices))
  init_s = time.perf_counter() - t0
  train_s = other_evals_s = 0.0
  reached, history, step = None, [], 0
  for epoch in range(task.num_epochs):
    end = min((epoch + 1) * task.steps_per_epoch, task.total_steps)
    t0 = time.perf_counter()
    while step < end:
      state, metrics = p_step(state, task.train_batch(step))
      step += 1
    _sync((state, metrics))
    train_s += time.perf_counter() - t0
    t0 = time.perf_counter()
    result = task.evaluate(state)
    eval_s = time.perf_counter() - t0
    value = float(result[metric])
    history.append({"epoch": step / task.steps_per_epoch, "train_s": train_s, metric: value})
    report(f"     seed {seed} epoch {step / task.steps_per_epoch:5.2f}: {metric} {value:.4f} "
           f"(training {train_s:.2f} s, this evaluation {eval_s:.2f} s)")
    if reached is None and value >= target:
      reached = {"time_to_target_s": init_s + train_s + eval_s, "epoch": step / task.steps_per_epoch,
                 "eval_s": eval_s}
    else:
      other_evals_s += eval_s
  return {"seed": seed, "init_s": init_s, "train_s": train_s, "other_evals_s": other_evals_s,
          "final": {k: float(v) for k, v in result.items()}, "reached": reached,
          "history": history}


def summarize(runs, metric, target, seeds, report=print, **extra) -> dict:
  import numpy as np
  finals = np.array([r["final"][metric] for r in runs])
  times = np.array([r["reached"]["time_to_target_s"] for r in runs if r["reached"]])
  summary = {"metric": metric, "target": target, "seeds": seeds,
             "final_mean": float(finals.mean()), "final_std": float(finals.std(ddof=1))
             if seeds > 1 else float("nan"), "reached": int(len(times)),
             "time_to_target_mean_s": float(times.mean()) if len(times) else None, **extra}
  report(f"final {metric}: mean {summary['final_mean']:.4f}, std {summary['final_std']:.4f} "
         f"over {seeds} seed(s); reached {target} in {len(times)}/{seeds}"
         + (f", mean time {times.mean():.2f} s" if len(times) else ""))
  return summary


def report_header(report, metric):
  report(f"{'seed':>4s} {'init s':>7s} {'to target s':>12s} {'at epoch':>9s} "
         f"{'train s':>8s} {'final ' + metric:>32s}")


def report_run(report, r, metric):
  hit = r["reached"] or {}
  to_target = f"{hit['time_to_target_s']:.2f}" if hit else "not reached"
  at_epoch = f"{hit['epoch']:.2f}" if hit else "-"
  report(f"{r['seed']:>4d} {r['init_s']:>7.2f} {to_target:>12s} {at_epoch:>9s} "
         f"{r['train_s']:>8.2f} {r['final'][metric]:>32.4f}")


def torch_time_to_accuracy(config, target: float, metric: str, seeds: int, variant: str,
                           device=None, report=print) -> dict:
  """The same measurement for the PyTorch reference of the recipe (torch_recipes.py)."""
  from benchmarks.torch_recipes import TorchRecipe, time_torch_seed
  from jaxgan.data import load_classification_data
  t0 = time.perf_counter()
  data = load_classification_data(config, [config.train_split, config.eval_split])
  recipe = TorchRecipe(config, data, device, variant)
  load_s = time.perf_counter() - t0
  t0 = time.perf_counter()
  recipe.init(10_000)
  recipe.train_epoch(0, max_steps=3)
  result = recipe.evaluate()
  recipe.sync()
  compile_s = time.perf_counter() - t0
  if metric not in result:
    raise SystemExit(f"--metric={metric!r} is not reported by this config's evaluation; it "
                     f"reports {sorted(result)}")
  report(f"PyTorch {variant} on {recipe.setup.device}: data loaded in {load_s:.1f} s; warm-up "
         f"(compile, autotune) {compile_s:.1f} s; {recipe.total_steps} steps of batch "
         f"{config.batch_size}; target {metric} >= {target}")
  report_header(report, metric)
  runs = []
  for seed in range(seeds):
    r = time_torch_seed(recipe, metric, target, seed, report)
    runs.append(r)
    report_run(report, r, metric)
  summary = summarize(runs, metric, target, seeds, report, compile_s=compile_s, load_s=load_s,
                      framework=f"torch-{variant}")
  return {"compile_s": compile_s, "load_s": load_s, "runs": runs, "summary": summary}


def time_to_accuracy(config, target: float, metric: str, seeds: int, report=print) -> dict:
  """Compile once, then `seeds` timed runs; returns {"compile_s", "runs", "summary"}."""
  import jax
  from jaxgan import parallel
  from jaxgan.experiment import build_task, validate_config
  devices = parallel.local_devices(config.num_devices)
  validate_config(config, len(devices) * jax.process_count())
  t0 = time.perf_counter()
  task = build_task(config, devices)
  load_s = time.perf_counter() - t0
  p_step = task.compile_step(devices)
  # Warm-up on a throwaway state: compiles the step, the evaluation and the init.
  t0 = time.perf_counter()
  state = parallel.replicate(task.init_state(jax.random.PRNGKey(10_000)), devices)
  state, metrics = p_step(state, task.train_batch(0))
  result = task.evaluate(state)
  _sync((state, metrics))
  compile_s = time.perf_counter() - t0
  if metric not in result:
    raise SystemExit(f"--metric={metric!r} is not reported by this config's evaluation; it "
                     f"reports {sorted(result)}")
  del state
  report(f"data {task.source}: loaded in {load_s:.1f} s; compile (step, eval, init) "
         f"{compile_s:.1f} s; {task.total_steps} steps of batch {config.batch_size}; "
         f"target {metric} >= {target}")
  report_header(report, metric)
  runs = []
  for seed in range(seeds):
    with config.unlocked():
      config.seed = seed
    r = run_seed(task, config, devices, p_step, metric, target, seed, report)
    runs.append(r)
    report_run(report, r, metric)
  summary = summarize(runs, metric, target, seeds, report, compile_s=compile_s, load_s=load_s,
                      framework="jaxgan")
  return {"compile_s": compile_s, "load_s": load_s, "runs": runs, "summary": summary}


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  from train_throughput import machine
  from jaxgan.errors import UserError
  config = _CONFIG.value
  with config.unlocked():
    if _DATASET.value:
      config.dataset = _DATASET.value
    config.progress_bar = False
  metric = _METRIC.value or default_metric(config)
  info = machine()
  print("machine: " + ", ".join(f"{k}={v}" for k, v in info.items()), flush=True)
  report = lambda s: print(s, flush=True)
  out = {}
  try:
    if _FRAMEWORK.value in ("jax", "both"):
      out["jaxgan"] = time_to_accuracy(config, _TARGET.value, metric, _SEEDS.value, report)
    if _FRAMEWORK.value in ("torch", "both"):
      import torch
      info["torch"] = torch.__version__
      out["torch"] = torch_time_to_accuracy(config, _TARGET.value, metric, _SEEDS.value,
                                            _TORCH_VARIANT.value, report=report)
  except UserError as e:
    print(f"{e.prefix}: {e}", file=sys.stderr)
    sys.exit(e.exit_code)
  if len(out) == 2:
    a, b = out["jaxgan"]["summary"], out["torch"]["summary"]
    report(f"final {metric}: jaxgan {a['final_mean']:.4f}, PyTorch {b['final_mean']:.4f}")
    if a["time_to_target_mean_s"] and b["time_to_target_mean_s"]:
      report(f"time to {_TARGET.value}: jaxgan {a['time_to_target_mean_s']:.2f} s, PyTorch "
             f"{b['time_to_target_mean_s']:.2f} s (ratio PyTorch / jaxgan "
             f"{b['time_to_target_mean_s'] / a['time_to_target_mean_s']:.2f})")
  if _JSON.value:
    with open(_JSON.value, "w") as f:
      json.dump({"machine": info, "config": config.to_dict(), **out}, f, indent=2, default=str)


if __name__ == "__main__":
  app.run(main)
