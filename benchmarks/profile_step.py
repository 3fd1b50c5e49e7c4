"""Where a train step's time goes: a jax.profiler trace of a few steps of a benchmark
preset (benchmarks/common.py, as train_throughput's), summarised per step.

    python -m benchmarks.profile_step --preset darknet --batch_size 256
    python -m benchmarks.profile_step --preset darknet --batch_size 256 --trace_dir /tmp/t
        # keeps the trace for TensorBoard's profile plugin or ui.perfetto.dev

After the compiling step and `--warm_steps` more, two windows of `--steps`
steps are timed, then one more runs under the profiler (its Python tracer
off). Printed per step:
- step time: host clock from the first call to the end of the last step, in
  the second untraced window (the first is shown beside it: when the two
  differ, the steps have not settled and more warm steps are needed), and the
  same under the profiler (the fractions below use that);
- dispatch: how long the step call takes to return on the host (pmap flattens
  and checks every leaf of the state, so it grows with the number of arrays);
- for each line of each device in the trace (GPU streams, TPU cores): events
  and busy time (the union of the events' intervals), and busy / wall;
- the device events with the most total time, and the host's busiest events.

A device line busy for most of the wall time means the kernels are the cost;
a device mostly idle while the step is slow means launches or the host are
(fewer, larger kernels; CUDA graphs; several steps per dispatch). The traced
run may launch kernels one by one where the untraced one replays CUDA graphs,
so the untraced step time is the one to quote. On the CPU backend there is no
device line: the host threads are summarised instead.
"""
import argparse
import collections
import glob
import gzip
import json
import os
import tempfile
import time

import jax

from benchmarks import common
from benchmarks.common import PRESETS
from jaxgan import parallel


def union_ms(intervals) -> float:
  """Total length (ms) of the union of (start_us, duration_us) intervals."""
  total, end = 0.0, float("-inf")
  for start, dur in sorted(intervals):
    stop = start + dur
    if stop <= end:
      continue
    total += stop - max(start, end)
    end = stop
  return total / 1000


def load_trace(trace_dir: str):
  """(complete events, process names, thread names) of the newest perfetto trace there."""
  paths = glob.glob(os.path.join(trace_dir, "**", "perfetto_trace.json.gz"), recursive=True)
  if not paths:
    raise SystemExit(f"no perfetto_trace.json.gz under {trace_dir}: the profiler wrote no trace")
  with gzip.open(max(paths, key=os.path.getmtime)) as f:
    data = json.load(f)
  events = data["traceEvents"] if isinstance(data, dict) else data
  procs, threads = {}, {}
  for e in events:
    if e.get("ph") == "M" and e.get("name") == "process_name":
      procs[e["pid"]] = e["args"]["name"]
    elif e.get("ph") == "M" and e.get("name") == "thread_name":
      threads[(e["pid"], e["tid"])] = e["args"]["name"]
  complete = [e for e in events if e.get("ph") == "X" and "dur" in e]
  return complete, procs, threads


def kernel_events(events, procs, threads, step_ms: float) -> list:
  """The device events that are kernels, each counted once. GPU traces also hold derived
  lines (modules, steps, and "XLA Ops", which repeats every kernel under its HLO name): rank
  the streams' kernels on a GPU, "XLA Ops" on a TPU, else every event shorter than half a
  step (a step-long span would hide the kernels)."""
  device = [e for e in events if procs.get(e["pid"], "").startswith("/device:")]
  line = lambda e: threads.get((e["pid"], e["tid"]), "")
  for prefix in ("Stream", "XLA Ops"):
    chosen = [e for e in device if line(e).startswith(prefix)]
    if chosen:
      return chosen
  return [e for e in device if e["dur"] / 1000 < 0.5 * step_ms]


def summarize(events, procs, threads, steps: int, wall_ms: float, top: int = 12) -> dict:
  """Per-step figures of a trace of `steps` steps that took `wall_ms` in all."""
  lines = collections.defaultdict(list)
  for e in events:
    lines[(e["pid"], e["tid"])].append(e)
  device_lines, host_lines = [], []
  for (pid, tid), evs in lines.items():
    process = procs.get(pid, str(pid))
    row = {"process": process, "thread": threads.get((pid, tid), str(tid)),
           "events_per_step": len(evs) / steps,
           "busy_ms_per_step": union_ms((e["ts"], e["dur"]) for e in evs) / steps}
    row["busy_fraction"] = row["busy_ms_per_step"] * steps / wall_ms if wall_ms else None
    (device_lines if process.startswith("/device:") else host_lines).append(row)
  by_busy = lambda rows: sorted(rows, key=lambda r: -r["busy_ms_per_step"])

  def top_names(evs):
    totals, counts = collections.Counter(), collections.Counter()
    for e in evs:
      totals[e["name"]] += e["dur"] / 1000
      counts[e["name"]] += 1
    return [{"name": n, "ms_per_step": t / steps, "calls_per_step": counts[n] / steps}
            for n, t in totals.most_common(top)]

  step_ms = wall_ms / steps
  device_events = kernel_events(events, procs, threads, step_ms)
  host_events = [e for e in events if not procs.get(e["pid"], "").startswith("/device:")]
  return {"steps": steps, "wall_ms_per_step": step_ms,
          "device_lines": by_busy(device_lines), "host_lines": by_busy(host_lines),
          "top_device_events": top_names(device_events),
          "top_host_events": top_names(host_events)}


