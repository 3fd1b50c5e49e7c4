"""Hostile and broken datasets, with real faults: FIFOs, links to /dev/zero, broken links,
link loops, archives of zeros that expand to gigabytes, a sparse tar declaring 8 GiB, images
declaring too many pixels. Each is skipped and counted like an unreadable image, or refused
with one clear DatasetError; never a hang, an exhausted memory or a traceback.

The hostile reads run in a child process under a time limit and an address-space cap, so
that the failures these tests guard against (a read blocked forever, gigabytes allocated)
fail the test instead of hanging the suite or the machine. The child reports its peak
memory: a file that is skipped must be skipped without being read.
"""
import gzip
import io
import json
import os
import re
import subprocess
import sys
import tarfile
import textwrap
import zlib

import numpy as np
import pytest

from jaxgan.data import folder
from jaxgan.errors import ConfigError, DatasetError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MiB = 1 << 20
ADDRESS_SPACE_CAP = 1536 * MiB  # the child's; importing jax reserves about 450 MB of it
DATASET_BYTES_ENV = "JAXGAN_MAX_DATASET_BYTES"  # spelt out: the documented name

pytestmark = pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="POSIX file types")

CHILD_PRELUDE = """
import json, resource, sys, warnings
if {cap}:
  resource.setrlimit(resource.RLIMIT_AS, ({cap}, {cap}))
sys.path.insert(0, {root!r})
from jaxgan.data import folder
from jaxgan.errors import DatasetError

def peak_mb():
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024

def attempt(load):
  '''What the user sees: the shapes loaded or the error, the warnings, and how much the
  peak memory grew while loading.'''
  before = peak_mb()
  with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    try:
      out = load()
      if isinstance(out, dict):
        result = {{"shapes": {{k: list(v[0].shape) for k, v in out.items()
                             if k not in ("class_names", "skipped")}}}}
      else:
        result = {{"shape": list(out.shape)}}
    except DatasetError as e:
      result = {{"error": str(e)}}
  result["warnings"] = [str(w.message) for w in caught]
  result["peak_growth_mb"] = peak_mb() - before
  return result
"""


def run_child(code: str, timeout: float = 30, cap: int | None = ADDRESS_SPACE_CAP,
              env: dict | None = None) -> dict:
  """Run `code` (which prints one JSON line of results) in a fresh Python that imports this
  checkout's jaxgan, and return the results; a hang or a crash fails the test."""
  program = CHILD_PRELUDE.format(cap=cap or 0, root=ROOT) + textwrap.dedent(code)
  try:
    out = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True,
                         timeout=timeout, env={**os.environ, **(env or {})})
  except subprocess.TimeoutExpired:
    pytest.fail(f"still reading after {timeout} s: the read blocked")
  assert out.returncode == 0, f"the child crashed:\n{out.stderr[-3000:]}"
  return json.loads(out.stdout.strip().splitlines()[-1])


def save_png(path, size=(8, 8), seed=0):
  from PIL import Image
  rng = np.random.default_rng(seed)
  Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(path)


def png_declaring(width: int, height: int, rows: bool = False) -> bytes:
  """A grayscale PNG of width x height. rows=False: only the header (no pixel data), so
  it is tiny whatever it declares; rows=True: real (zero) rows, compressed as streamed."""
  def chunk(kind, data):
    return (len(data).to_bytes(4, "big") + kind + data
            + zlib.crc32(kind + data).to_bytes(4, "big"))
  ihdr = width.to_bytes(4, "big") + height.to_bytes(4, "big") + bytes([8, 0, 0, 0, 0])
  if rows:
    z, row = zlib.compressobj(9), b"\0" * (width + 1)
    idat = b"".join(z.compress(row * 100) for _ in range(height // 100)) + z.flush()
  else:
    idat = zlib.compress(b"")
  return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat)
          + chunk(b"IEND", b""))


# Each fault, made in a folder that also holds readable images: (make it, how many image
# files it adds that must be skipped, the reason the warning must give).
FAULTS = {
    "fifo": (lambda d: os.mkfifo(d / "fifo.png"), 1, "FIFO"),
    "link_to_dev_zero": (lambda d: os.symlink("/dev/zero", d / "zero.png"), 1,
                         "character device"),
    "broken_link": (lambda d: os.symlink(d / "gone.png", d / "broken.png"), 1,
                    "broken symbolic link"),
    "broken_link_not_an_image": (lambda d: os.symlink(d / "gone", d / "notes"), 0, None),
    "link_loop": (lambda d: (os.symlink(d / "b.png", d / "a.png"),
                             os.symlink(d / "a.png", d / "b.png")), 2, "loop of symbolic links"),
    "folder_link_loop": (lambda d: os.symlink(d, d / "again"), 0, None),
}


