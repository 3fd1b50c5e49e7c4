"""Wall-clock time until a classifier recipe first reaches a test accuracy, over seeds.

    python -m benchmarks.time_to_accuracy --config configs/cifar10_fast.py \
        --dataset ../shared/data/cifar10-jpeg75.tar.xz --target 0.94 --seeds 5
    python -m benchmarks.time_to_accuracy --config configs/darknet_cifar10.py \
        --dataset cifar10 --target 0.94 --seeds 1 --metric accuracy_flip_tta

What is timed, as airbench times it: data is loaded and put on the device
first (not timed); compilation happens in a warm-up step and evaluation on a
throwaway state (reported as compile_s, not timed). Then each seed runs from
a fresh state: `init_s` (initialisation, including FastNet's whitening from
the data) + training time, synchronised at each epoch end, + the evaluation
that first reaches the target. Evaluations that do not reach it run after
every epoch but are not counted (their total is `other_evals_s`).
Training continues to the recipe's end so the final accuracy is reported
too: mean and spread over the seeds, and airbench's own figure, the whole
run's time (initialisation + all training + the final evaluation). Prints a
table and writes JSON with the device and software versions (after each
framework, so a later failure keeps the earlier results).

On a copy of CIFAR-10 other than the original (the shared JPEG-75 one), 94%
may be out of reach: run the PyTorch twin first (`--framework torch --json
torch.json`), then jaxgan with `--target_from torch.json`, which targets the
twin's mean final accuracy and prints both frameworks' times to it.
"""
import json
import os
import time

import numpy as np
from absl import app, flags, logging
from ml_collections import config_flags

from jaxgan import cli
from jaxgan.errors import UserError

# Each framework's side loads inside the functions that run it, only when --framework asks for
# it: PyTorch is optional, and a flag error answers before JAX starts loading (as train.py's).

_CONFIG = config_flags.DEFINE_config_file("config", None,
                                          "Classifier recipe file (configs/*.py).")
_DATASET = flags.DEFINE_string("dataset", None, "Overrides config.dataset (TFDS name, folder "
                               "or archive of train/<class>/* and test/<class>/*).")
_TARGET = flags.DEFINE_float("target", 0.94, "Test accuracy to reach.")
_METRIC = flags.DEFINE_string("metric", "", "Evaluation metric compared with --target "
                              "(default: accuracy_translate_tta when the config has "
                              "tta_translate, else accuracy_flip_tta).")
_SEEDS = flags.DEFINE_integer("seeds", 3, "How many runs (at least 1), with seeds 0..N-1.")
_JSON = flags.DEFINE_string("json", "", "Write the results here too (after each framework).")
_TARGET_FROM = flags.DEFINE_string(
    "target_from", "", "A JSON written by this script (e.g. the PyTorch twin's run on the same "
    "data, with the same --metric): its mean final accuracy becomes the target, and its runs' "
    "times to that target are printed beside these.")
_FRAMEWORK = flags.DEFINE_enum("framework", "jax", ["jax", "torch", "both"],
                               "jaxgan, the PyTorch reference of the same recipe on the same "
                               "data (benchmarks/torch_recipes.py), or both, one after the "
                               "other.")
_TORCH_VARIANT = flags.DEFINE_enum("torch_variant", "channels_last",
                                   ["eager", "channels_last", "compile"],
                                   "PyTorch variant (bfloat16 configs use autocast).")
flags.mark_flags_as_required(["config"])


def check_flags(config) -> None:
  """What this script cannot run, before any data or JAX: the fix in one line."""
  task = config.get("task", "classifier")
  if task != "classifier":
    raise UserError(f"--config is a {task!r} recipe; time_to_accuracy.py times classifier "
                    "recipes to a test accuracy (e.g. configs/cifar10_fast.py). For a GAN's "
                    "training speed use python -m benchmarks.train_throughput --preset wgan32, "
                    "wgan64 or cyclegan")
  if _SEEDS.value < 1:
    raise UserError(f"--seeds={_SEEDS.value} runs no seed: it is how many runs (seeds "
                    "0..N-1); give 1 or more")