def profile(preset, batch_size, dtype, steps, trace_dir, warm_steps=10):
  """Time two windows of `steps` steps of a preset, then trace one more.

  Returns (wall ms per step of the first and of the second window, dispatch ms per step of
  the second, traced wall ms in all, state arrays, device kind). The timed windows run
  without the profiler, whose own work would inflate the host-side figures; the Python
  tracer stays off in the traced one for the same reason. On an H100 the darknet step took
  21 ms over steps 3-12 and 12.5 ms traced over the next ten, where the training loop's
  steady state is 7.1 ms: hence the warm-up and the second window.
  """
  task, devices, state, p_step = common.build_preset(preset, batch_size, dtype, 1)
  state = parallel.replicate(state, devices)
  first = PRESETS[preset][2]
  for i in range(1 + warm_steps):  # compile, then warm steps
    state, metrics = p_step(state, task.train_batch(first + i))
    jax.block_until_ready((state, metrics))
  batches = [task.train_batch(first + 1 + warm_steps + i) for i in range(steps)]

  def run():
    nonlocal state
    dispatch, t0 = 0.0, time.perf_counter()
    for batch in batches:
      t = time.perf_counter()
      state, metrics = p_step(state, batch)
      dispatch += time.perf_counter() - t
    jax.block_until_ready((state, metrics))
    return 1000 * (time.perf_counter() - t0), 1000 * dispatch / steps

  settling, _ = run()
  wall, dispatch = run()
  options = jax.profiler.ProfileOptions()
  options.python_tracer_level = 0
  with jax.profiler.trace(trace_dir, create_perfetto_trace=True, profiler_options=options):
    traced_wall, _ = run()
  n_arrays = len(jax.tree_util.tree_leaves(state))
  return settling / steps, wall / steps, dispatch, traced_wall, n_arrays, devices[0].device_kind


def format_report(r) -> str:
  out = [f"{r['preset']} batch {r['batch_size']} {r['dtype']} on {r['device']}: "
         f"{r['step_ms']:.2f} ms per step (the window before: {r['first_window_step_ms']:.2f}), "
         f"dispatch {r['dispatch_ms_per_step']:.2f} ms of it on "
         f"the host ({r['state_arrays']} state arrays); under the profiler "
         f"{r['wall_ms_per_step']:.2f} ms per step"]
  lines = r["device_lines"] or r["host_lines"]
  kind = "device" if r["device_lines"] else "host (no device lines in the trace)"
  out.append(f"{kind} lines: {'events/step':>12s} {'busy ms/step':>13s} {'busy/wall':>10s}  line")
  for row in lines[:10]:
    frac = "-" if row["busy_fraction"] is None else f"{row['busy_fraction']:.0%}"
    out.append(f"{'':13s}{row['events_per_step']:>12.1f} {row['busy_ms_per_step']:>13.3f} "
               f"{frac:>10s}  {row['process']} / {row['thread']}")
  for title, key in (("device events", "top_device_events"), ("host events", "top_host_events")):
    if r[key]:
      out.append(f"top {title}: {'ms/step':>9s} {'calls/step':>11s}  name")
      out += [f"{'':13s}{e['ms_per_step']:>9.3f} {e['calls_per_step']:>11.1f}  {e['name'][:90]}"
              for e in r[key]]
  return "\n".join(out)


def main(argv=None):
  p = argparse.ArgumentParser(prog="python -m benchmarks.profile_step",
                              description=__doc__.split("\n\n")[0])
  p.add_argument("--preset", default="darknet", choices=sorted(PRESETS))
  p.add_argument("--batch_size", type=int, default=256)
  p.add_argument("--dtype", default="bfloat16", choices=("bfloat16", "float32"))
  p.add_argument("--steps", type=int, default=20)
  p.add_argument("--warm_steps", type=int, default=10,
                 help="Steps run after the compiling one before any timing.")
  p.add_argument("--top", type=int, default=12, help="How many of the busiest events to list.")
  p.add_argument("--trace_dir", default="", help="Keep the trace here (default: a temporary "
                 "folder, deleted after the summary).")
  p.add_argument("--json", default="", help="Write the summary here too.")
  args = p.parse_args(argv)
  if args.steps < 1 or args.batch_size < 1 or args.warm_steps < 0:
    p.error("--steps and --batch_size must be positive, --warm_steps not negative")
  common.print_machine(common.machine())
  with tempfile.TemporaryDirectory() as tmp:
    trace_dir = args.trace_dir or tmp
    first_ms, step_ms, dispatch, traced_wall, n_arrays, device = profile(
        args.preset, args.batch_size, args.dtype, args.steps, trace_dir, args.warm_steps)
    report = {"preset": args.preset, "batch_size": args.batch_size, "dtype": args.dtype,
              "device": device, "first_window_step_ms": first_ms, "step_ms": step_ms,
              "dispatch_ms_per_step": dispatch, "warm_steps": args.warm_steps,
              "state_arrays": n_arrays,
              **summarize(*load_trace(trace_dir), args.steps, traced_wall, args.top)}
  print(format_report(report), flush=True)
  if args.json:
    common.write_json(args.json, report)
  return report


if __name__ == "__main__":
  main()