@pytest.mark.parametrize("fault", FAULTS)
def test_special_files_and_bad_links_are_skipped_and_counted(tmp_path, fault):
  make, skipped, reason = FAULTS[fault]
  flat, classes = tmp_path / "flat", tmp_path / "cls" / "train" / "a"
  for d, n in ((flat, 3), (classes, 2), (tmp_path / "cls" / "test" / "a", 1)):
    d.mkdir(parents=True)
    for i in range(n):
      save_png(d / f"{i}.png", seed=i)
    if d != tmp_path / "cls" / "test" / "a":
      make(d)
  # With a cache: the cache key stats every file of the folder, images or not.
  got = run_child(f"""
    flat = attempt(lambda: folder.read_images({str(flat)!r}, 8, None, {str(tmp_path / 'c')!r}))
    cls = attempt(lambda: folder.read_image_folder({str(tmp_path / 'cls')!r}, 8,
                                                   cache_dir={str(tmp_path / 'c')!r}))
    print(json.dumps([flat, cls]))
  """)
  flat, cls = got
  assert flat["shape"] == [3, 8, 8, 3], flat
  assert cls["shapes"] == {"train": [2, 8, 8, 3], "test": [1, 8, 8, 3]}, cls
  for result in (flat, cls):
    if skipped:
      assert len(result["warnings"]) == 1, result
      assert f"skipped {skipped} unreadable image file(s)" in result["warnings"][0]
      assert reason in result["warnings"][0]
    else:
      assert result["warnings"] == []


def test_links_to_folders_are_read_once(tmp_path):
  """Links to folders are followed (a dataset assembled from links reads whole), each real
  folder once, so a link to a folder above ends the walk instead of repeating it."""
  real, data = tmp_path / "real", tmp_path / "data"
  (real / "deep").mkdir(parents=True)
  data.mkdir()
  save_png(real / "deep" / "x.png")
  save_png(data / "y.png", seed=1)
  os.symlink(real, data / "linked")
  os.symlink(data, real / "deep" / "up")  # data/linked/deep/up/linked/... without end
  images = folder.read_images(str(data), 8, None, cache_dir=str(tmp_path / "c"))
  assert images.shape == (2, 8, 8, 3)


