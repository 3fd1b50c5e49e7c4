"""Side by side: jaxgan rows of train_throughput.py runs that differ in XLA flags or --set.

    python -m benchmarks.compare_runs gpu_out/flags0_cyclegan.json gpu_out/flags1_cyclegan.json \
        gpu_out/stack0_cyclegan.json

For each (preset, batch size, dtype) the first file's row is the baseline. Each row prints
its ms per step, the speed-up over the baseline (baseline ms / this ms), and how far its last
timed step's metrics (losses) are from the baseline's: the largest relative difference over
the metrics both have. Same data, same start: a setting that is faster but computes another
step shows there, beyond the rounding of other kernels (in bfloat16 that rounding can reach
1e-2 after some steps). Files that are missing or hold no jaxgan row are listed as such, so a
run that timed out shows too.
"""
import argparse
import json
import os
import sys


def load_rows(path: str) -> list:
  """The jaxgan rows of one train_throughput.py JSON, each with its file's XLA flags; a
  ValueError for a file that is not JSON or not such a report."""
  with open(path) as f:
    try:
      report = json.load(f)
    except ValueError as e:  # json.JSONDecodeError, UnicodeDecodeError
      raise ValueError(f"not JSON ({e})") from None
  rows = report.get("results") if isinstance(report, dict) else None
  if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
    raise ValueError("not a train_throughput.py report (no list of result rows)")
  flags = report.get("machine", {}).get("xla_flags", "")
  return [dict(row, file=os.path.basename(path), xla_flags=flags)
          for row in rows if row.get("framework") == "jaxgan"]


def metrics_gap(a: dict, b: dict) -> float | None:
  """Largest |a - b| / max(|a|, |b|, 1e-3) over the metrics both have (lr and the like
  agree); the floor keeps a metric near zero (an accuracy of 0) from dividing by nothing."""
  gaps = [abs(a[k] - b[k]) / max(abs(a[k]), abs(b[k]), 1e-3) for k in a.keys() & b.keys()]
  return max(gaps) if gaps else None


def compare(rows: list) -> list:
  """Rows with `speedup` and `metrics_gap` against the first row of their configuration."""
  baselines, out = {}, []
  for row in rows:
    if "error" in row:  # a failed measurement is nobody's baseline
      out.append(dict(row, speedup=None, metrics_gap=None))
      continue
    base = baselines.setdefault((row["preset"], row["batch_size"], row["dtype"]), row)
    out.append(dict(row, speedup=base["step_ms"] / row["step_ms"],
                    metrics_gap=metrics_gap(row.get("last_metrics", {}),
                                            base.get("last_metrics", {}))))
  return out


def describe(row: dict) -> str:
  """What sets this row apart: its XLA flags (--xla_ dropped) and --set overrides."""
  parts = [f.replace("--xla_", "") for f in row["xla_flags"].split()]
  parts += [f"set {o}" for o in row.get("overrides", [])]
  return " ".join(parts) or "(defaults)"


def table(rows: list) -> str:
  lines = [f"{'file':28s} {'preset':9s} {'batch':>5s} {'dtype':9s} {'ms/step':>9s} "
           f"{'speed-up':>8s} {'loss gap':>9s}  setting"]
  for r in compare(rows):
    if "error" in r:
      lines.append(f"{r['file']:28s} {r['preset']:9s} failed: {r['error'][:120]}")
      continue
    speedup = "-" if r["speedup"] is None else f"{r['speedup']:.2f}x"
    gap = "-" if r["metrics_gap"] is None else f"{r['metrics_gap']:.1e}"
    lines.append(f"{r['file']:28s} {r['preset']:9s} {r['batch_size']:>5d} {r['dtype']:9s} "
                 f"{r['step_ms']:>9.2f} {speedup:>8s} {gap:>9s}  {describe(r)}")
  return "\n".join(lines)


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("files", nargs="+", help="train_throughput.py --json files; the first "
                      "of each configuration is the baseline")
  args = parser.parse_args(argv)
  rows = []
  for path in args.files:
    if not os.path.exists(path):
      print(f"{path}: missing (skipped or timed out?)")
      continue
    try:
      found = load_rows(path)
    except (OSError, ValueError) as e:
      print(f"error: {path}: {getattr(e, 'strerror', None) or e}; give the JSON files "
            "train_throughput.py --json wrote", file=sys.stderr)
      return 2
    if not found:
      print(f"{path}: no jaxgan row")
    rows += found
  if rows:
    print(table(rows))
  return 0 if rows else 1


if __name__ == "__main__":
  sys.exit(main())