def load_reference(path: str, metric: str) -> tuple:
  """(framework, measurement) of a --json this script wrote, for --target_from."""
  fix = "give a --json file that time_to_accuracy.py wrote"
  try:
    with open(path) as f:
      saved = json.load(f)
  except OSError as e:
    raise UserError(f"--target_from={path}: {e.strerror}; {fix}") from None
  except ValueError as e:  # not JSON (json.JSONDecodeError, UnicodeDecodeError)
    raise UserError(f"--target_from={path} is not JSON ({e}); {fix}") from None
  name = next((k for k in ("torch", "jaxgan") if isinstance(saved, dict) and k in saved), None)
  if name is None:
    raise UserError(f"--target_from={path} holds no 'torch' or 'jaxgan' measurement; {fix}")
  if saved.get("metric") != metric:  # its runs' histories hold only the metric it compared
    raise UserError(f"--target_from={path} measured {saved.get('metric')!r}, not {metric!r}; "
                    f"pass --metric={saved.get('metric')}")
  return name, saved[name]


def default_metric(config) -> str:
  return "accuracy_translate_tta" if config.get("tta_translate", False) else "accuracy_flip_tta"


class JaxRunner:
  """A ClassifierTask and its compiled step behind the interface `run_seed` times (the
  same as benchmarks/torch_recipes.TorchRecipe's): init(seed), train_epoch(epoch),
  evaluate(), sync(), and the attributes step, steps_per_epoch, num_epochs."""

  def __init__(self, config, task, devices):
    self.config, self.task, self.devices = config, task, devices
    self.p_step = task.compile_step(devices)
    self.steps_per_epoch, self.num_epochs = task.steps_per_epoch, task.num_epochs

  def init(self, seed):
    import jax
    from jaxgan import parallel
    with self.config.unlocked():
      self.config.seed = seed  # the task reads its data order from the config (measure()
      # puts the user's seed back)
    self.state = parallel.replicate(self.task.init_state(jax.random.PRNGKey(seed)), self.devices)
    self.step = 0

  def train_epoch(self, epoch, max_steps=None):
    end = min((epoch + 1) * self.steps_per_epoch, self.task.total_steps)
    if max_steps is not None:
      end = min(end, self.step + max_steps)
    while self.step < end:
      self.state, _ = self.p_step(self.state, self.task.train_batch(self.step))
      self.step += 1

  def evaluate(self):
    return {k: float(v) for k, v in self.task.evaluate(self.state).items()}

  def sync(self):
    import jax
    jax.block_until_ready(self.state)


def run_seed(runner, metric: str, target: float, seed: int, report=print) -> dict:
  """One timed run from a fresh state with `seed`; see the module docstring."""
  t0 = time.perf_counter()
  runner.init(seed)
  runner.sync()
  init_s = time.perf_counter() - t0
  train_s, history = 0.0, []
  for epoch in range(runner.num_epochs):
    t0 = time.perf_counter()
    runner.train_epoch(epoch)
    runner.sync()
    train_s += time.perf_counter() - t0
    t0 = time.perf_counter()
    result = runner.evaluate()
    eval_s = time.perf_counter() - t0
    done = runner.step / runner.steps_per_epoch
    history.append({"epoch": done, "train_s": train_s, "eval_s": eval_s, metric: result[metric]})
    report(f"     seed {seed} epoch {done:5.2f}: {metric} {result[metric]:.4f} "
           f"(training {train_s:.2f} s, this evaluation {eval_s:.2f} s)")
  run = {"seed": seed, "init_s": init_s, "train_s": train_s, "final_eval_s": eval_s,
         # airbench's own figure: initialisation, all training, the final evaluation.
         "total_s": init_s + train_s + eval_s, "final": result, "history": history}
  return set_target(run, metric, target)


def set_target(run: dict, metric: str, target: float) -> dict:
  """`reached`: the first evaluation at or above `target` and the time to it (initialisation +
  training so far + that evaluation; the evaluations before it are not counted)."""
  hit = next((h for h in run["history"] if h[metric] >= target), None)
  run["reached"] = hit and {"time_to_target_s": run["init_s"] + hit["train_s"] + hit["eval_s"],
                            "epoch": hit["epoch"], "eval_s": hit["eval_s"]}
  run["other_evals_s"] = sum(h["eval_s"] for h in run["history"] if h is not hit)
  return run