def zeros_tar_gz(path, members: int, member_bytes: int, extra: dict | None = None,
                 kind: bytes = tarfile.REGTYPE):
  """A .tar.gz of `members` entries of type `kind` (files) of `member_bytes` zeros (a
  multiple of 1 MiB), written in milliseconds: concatenated gzip streams read as one, so
  one compressed MiB of zeros (1 KB) is repeated. Plus `extra` {name: bytes} files."""
  mib = gzip.compress(b"\0" * MiB)
  with open(path, "wb") as f:
    for name, data in (extra or {}).items():
      info = tarfile.TarInfo(name)
      info.size = len(data)
      f.write(gzip.compress(info.tobuf(tarfile.GNU_FORMAT) + data + b"\0" * (-len(data) % 512)))
    for i in range(members):
      info = tarfile.TarInfo(f"data/zeros{i}.png")
      info.size, info.type = member_bytes, kind
      f.write(gzip.compress(info.tobuf(tarfile.GNU_FORMAT)) + mib * (member_bytes // MiB))
    f.write(gzip.compress(b"\0" * 1024))
  return str(path)


def image_files(n: int) -> dict:
  """{archive name: PNG bytes} of n small readable images."""
  from PIL import Image
  out = {}
  for i in range(n):
    buf = io.BytesIO()
    Image.fromarray(np.full((8, 8, 3), 40 * i, np.uint8)).save(buf, "PNG")
    out[f"data/good{i}.png"] = buf.getvalue()
  return out


def test_an_archive_member_over_the_image_limit_is_skipped_unread(tmp_path):
  # 300 MiB of zeros in a 300 KB archive: over the 256 MiB per image file.
  archive = zeros_tar_gz(tmp_path / "bomb.tar.gz", 1, 300 * MiB, image_files(2))
  assert os.path.getsize(archive) < MiB
  got = run_child(f"""
    print(json.dumps(attempt(lambda: folder.read_images({archive!r}, 8, None, None))))
  """)
  assert got["shape"] == [2, 8, 8, 3], got
  assert got["peak_growth_mb"] < 100, got
  assert "skipped 1 unreadable image file(s)" in got["warnings"][0]
  assert "300.0 MiB, larger than the limit of 256.0 MiB per image file" in got["warnings"][0]


def test_an_archive_expanding_past_the_dataset_limit_is_one_clear_error(tmp_path):
  # 2 GiB of zeros in a 2 MB archive, 32 MiB per member; the limit lowered to 64 MiB.
  archive = zeros_tar_gz(tmp_path / "bomb.tar.gz", 64, 32 * MiB)
  got = run_child(f"""
    print(json.dumps(attempt(lambda: folder.read_images({archive!r}, 8, None, None))))
  """, env={DATASET_BYTES_ENV: "64M"})
  assert "error" in got, got
  assert re.search(f"^the images of {archive} take more than 64.0 MiB to read \\(reached at "
                   r"data/zeros\d.png\), the most jaxgan reads into memory for one dataset "
                   r"\(\$JAXGAN_MAX_DATASET_BYTES\); reading stopped there", got["error"]), got
  assert "raise the limit, e.g. JAXGAN_MAX_DATASET_BYTES=" in got["error"]


def test_an_archive_header_declaring_gigabytes_is_refused_unread(tmp_path):
  # A pax header, which tarfile reads whole: 4 GiB of zeros in a 4 MB archive.
  archive = zeros_tar_gz(tmp_path / "pax.tar.gz", 1, 4096 * MiB, image_files(1), tarfile.XHDTYPE)
  got = run_child(f"""
    print(json.dumps(attempt(lambda: folder.read_images({archive!r}, 8, None, None))))
  """)
  assert got["error"] == (
      f"could not read the archive {archive}: a 4.0 GiB extended header (at byte 1024), more "
      "than the 1.0 MiB any real archive has. Check that the file is a complete tar archive, "
      "or unpack it and pass the folder instead."), got
  assert got["peak_growth_mb"] < 100, got


def sparse_tar(path, name: str, declared: int, data: bytes):
  """A tar whose one member is GNU sparse ('S'): `data` stored, the rest of `declared`
  bytes a hole that reads as zeros. Python's tarfile reads these but never writes them."""
  info = tarfile.TarInfo(name)
  info.size, info.type = len(data), tarfile.GNUTYPE_SPARSE
  header = bytearray(info.tobuf(tarfile.GNU_FORMAT))
  header[386:398] = tarfile.itn(0, 12, tarfile.GNU_FORMAT)  # one data run: offset 0 ...
  header[398:410] = tarfile.itn(len(data), 12, tarfile.GNU_FORMAT)  # ... of len(data) bytes
  header[483:495] = tarfile.itn(declared, 12, tarfile.GNU_FORMAT)  # the expanded size
  header[148:156] = b" " * 8
  header[148:156] = b"%06o\0 " % sum(header)
  with open(path, "wb") as f:
    f.write(bytes(header) + data + b"\0" * (-len(data) % 512 + 1024))
  return str(path)


def test_a_sparse_tar_member_declaring_gigabytes_is_skipped_unread(tmp_path):
  archive = sparse_tar(tmp_path / "sparse.tar", "train/a/huge.png", 8 << 30, b"\x89PNG")
  assert os.path.getsize(archive) < 4096
  with tarfile.open(archive) as tar:
    assert tar.getmembers()[0].issparse() and tar.getmembers()[0].size == 8 << 30
  got = run_child(f"""
    print(json.dumps(attempt(lambda: folder.read_images({archive!r}, 8, None, None))))
  """)
  assert "none of the 1 image files" in got["error"], got
  assert "train/a/huge.png (8.0 GiB, larger than the limit of 256.0 MiB" in got["error"]
  assert got["peak_growth_mb"] < 100, got


def test_images_declaring_too_many_pixels_are_skipped_undecoded(tmp_path):
  d = tmp_path / "imgs"
  d.mkdir()
  save_png(d / "ok.png")
  (d / "declares_10_gigapixels.png").write_bytes(png_declaring(100000, 100000))
  big = png_declaring(12000, 12000, rows=True)  # 144 Mpx, a real image: 430 MB as RGB
  assert len(big) < MiB
  (d / "big.png").write_bytes(big)
  got = run_child(f"""
    print(json.dumps(attempt(lambda: folder.read_images({str(d)!r}, 8, None, None))))
  """)
  assert got["shape"] == [1, 8, 8, 3], got
  assert got["peak_growth_mb"] < 100, got
  warning = got["warnings"][0]
  assert "skipped 2 unreadable image file(s)" in warning
  assert "big.png (it has 12000x12000 pixels, more than the limit of 134,217,728" in warning
  assert "declares_10_gigapixels.png (it has 10,000,000,000 pixels, more than" in warning


def test_an_image_size_beyond_the_pixel_limit_is_named_as_the_problem(tmp_path):
  d = tmp_path / "imgs"
  (d / "train" / "a").mkdir(parents=True)
  for i in range(3):
    save_png(d / "train" / "a" / f"{i}.png", seed=i)
  got = run_child(f"""
    print(json.dumps([attempt(lambda: folder.read_images({str(d)!r}, 100000, None, None)),
                      attempt(lambda: folder.read_image_folder({str(d)!r}, 100000, ["train"],
                                                               cache_dir=None))]))
  """)
  for result in got:
    assert result["error"].startswith(
        "image size 100000: every image would be decoded to 100000x100000 pixels"), result
    assert "Use a smaller --config.image_size" in result["error"]


def test_decoded_images_over_the_dataset_limit_are_refused_before_decoding(
    tmp_path, monkeypatch):
  for i in range(3):
    save_png(tmp_path / f"{i}.png", seed=i)
  monkeypatch.setenv(DATASET_BYTES_ENV, "10K")
  with pytest.raises(DatasetError, match=r"3 images of 64x64 pixels from .* take 36.0 KiB as "
                     r"uint8 arrays, more than 10.0 KiB.*JAXGAN_MAX_DATASET_BYTES"):
    folder.read_images(str(tmp_path), 64, None, cache_dir=None)
  assert folder.read_images(str(tmp_path), 32, None, cache_dir=None).shape == (3, 32, 32, 3)
  monkeypatch.setenv(DATASET_BYTES_ENV, "lots")
  with pytest.raises(ConfigError, match="JAXGAN_MAX_DATASET_BYTES='lots' is not a size"):
    folder.read_images(str(tmp_path), 8, None, cache_dir=None)


def test_limits_are_keyword_parameters_and_part_of_the_cache_key(tmp_path):
  d = tmp_path / "data" / "train" / "a"
  d.mkdir(parents=True)
  for i in range(3):
    save_png(d / f"{i}.png", size=(40, 40), seed=i)  # about 5 KB each
  cache = str(tmp_path / "cache")
  assert len(folder.read_image_folder(str(tmp_path / "data"), 8, ["train"],
                                      cache_dir=cache)["train"][0]) == 3
  # Other limits are not served the cache of the defaults.
  small = folder.Limits(image_bytes=1000)
  with pytest.raises(DatasetError, match=r"0.png \(.*larger than the limit of 1000 bytes"):
    folder.read_image_folder(str(tmp_path / "data"), 8, ["train"], cache_dir=cache,
                             limits=small)
  few_pixels = folder.Limits(image_pixels=1000)
  with pytest.raises(DatasetError, match=r"none of the 3 image files .*0.png \(it has 40x40 "
                     "pixels, more than the limit of 1,000 per image"):
    folder.read_images(str(tmp_path / "data"), 8, "train", cache_dir=cache, limits=few_pixels)
  with pytest.raises(DatasetError, match=r"take more than 100 bytes to read \(reached at \S*0.png\)"
                     r".*\(the limit given\)"):
    folder.read_images(str(tmp_path / "data"), 8, "train", cache_dir=None,
                       limits=folder.Limits(dataset_bytes=100))


TRANSLATE = """
import jax, jax.numpy as jnp, numpy as np
from jaxgan.translation import translate_folder
from jaxgan.models.cyclegan import ResnetGenerator, _reference_keys
# A tiny generator in the reference repository's layout (1 block, width 4), as an .npz.
template = jax.eval_shape(ResnetGenerator(4, 1).init, jax.random.PRNGKey(0),
                          jnp.zeros((1, 32, 32, 3)))["params"]
weights = {{}}
for prefix, path in _reference_keys(1, 5).items():
  node = template
  for name in path.split("/"):
    node = node[name]
  o, kh, kw, i = node["kernel"].shape
  weights[prefix + ".weight"] = np.full((o, i, kh, kw), 0.01, np.float32)
  weights[prefix + ".bias"] = np.zeros(node["bias"].shape, np.float32)
np.savez({weights!r}, **weights)
result = translate_folder(None, {input!r}, {output!r}, weights={weights!r}, progress=False)
print(json.dumps({{"written": result["written"], "skipped": result["skipped"]}}))
"""


def test_translate_skips_special_files_and_bad_links(tmp_path):
  photos = tmp_path / "photos"
  photos.mkdir()
  save_png(photos / "photo.png", size=(12, 8))
  for make, _, _ in FAULTS.values():
    if make is not FAULTS["folder_link_loop"][0]:
      make(photos)
  got = run_child(TRANSLATE.format(weights=str(tmp_path / "g.npz"), input=str(photos),
                                   output=str(tmp_path / "out")), timeout=120, cap=None)
  assert got["written"] == 1, got
  assert sorted(got["skipped"]) == [
      "a.png (a loop of symbolic links)", "b.png (a loop of symbolic links)",
      "broken.png (a broken symbolic link (its target does not exist))",
      "fifo.png (a FIFO (named pipe), not a regular file)",
      "zero.png (a character device, not a regular file)"]
  assert os.listdir(tmp_path / "out") == ["photo.png"]
