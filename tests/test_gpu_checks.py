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


def test_recompressed_archive_keeps_names_modes_and_pictures(tmp_path):
  """gpu_checks.sh prepare shrinks horse2zebra this way to travel to the GPU machine."""
  import io
  import tarfile
  import numpy as np
  from PIL import Image
  from benchmarks.recompress_tar import recompress
  rng = np.random.default_rng(0)
  smooth = lambda: np.repeat(np.repeat(rng.integers(0, 256, (4, 4, 3), np.uint8), 8, 0), 8, 1)
  files = {"trainA/a.jpg": (smooth(), None), "trainB/gray.jpg": (smooth()[..., 0], "L")}
  with tarfile.open(tmp_path / "in.tar", "w") as tar:
    for name, (img, mode) in files.items():
      buf = io.BytesIO()
      Image.fromarray(img, mode).save(buf, format="PNG")
      info = tarfile.TarInfo(name)
      info.size = len(buf.getvalue())
      tar.addfile(info, io.BytesIO(buf.getvalue()))
    info = tarfile.TarInfo("README")
    info.size = 2
    tar.addfile(info, io.BytesIO(b"hi"))
  count, _ = recompress(str(tmp_path / "in.tar"), str(tmp_path / "out.tar"), 90)
  assert count == 2
  with tarfile.open(tmp_path / "out.tar") as tar:
    assert tar.getnames() == ["trainA/a.jpg", "trainB/gray.jpg", "README"]
    assert tar.extractfile("README").read() == b"hi"
    for name, (img, mode) in files.items():
      out = Image.open(io.BytesIO(tar.extractfile(name).read()))
      assert out.format == "JPEG" and out.mode == (mode or "RGB")
      assert np.abs(np.asarray(out, np.float64) - img).mean() < 16  # (another picture: ~85)