def measure(runner, name: str, load_s: float, target: float, metric: str, seeds: int,
            total_steps: int, batch_size: int, report=print) -> dict:
  """Warm up on a throwaway state (compilation, autotuning: `compile_s`), then time
  `seeds` runs of `runner`."""
  t0 = time.perf_counter()
  runner.init(10_000)
  runner.train_epoch(0, max_steps=2)
  result = runner.evaluate()
  runner.sync()
  compile_s = time.perf_counter() - t0
  if metric not in result:
    raise SystemExit(f"--metric={metric!r} is not reported by this config's evaluation; it "
                     f"reports {sorted(result)}")
  report(f"{name}: data loaded in {load_s:.1f} s; warm-up (compile, autotune) {compile_s:.1f} "
         f"s; {total_steps} steps of batch {batch_size}; target {metric} >= {target:.4g}")
  report(f"{'seed':>4s} {'init s':>7s} {'to target s':>12s} {'at epoch':>9s} "
         f"{'train s':>8s} {'final ' + metric:>32s}")
  runs = []
  user_seed = runner.config.seed
  for seed in range(seeds):
    r = run_seed(runner, metric, target, seed, report)
    runs.append(r)
    hit = r["reached"] or {}
    to_target = f"{hit['time_to_target_s']:.2f}" if hit else "not reached"
    at_epoch = f"{hit['epoch']:.2f}" if hit else "-"
    report(f"{seed:>4d} {r['init_s']:>7.2f} {to_target:>12s} {at_epoch:>9s} "
           f"{r['train_s']:>8.2f} {r['final'][metric]:>32.4f}")
  with runner.config.unlocked():
    runner.config.seed = user_seed
  summary = summarize(runs, metric, target, report, compile_s=compile_s, load_s=load_s,
                      framework=name)
  return {"compile_s": compile_s, "load_s": load_s, "runs": runs, "summary": summary}


def summarize(runs, metric, target, report=print, **extra) -> dict:
  """Mean and spread of the final accuracy; the time to `target` averaged over the seeds
  that reached it (how many did is `reached`); airbench's whole-run time."""
  finals = np.array([r["final"][metric] for r in runs])
  times = np.array([r["reached"]["time_to_target_s"] for r in runs if r["reached"]])
  totals = np.array([r["total_s"] for r in runs])
  summary = {"metric": metric, "target": target, "seeds": len(runs),
             "final_mean": float(finals.mean()),
             "final_std": float(finals.std(ddof=1)) if len(runs) > 1 else None,
             "reached": int(len(times)),
             "time_to_target_mean_s": float(times.mean()) if len(times) else None,
             "total_mean_s": float(totals.mean()), **extra}
  spread = f", std {summary['final_std']:.4f}" if summary["final_std"] is not None else ""
  report(f"final {metric}: mean {summary['final_mean']:.4f}{spread} over {len(runs)} seed(s); "
         f"whole run (init + training + final evaluation) {totals.mean():.2f} s; reached "
         f"{target:.4g} in {len(times)}/{len(runs)}"
         + (f", mean time to it {times.mean():.2f} s (over those)" if len(times) else ""))
  return summary


def retarget(result: dict, metric: str, target: float, report=print) -> dict:
  """A measurement's times to another target, from its per-epoch history."""
  for run in result["runs"]:
    set_target(run, metric, target)
  result["summary"] = summarize(result["runs"], metric, target, report,
                                **{k: result["summary"][k] for k in ("compile_s", "load_s",
                                                                     "framework")})
  return result


