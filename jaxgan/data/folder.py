"""Image folders and archives of them, decoded once into uint8 arrays.

Layout: `<root>/<split>/<class>/<image>` (e.g. `train/cat/0001.jpg`), the
layout of `tfds.folder_dataset.ImageFolder` and of the shared CIFAR-10 copy.
`<root>` may also be a tar archive (.tar, .tar.gz, .tgz, .tar.xz, .tar.bz2)
holding that layout, read without unpacking it. Decoded arrays are cached
as .npz files so the next run starts in a second.

Only regular files are opened (links followed; FIFOs, devices, sockets, broken
links and link loops are skipped like unreadable images), and what one
dataset may make this process read or allocate is limited (`Limits`), so that
a hostile or broken dataset is a warning or one clear error, never a hang or
an exhausted memory.
"""
import dataclasses
import errno
import hashlib
import io
import logging
import multiprocessing
import os
import re
import stat
import tarfile
import warnings
from concurrent.futures import ProcessPoolExecutor
from typing import Iterable, Sequence

import numpy as np

from jaxgan.errors import ConfigError, DatasetError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm")
ARCHIVE_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".tar.xz", ".txz", ".tar.bz2", ".tbz2")
_CACHE_VERSION = 1

MiB, GiB = 1 << 20, 1 << 30
# A photo is rarely over 50 MB; an uncompressed 8192x8192 TIFF is 200 MB. Larger image files
# are skipped: read whole, they are what a small archive of zeros expands into.
MAX_IMAGE_BYTES = 256 * MiB
# 134 Mpx (16384x8192), more than a 102 Mpx medium-format photo; 400 MB decoded. Checked
# before decoding: a 100-byte PNG can declare 100000x100000 pixels (30 GB decoded). Below
# PIL's own bomb limit (179 Mpx), so this is the limit users meet.
MAX_IMAGE_PIXELS = 1 << 27
# The most bytes of one dataset held in memory, read or decoded. None: $JAXGAN_MAX_DATASET_BYTES,
# else half of this machine's memory (the encoded files and the decoded arrays coexist while
# decoding, and stacking the arrays copies them once more).
MAX_DATASET_BYTES = None
DATASET_BYTES_ENV = "JAXGAN_MAX_DATASET_BYTES"
_READ_CHUNK = 4 * MiB
# What tarfile keeps in memory for each member it lists (measured: 456 bytes): a 14 MB .tar.gz
# of empty entries lists two million of them.
_MEMBER_BYTES = 512
# Pax and GNU long-name headers are rarely over a few KB, and tarfile reads each one whole.
_MAX_HEADER_BYTES = MiB


@dataclasses.dataclass(frozen=True)
class Limits:
  """What one dataset may make this process read or allocate. A file over a per-image limit
  is skipped and counted like an unreadable one; a dataset over `dataset_bytes` is refused
  with a DatasetError (None: see MAX_DATASET_BYTES)."""
  image_bytes: int = MAX_IMAGE_BYTES
  image_pixels: int = MAX_IMAGE_PIXELS
  dataset_bytes: int | None = MAX_DATASET_BYTES

  def dataset_limit(self) -> tuple[int, str]:
    """(the most bytes one dataset may hold in memory, where that number comes from)."""
    if self.dataset_bytes is not None:
      return self.dataset_bytes, "the limit given"
    if os.environ.get(DATASET_BYTES_ENV):
      return _parse_size(os.environ[DATASET_BYTES_ENV]), f"${DATASET_BYTES_ENV}"
    memory = _memory_bytes()
    if memory is None:
      return 16 * GiB, "the default where the machine's memory is unknown"
    return memory // 2, f"half of this machine's {_size(memory)} of memory"

  def cache_key(self) -> str:
    """What of these limits changes which images a dataset yields: "" for the defaults, so
    that caches written before the limits existed stay valid."""
    if (self.image_bytes, self.image_pixels) == (MAX_IMAGE_BYTES, MAX_IMAGE_PIXELS):
      return ""
    return f":limits={self.image_bytes},{self.image_pixels}"


