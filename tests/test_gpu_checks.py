"""benchmarks/gpu_checks.sh runs only on a lent GPU machine, whose minutes are few: a broken
script must fail here instead."""
import os
import re
import subprocess

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "benchmarks", "gpu_checks.sh")


def test_script_parses_and_every_part_is_documented_and_in_the_usage():
  assert subprocess.run(["bash", "-n", SCRIPT]).returncode == 0
  text = open(SCRIPT).read()
  accepted = re.search(r"\n    (prepare\|[\w|]+)\)\n", text).group(1).split("|")
  assert {"flags", "stack", "conv_fusion", "ab", "rerun"} <= set(accepted)
  header = text[:text.index("set -uo pipefail")]
  out = subprocess.run(["bash", SCRIPT, "no_such_part"], capture_output=True, text=True)
  assert out.returncode == 2
  for part in accepted:
    if part != "prepare":
      assert re.search(rf"^#   {part}\s", header, re.M), f"{part} is not described"
      assert re.search(rf"\b{part}\b", out.stderr), f"{part} is missing from the usage"
    # Each part the case statement accepts has a branch that runs it.
    assert re.search(rf"^  (\w+\|)*{part}(\|\w+)*\)$", text, re.M), part