def torch_time_to_accuracy(config, target: float, metric: str, seeds: int, variant: str,
                           device=None, report=print) -> dict:
  """The same measurement for the PyTorch twin of the recipe (torch_recipes.py)."""
  from benchmarks.torch_recipes import TorchRecipe
  from jaxgan.data import load_classification_data
  t0 = time.perf_counter()
  data = load_classification_data(config, [config.train_split, config.eval_split])
  recipe = TorchRecipe(config, data, device, variant)
  load_s = time.perf_counter() - t0
  return measure(recipe, f"PyTorch {variant} on {recipe.setup.device}", load_s, target, metric,
                 seeds, recipe.total_steps, config.batch_size, report)


def time_to_accuracy(config, target: float, metric: str, seeds: int, report=print) -> dict:
  """jaxgan's measurement: {"compile_s", "load_s", "runs", "summary"}."""
  import jax
  from jaxgan import parallel
  from jaxgan.experiment import build_task, validate_config
  devices = parallel.local_devices(config.num_devices)
  validate_config(config, len(devices) * jax.process_count())
  t0 = time.perf_counter()
  task = build_task(config, devices)
  load_s = time.perf_counter() - t0
  return measure(JaxRunner(config, task, devices), f"jaxgan on {devices[0].device_kind} "
                 f"x {len(devices)} ({task.source})", load_s, target, metric, seeds,
                 task.total_steps, config.batch_size, report)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  logging.set_verbosity(logging.WARNING)  # as train.py: JAX's backend probing is not news
  with cli.user_errors():
    benchmark()


def benchmark():
  """The measurement the flags ask for; see the module docstring."""
  if _FRAMEWORK.value != "jax":  # JAX must not take the GPU memory PyTorch will need
    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
  config = _CONFIG.value
  check_flags(config)
  with config.unlocked():
    if _DATASET.value:
      config.dataset = _DATASET.value
    config.progress_bar = False
  metric = _METRIC.value or default_metric(config)
  target, reference = _TARGET.value, None
  if _TARGET_FROM.value:
    name, reference = load_reference(_TARGET_FROM.value, metric)
    target = reference["summary"]["final_mean"]
    print(f"target {metric} >= {target:.4f}: the mean final accuracy of {name} in "
          f"{_TARGET_FROM.value}", flush=True)
  from benchmarks import common  # JAX (common.machine() describes it)
  from jaxgan import parallel
  parallel.use_xla_flags(config.get("xla_flags", ""))  # before machine() starts JAX
  info = common.machine()
  common.print_machine(info)
  report = lambda s: print(s, flush=True)
  out = {"machine": info, "config": config.to_dict(), "metric": metric}

  def save():
    if _JSON.value:
      common.write_json(_JSON.value, out, default=str)

  if _FRAMEWORK.value in ("jax", "both"):
    out["jaxgan"] = time_to_accuracy(config, target, metric, _SEEDS.value, report)
    save()
  if _FRAMEWORK.value in ("torch", "both"):
    import torch  # optional: only for --framework torch or both
    info["torch"] = torch.__version__
    out["torch"] = torch_time_to_accuracy(config, target, metric, _SEEDS.value,
                                          _TORCH_VARIANT.value, report=report)
    save()
  if reference is not None:
    report(f"the reference ({_TARGET_FROM.value}), timed to the same target:")
    out["reference"] = retarget(reference, metric, target, report)
    save()
  ours = [out[k]["summary"] for k in ("jaxgan", "torch") if k in out]
  theirs = ours[1] if len(ours) == 2 else (out["reference"]["summary"] if reference else None)
  if theirs is not None:
    a = ours[0]
    report(f"final {metric}: {a['framework']} {a['final_mean']:.4f}, {theirs['framework']} "
           f"{theirs['final_mean']:.4f}; whole run {a['total_mean_s']:.2f} s vs "
           f"{theirs['total_mean_s']:.2f} s")
    if a["time_to_target_mean_s"] and theirs["time_to_target_mean_s"]:
      report(f"time to {target:.4f}: {a['time_to_target_mean_s']:.2f} s vs "
             f"{theirs['time_to_target_mean_s']:.2f} s (ratio "
             f"{theirs['time_to_target_mean_s'] / a['time_to_target_mean_s']:.2f})")


if __name__ == "__main__":
  app.run(main, flags_parser=cli.parse_flags)