class SkippedFile(Exception):
  """A file not read as an image; the message says why (e.g. `a FIFO, not a regular file`)."""


def _memory_bytes() -> int | None:
  """This machine's memory, or its container's limit where that is lower."""
  sizes = []
  try:
    sizes.append(os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
  except (AttributeError, ValueError, OSError):
    pass
  for cgroup in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
    try:
      with open(cgroup) as f:
        text = f.read().strip()
    except OSError:
      continue
    if text.isdigit():
      sizes.append(int(text))
  return min(sizes) if sizes else None


def _parse_size(text: str) -> int:
  match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(?:i?b)?\s*", text, re.IGNORECASE)
  if not match:
    raise ConfigError(f"{DATASET_BYTES_ENV}={text!r} is not a size: give a number of bytes, "
                      "optionally with K, M, G or T (binary units), e.g. 64G.")
  return int(float(match[1]) * 1024 ** " KMGT".index(match[2].upper() or " "))


def _size(n: int) -> str:
  for unit, scale in (("GiB", GiB), ("MiB", MiB), ("KiB", 1 << 10)):
    if n >= scale:
      return f"{n / scale:.1f} {unit}"
  return f"{n} bytes"


def is_archive(path: str) -> bool:
  return path.lower().endswith(ARCHIVE_SUFFIXES) and os.path.isfile(path)


def default_cache_dir() -> str:
  root = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
  return os.environ.get("JAXGAN_CACHE_DIR") or os.path.join(root, "jaxgan")


def to_rgb(img):
  """A PIL image as 8-bit RGB: grayscale, palette, alpha (onto white) and 16-bit converted."""
  from PIL import Image
  if img.mode in ("I;16", "I;16B", "I;16L", "I"):
    arr = np.asarray(img, dtype=np.float64)
    img = Image.fromarray(np.clip(arr / 257.0, 0, 255).astype(np.uint8))
  if img.mode != "RGB":
    if img.mode in ("RGBA", "LA") or (img.mode == "P" and "transparency" in img.info):
      img = img.convert("RGBA")
      background = Image.new("RGBA", img.size, (255, 255, 255, 255))
      img = Image.alpha_composite(background, img)
    img = img.convert("RGB")
  return img


def check_pixels(width: int, height: int, max_pixels: int, what: str = "it has") -> None:
  """SkippedFile if an image of width x height has more than max_pixels pixels."""
  if width * height > max_pixels:
    raise SkippedFile(f"{what} {width}x{height} pixels, more than the limit of "
                      f"{max_pixels:,} per image")


def load_image(data: bytes, max_pixels: int = MAX_IMAGE_PIXELS):
  """The image encoded in `data` as an 8-bit RGB PIL image. One that declares more than
  `max_pixels` pixels raises SkippedFile before a pixel is decoded."""
  from PIL import Image
  with warnings.catch_warnings():
    warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # max_pixels rules instead
    try:
      img = Image.open(io.BytesIO(data))  # not closed: that would void the image returned
      check_pixels(*img.size, max_pixels)
      img.load()
      return to_rgb(img)
    except Image.DecompressionBombError as e:  # PIL's own check, in Image.open, came first
      pixels = re.search(r"\((\d+) pixels\)", str(e))
      raise SkippedFile(f"it has {int(pixels[1]):,} pixels, more than the limit of "
                        f"{max_pixels:,} per image" if pixels else str(e)) from None


def decode_image(data: bytes, image_size: int | None,
                 max_pixels: int = MAX_IMAGE_PIXELS) -> np.ndarray:
  """Decode to RGB uint8 of size image_size (shorter side resized, centre crop);
  `image_size=None` keeps the image's own size.

  Grayscale, palette, RGBA and 16-bit images are converted to 8-bit RGB. One
  with more than `max_pixels` pixels, or resized to more, raises SkippedFile.
  """
  from PIL import Image
  img = load_image(data, max_pixels)
  w, h = img.size
  if image_size is not None and (w, h) != (image_size, image_size):
    scale = image_size / min(w, h)
    nw, nh = max(image_size, round(w * scale)), max(image_size, round(h * scale))
    check_pixels(nw, nh, max_pixels, "resized, it would have")  # a panorama's long side
    img = img.resize((nw, nh), Image.BILINEAR)
    left, top = (nw - image_size) // 2, (nh - image_size) // 2
    img = img.crop((left, top, left + image_size, top + image_size))
  return np.asarray(img, dtype=np.uint8)


def _decode_many(args):
  blobs, image_size, max_pixels = args
  return [_decode_or_reason(blob, image_size, max_pixels) for blob in blobs]


def _decode_or_reason(blob: bytes | str, image_size: int | None, max_pixels: int
                      ) -> np.ndarray | str:
  """The decoded image, or why it was skipped ("": simply corrupt or not an image). A str
  blob is the reason it was skipped while reading."""
  if isinstance(blob, str):
    return blob
  try:
    return decode_image(blob, image_size, max_pixels)
  except SkippedFile as e:
    return str(e)
  except MemoryError:
    return "out of memory while decoding it"
  except Exception:  # corrupt, truncated or not an image: the report's words say so
    return ""


def _bad_entry(name: str, reason: str) -> str:
  return f"{name} ({reason})" if reason else name


def is_image_name(name: str) -> bool:
  base = os.path.basename(name)
  return not base.startswith(".") and base.lower().endswith(IMAGE_EXTENSIONS)


_NOT_REGULAR = ((stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISCHR, "a character device"),
                (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"),
                (stat.S_ISDIR, "a folder"))


def _require_regular(mode: int) -> None:
  if not stat.S_ISREG(mode):
    kind = next((kind for test, kind in _NOT_REGULAR if test(mode)), "a special file")
    raise SkippedFile(f"{kind}, not a regular file")


def _os_reason(path: str, e: OSError) -> str:
  if e.errno == errno.ELOOP:
    return "a loop of symbolic links"
  if e.errno == errno.ENOENT and os.path.islink(path):
    return "a broken symbolic link (its target does not exist)"
  return e.strerror or type(e).__name__


def _too_big(limit: int, size: int | None = None) -> str:
  return (f"{_size(size) + ', ' if size else ''}larger than the limit of {_size(limit)} "
          "per image file")


def read_image_file(path: str, max_bytes: int = MAX_IMAGE_BYTES) -> bytes:
  """The bytes of the file at `path` (links followed). Only a regular file is read, and at
  most `max_bytes` of it, so that a FIFO cannot block and a link to /dev/zero cannot fill
  the memory; anything else raises SkippedFile saying why."""
  try:
    _require_regular(os.stat(path).st_mode)  # a FIFO or device is never opened at all
    # O_NONBLOCK: should the path become a FIFO after the check, opening it cannot block.
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
  except OSError as e:
    raise SkippedFile(_os_reason(path, e)) from None
  with os.fdopen(fd, "rb", buffering=0) as f:
    st = os.fstat(fd)
    _require_regular(st.st_mode)  # the file opened, not the one checked before
    if st.st_size > max_bytes:
      raise SkippedFile(_too_big(max_bytes, st.st_size))
    try:
      return _read_capped(f, max_bytes, st.st_size)
    except OSError as e:
      raise SkippedFile(_os_reason(path, e)) from None


def _read_capped(f, max_bytes: int, expected: int) -> bytes:
  """All of `f`, or SkippedFile once it gives more than max_bytes. The first read asks for
  the `expected` size and a byte more (a file read whole in one call sees its end), the
  rest in pieces: a single read(max_bytes) would allocate max_bytes for every small file."""
  parts, n = [], 0
  want = min(expected, max_bytes) + 1
  while True:
    part = f.read(want)
    if not part:
      return b"".join(parts)
    parts.append(part)
    n += len(part)
    if n > max_bytes:
      raise SkippedFile(_too_big(max_bytes))
    want = min(_READ_CHUNK, max_bytes + 1 - n)


class _Budget:
  """Reads the image files of one dataset under its limits: a file over the per-image limit
  is skipped (its reason returned instead of its bytes), and reading stops with an error
  once the bytes read pass the dataset limit, before the memory runs out."""

  def __init__(self, source: str, limits: Limits):
    self.source, self.limits, self.used = source, limits, 0
    self.limit, self.why = limits.dataset_limit()

  def read_file(self, path: str) -> bytes | str:
    try:
      data = read_image_file(path, self.limits.image_bytes)
    except SkippedFile as e:
      return str(e)
    self._charge(len(data), path)
    return data

  def list_member(self, member: tarfile.TarInfo) -> tarfile.TarInfo:
    self._charge(_MEMBER_BYTES, member.name)
    return member

  def read_member(self, tar: tarfile.TarFile, member: tarfile.TarInfo) -> bytes | str:
    # A sparse member's size is its expanded size: a 20 KB tar can hold a 1 TB one.
    if member.size > self.limits.image_bytes:
      return _too_big(self.limits.image_bytes, member.size)
    f = tar.extractfile(member)
    if f is None:
      return "not a regular file"
    try:
      data = _read_capped(f, self.limits.image_bytes, member.size)
    except SkippedFile as e:
      return str(e)
    self._charge(len(data), member.name)
    return data

  def _charge(self, n: int, name: str) -> None:
    self.used += n
    if self.used > self.limit:
      raise DatasetError(
          f"the images of {self.source} take more than {_size(self.limit)} to read (reached "
          f"at {name}), the most jaxgan reads into memory for one dataset ({self.why}); reading "
          "stopped there rather than exhaust the memory. Use a smaller dataset or a part of "
          f"it, or, on a machine with the memory, raise the limit, e.g. {DATASET_BYTES_ENV}=64G.")


def check_image_size(image_size: int | None, limits: Limits = Limits()) -> None:
  """DatasetError if every image would be decoded to more pixels than one image may have."""
  if image_size is not None and image_size * image_size > limits.image_pixels:
    side = int(limits.image_pixels ** 0.5)
    raise DatasetError(
        f"image size {image_size}: every image would be decoded to {image_size}x{image_size} "
        f"pixels ({_size(3 * image_size * image_size)}), more than the limit of "
        f"{limits.image_pixels:,} pixels ({side}x{side}) per image. Use a smaller "
        "--config.image_size (--config.load_size for CycleGAN).")


def _check_decoded_size(blobs: list, image_size: int | None, source: str, limits: Limits) -> None:
  """DatasetError, before decoding, if the decoded images would not fit the dataset limit."""
  if image_size is None:  # each keeps its own size: bounded per image by the pixel limit
    return
  n = sum(isinstance(b, bytes) for b in blobs)
  need = 3 * n * image_size * image_size
  limit, why = limits.dataset_limit()
  if need > limit:
    raise DatasetError(
        f"{n} images of {image_size}x{image_size} pixels from {source} take {_size(need)} as "
        f"uint8 arrays, more than {_size(limit)}, the most jaxgan holds in memory for one "
        f"dataset ({why}). Use a smaller --config.image_size (--config.load_size for "
        "CycleGAN) or fewer images, or, on a machine with the memory, raise the limit, e.g. "
        f"{DATASET_BYTES_ENV}=64G.")


def _walk(root: str) -> Iterable[tuple[str, list[str]]]:
  """(folder, its sorted file names) for every folder under root, links to folders followed
  but each real folder entered once, so that a link to a folder above cannot make the walk
  endless."""
  seen = set()
  for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
    try:
      st = os.stat(dirpath)
    except OSError:
      dirnames[:] = []
      continue
    if (st.st_dev, st.st_ino) in seen:
      dirnames[:] = []
      continue
    seen.add((st.st_dev, st.st_ino))
    dirnames.sort()
    yield dirpath, sorted(filenames)


def _iter_directory(root: str, splits: Sequence[str], budget: _Budget
                    ) -> Iterable[tuple[str, str, str, bytes | str]]:
  """(split, class, file name, its bytes or why it was skipped) of every image file."""
  for split in splits:
    split_dir = os.path.join(root, split)
    if not os.path.isdir(split_dir):
      continue
    for cls in sorted(os.listdir(split_dir)):
      cls_dir = os.path.join(split_dir, cls)
      if not os.path.isdir(cls_dir):
        continue
      for name in sorted(os.listdir(cls_dir)):
        if is_image_name(name):
          yield split, cls, name, budget.read_file(os.path.join(cls_dir, name))


def _iter_archive(path: str, splits: Sequence[str], budget: _Budget
                  ) -> Iterable[tuple[str, str, str, bytes | str]]:
  try:
    with tarfile.open(path, "r:*", tarinfo=_TarInfo) as tar:
      for member in map(budget.list_member, tar):
        if not member.isfile() or not is_image_name(member.name):
          continue
        parts = [p for p in member.name.split("/") if p not in ("", ".")]
        if len(parts) < 3 or parts[-3] not in splits:
          continue
        yield parts[-3], parts[-2], parts[-1], budget.read_member(tar, member)
  except (tarfile.TarError, EOFError, OSError, MemoryError) as e:
    raise DatasetError(_archive_error(path, e)) from e


def _read_all(path: str, subdir: str | None, require_subdir: bool, budget: _Budget
              ) -> tuple[bool, list[tuple[str, bytes | str]]]:
  """(whether `path` has a `subdir` folder, [(relative name, bytes or why it was skipped)]
  of every image under that folder if it has one, else under `path`)."""
  if os.path.isdir(path):
    has_subdir = bool(subdir) and os.path.isdir(os.path.join(path, subdir))
    if require_subdir and not has_subdir:
      raise DatasetError(_missing_subdir(path, subdir))
    root = os.path.join(path, subdir) if has_subdir else path
    items = []
    for dirpath, filenames in _walk(root):
      for name in filter(is_image_name, filenames):
        file = os.path.join(dirpath, name)
        items.append((os.path.relpath(file, root), budget.read_file(file)))
    return has_subdir, items
  try:
    with tarfile.open(path, "r:*", tarinfo=_TarInfo) as tar:
      members = [m for m in map(budget.list_member, tar)
                 if m.isfile() and is_image_name(m.name)]
      has_subdir = bool(subdir) and any(subdir in m.name.split("/")[:-1] for m in members)
      if has_subdir:
        members = [m for m in members if subdir in m.name.split("/")[:-1]]
      elif require_subdir:
        raise DatasetError(_missing_subdir(path, subdir))
      return has_subdir, [(m.name, budget.read_member(tar, m)) for m in members]
  except (tarfile.TarError, EOFError, OSError, MemoryError) as e:
    raise DatasetError(_archive_error(path, e)) from e


class _TarInfo(tarfile.TarInfo):
  """Refuses a pax or GNU long-name header over _MAX_HEADER_BYTES before tarfile reads it
  whole: a small compressed archive can declare one of gigabytes."""

  def _proc_member(self, tar):
    if self.type in _LONG_HEADERS and self.size > _MAX_HEADER_BYTES:
      raise tarfile.ReadError(f"a {_size(self.size)} extended header (at byte {self.offset}), "
                              f"more than the {_size(_MAX_HEADER_BYTES)} any real archive has")
    return super()._proc_member(tar)


_LONG_HEADERS = (tarfile.GNUTYPE_LONGNAME, tarfile.GNUTYPE_LONGLINK, tarfile.XHDTYPE,
                 tarfile.XGLTYPE, tarfile.SOLARIS_XHDTYPE)


def _archive_error(path: str, e: Exception) -> str:
  if isinstance(e, MemoryError):  # inside tarfile: a header (pax, long name) read whole
    return (f"ran out of memory reading the archive {path}: one of its headers declares more "
            "data than this machine can hold, so it is damaged or not a dataset. Check the "
            "file, or unpack it and pass the folder instead.")
  return (f"could not read the archive {path}: {e}. Check that the file is a complete tar "
          "archive, or unpack it and pass the folder instead.")


def _missing_subdir(path: str, subdir: str) -> str:
  return (f"{path} has no {subdir}/ folder of images. Expected the layout "
          f"<root>/{subdir}/*.jpg (e.g. trainA/ and trainB/ for CycleGAN), or pass the two "
          "image folders themselves as --config.dataset=<folder A>,<folder B>.")


def read_images(path: str, image_size: int, subdir: str | None = "train",
                cache_dir: str | None = "", num_workers: int | None = None,
                require_subdir: bool = False, bad_images: str = "skip",
                limits: Limits = Limits()) -> np.ndarray:
  """Every image under `path` (a folder of images in any layout, or a tar archive).

  If `path` has a `subdir` folder (e.g. `train/` of a classification
  layout), only that part is read; with `require_subdir` it must have one.
  Returns uint8 (N, image_size, image_size, 3) in sorted file order;
  unreadable files (and those over `limits`) are skipped with a warning
  (`bad_images="stop"`: an error).
  """
  return read_images_and_layout(path, image_size, subdir, cache_dir, num_workers,
                                require_subdir, bad_images, limits)[0]


def read_images_and_layout(path: str, image_size: int, subdir: str | None = "train",
                           cache_dir: str | None = "", num_workers: int | None = None,
                           require_subdir: bool = False, bad_images: str = "skip",
                           limits: Limits = Limits()) -> tuple[np.ndarray, bool]:
  """`read_images`, and whether `path` had a `subdir` folder (False: every image was read)."""
  path = os.path.expanduser(path)
  _check_dataset_path(path, "a folder (or tar archive) of images")
  check_image_size(image_size, limits)
  cache_file = None
  if cache_dir is not None:
    cache_dir = cache_dir or default_cache_dir()
    key = hashlib.sha1(f"{_CACHE_VERSION}:images-with-layout:{_fingerprint(path)}:"
                       f"{image_size}:{subdir}{':strict' if require_subdir else ''}"
                       f"{limits.cache_key()}".encode()).hexdigest()[:20]
    cache_file = os.path.join(cache_dir, "folders", f"{key}.npz")
    if os.path.exists(cache_file):
      try:
        with np.load(cache_file) as z:
          images, bad = z["images"], [str(b) for b in z.get("skipped", [])]
          found = bool(z["found_subdir"])
      except Exception as e:
        logging.warning("ignoring unreadable cache %s (%s); decoding again", cache_file, e)
      else:
        report_bad_files(bad, path, bad_images)
        return images, found
  found, items = _read_all(path, subdir, require_subdir, _Budget(path, limits))
  if not items:
    raise DatasetError(f"found no image files ({', '.join(IMAGE_EXTENSIONS)}) under {path}.")
  names, blobs = [n for n, _ in items], [b for _, b in items]
  del items
  arrays = _decode_all(blobs, image_size, num_workers, path, limits)
  pairs = sorted(zip(names, arrays), key=lambda p: p[0])
  bad = [_bad_entry(n, a) for n, a in pairs if isinstance(a, str)]
  good = [a for _, a in pairs if not isinstance(a, str)]
  if not good:
    raise DatasetError(f"none of the {len(pairs)} image files under {path} could be read "
                       f"(e.g. {', '.join(bad[:3])}): they are corrupt, empty, not images, "
                       "too large or not regular files.")
  images = np.stack(good)
  if cache_file is not None:
    _save_arrays(cache_file, {"images": images, "skipped": np.asarray(bad, dtype=str),
                              "found_subdir": np.asarray(found)})
  report_bad_files(bad, path, bad_images)
  return images, found


def _fingerprint(path: str) -> str:
  """Changes when files are added, removed or rewritten."""
  h = hashlib.sha1(os.path.abspath(path).encode())
  if os.path.isfile(path):
    st = os.stat(path)
    h.update(f"{st.st_size}:{st.st_mtime_ns}".encode())
  else:
    for dirpath, filenames in _walk(path):
      for name in filenames:
        try:
          st = os.stat(os.path.join(dirpath, name))
        except OSError as e:  # a broken link or a link loop: skipped when read, noted here
          h.update(f"{dirpath}/{name}:error {e.errno}".encode())
        else:
          h.update(f"{dirpath}/{name}:{st.st_size}:{st.st_mtime_ns}".encode())
  return h.hexdigest()


def _layout_help(path: str, splits: Sequence[str]) -> str:
  return (f"Expected {path}/<split>/<class>/<image files> with split in {list(splits)}, e.g. "
          f"{path}/train/cat/0001.jpg (the layout of CIFAR-10 image-folder copies).")


def read_image_folder(path: str, image_size: int, splits: Sequence[str] = ("train", "test"),
                      cache_dir: str | None = "", num_workers: int | None = None,
                      bad_images: str = "skip", limits: Limits = Limits()) -> dict:
  """Decode every image of `splits` under `path` (a folder or a tar archive).

  Returns {"class_names": [...], split: (images uint8 NHWC, labels int32)}.
  Labels index the sorted class folder names of the first split. Unreadable
  files (and those over `limits`) are skipped with a warning that counts them
  (`bad_images="stop"`: an error), and listed under "skipped".
  `cache_dir`: "" for the default cache, None to disable caching.
  """
  path = os.path.expanduser(path)
  _check_dataset_path(path, "an image folder", _layout_help(path, splits))
  check_image_size(image_size, limits)
  cache_file = _cache_file(path, image_size, splits, limits, cache_dir)
  if cache_file is not None and os.path.exists(cache_file):
    try:
      result = _load_cache(cache_file, splits)
    except Exception as e:  # a damaged cache is rebuilt, never trusted
      logging.warning("ignoring unreadable cache %s (%s); decoding again", cache_file, e)
    else:
      report_bad_files(result["skipped"], path, bad_images)
      return result

  budget = _Budget(path, limits)
  items = (_iter_archive(path, splits, budget) if os.path.isfile(path)
           else _iter_directory(path, splits, budget))
  keys, blobs = [], []
  for split, cls, name, blob in items:
    keys.append((split, cls, name))
    blobs.append(blob)
  first = splits[0]
  class_names = sorted({cls for split, cls, _ in keys if split == first})
  if not class_names:
    raise DatasetError(f"found no images for split {first!r} under {path}. "
                       f"{_layout_help(path, splits)}")
  unknown = sorted({f"{split}/{cls}" for split, cls, _ in keys if cls not in class_names})
  if unknown:
    raise DatasetError(f"{path} has class folders {unknown[:5]} that split {first!r} lacks; "
                       f"every class must have images in {first!r}.")
  arrays = _decode_all(blobs, image_size, num_workers, path, limits)
  del blobs

  result = _by_split(keys, arrays, class_names, splits, image_size)
  if not len(result[first][0]):
    bad = result["skipped"]
    raise DatasetError(f"no readable images in split {first!r} under {path} "
                       f"({len(bad)} unreadable files, e.g. {', '.join(bad[:3])}).")
  if cache_file is not None:
    _save_cache(cache_file, result, splits)
  report_bad_files(result["skipped"], path, bad_images)
  return result


def _check_dataset_path(path: str, what: str, hint: str = "") -> None:
  """A DatasetError unless `path` is a folder or an archive; `what` names what it should
  hold, `hint` (e.g. the expected layout) follows each message."""
  hint = f" {hint}" if hint else ""
  if not os.path.exists(path):
    raise DatasetError(f"dataset path {path!r} does not exist. Give --config.dataset "
                       f"(train.py) or --dataset (evaluate.py) a TFDS name or {what}.{hint}")
  if os.path.isfile(path) and not is_archive(path):
    raise DatasetError(f"dataset path {path!r} is a file but not a tar archive "
                       f"({', '.join(ARCHIVE_SUFFIXES)}).{hint}")


def _cache_file(path: str, image_size: int, splits: Sequence[str], limits: Limits,
                cache_dir: str | None) -> str | None:
  """Where the decoded arrays of this read are cached ("": the default folder; None: not)."""
  if cache_dir is None:
    return None
  key = hashlib.sha1(f"{_CACHE_VERSION}:{_fingerprint(path)}:{image_size}:{sorted(splits)}"
                     f"{limits.cache_key()}".encode()).hexdigest()[:20]
  return os.path.join(cache_dir or default_cache_dir(), "folders", f"{key}.npz")


def _by_split(keys: list, arrays: list, class_names: list, splits: Sequence[str],
              image_size: int) -> dict:
  """{"class_names", "skipped", split: (images, labels)} from the decoded files, sorted by
  (split, class, file name): archives list members in any order."""
  index = {c: i for i, c in enumerate(class_names)}
  per_split = {s: [] for s in splits}
  bad = []
  for (split, cls, name), arr in sorted(zip(keys, arrays), key=lambda kv: kv[0]):
    if isinstance(arr, str):
      bad.append(_bad_entry(f"{split}/{cls}/{name}", arr))
    else:
      per_split[split].append((arr, index[cls]))
  result = {"class_names": class_names, "skipped": bad}
  for s in splits:
    pairs = per_split[s]
    images = (np.stack([a for a, _ in pairs]) if pairs
              else np.zeros((0, image_size, image_size, 3), np.uint8))
    result[s] = (images, np.asarray([c for _, c in pairs], np.int32))
  return result


def _decode_all(blobs: list, image_size: int | None, num_workers: int | None, source: str,
                limits: Limits) -> list:
  """Decoded images (where unreadable: why, a str), in parallel, with a progress bar for
  many: the first read of a large folder takes a while, later runs read the cache."""
  from jaxgan.writers import progress_bar
  _check_decoded_size(blobs, image_size, source, limits)
  num_workers = num_workers or min(8, os.cpu_count() or 1)
  chunk = max(250, len(blobs) // (num_workers * 8))
  jobs = [(blobs[i:i + chunk], image_size, limits.image_pixels)
          for i in range(0, len(blobs), chunk)]
  bar = progress_bar(len(blobs), f"decoding {len(blobs)} images (cached for later runs)",
                     enabled=len(blobs) >= 1000, unit="image")
  out = []
  if num_workers <= 1 or len(blobs) < 2000:
    parts = map(_decode_many, jobs)
    for part in parts:
      out += part
      bar.update(len(part))
  else:
    # spawn, not fork: forking a process that has started JAX's threads can deadlock.
    with ProcessPoolExecutor(num_workers, mp_context=multiprocessing.get_context("spawn")) as pool:
      for part in pool.map(_decode_many, jobs):
        out += part
        bar.update(len(part))
  bar.close()
  return out


def report_bad_files(bad: Sequence[str], path: str, policy: str) -> None:
  """Warn with a count of unreadable files, or (policy "stop") refuse the dataset."""
  if not bad:
    return
  what = (f"{len(bad)} unreadable image file(s) under {path} (e.g. {', '.join(bad[:5])}): "
          "corrupt, truncated, empty, not images, too large or not regular files")
  if policy == "stop":
    raise DatasetError(f"{what}. Remove or replace them, or set --config.bad_images=skip to "
                       "train without them.")
  warnings.warn(f"skipped {what}.")


def _save_cache(cache_file: str, result: dict, splits: Sequence[str]) -> None:
  arrays = {"class_names": np.asarray(result["class_names"]),
            "skipped": np.asarray(result["skipped"], dtype=str)}
  for s in splits:
    arrays[f"{s}_images"], arrays[f"{s}_labels"] = result[s]
  _save_arrays(cache_file, arrays)


def _save_arrays(cache_file: str, arrays: dict) -> None:
  try:
    os.makedirs(os.path.dirname(cache_file), exist_ok=True)
    tmp = f"{cache_file}.{os.getpid()}.tmp.npz"
    np.savez(tmp, **arrays)
    os.replace(tmp, cache_file)  # atomic: a reader never sees half a cache
  except OSError as e:
    logging.warning("could not write the dataset cache %s (%s); continuing without it",
                    cache_file, e)


def _load_cache(cache_file: str, splits: Sequence[str]) -> dict:
  with np.load(cache_file) as z:
    result = {"class_names": [str(c) for c in z["class_names"]],
              "skipped": [str(b) for b in z.get("skipped", [])]}
    for s in splits:
      result[s] = (z[f"{s}_images"], z[f"{s}_labels"])
  return result
