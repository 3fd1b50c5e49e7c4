"""Image folders and archives of them, decoded once into uint8 arrays.

Layout: `<root>/<split>/<class>/<image>` (e.g. `train/cat/0001.jpg`), the
layout of `tfds.folder_dataset.ImageFolder` and of the shared CIFAR-10 copy.
`<root>` may also be a tar archive (.tar, .tar.gz, .tgz, .tar.xz, .tar.bz2)
holding that layout, read without unpacking it. Decoded arrays are cached
as .npz files so the next run starts in a second.
"""
import hashlib
import io
import logging
import multiprocessing
import os
import tarfile
import warnings
from concurrent.futures import ProcessPoolExecutor
from typing import Iterable, Sequence

import numpy as np

from jaxgan.errors import DatasetError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm")
ARCHIVE_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".tar.xz", ".txz", ".tar.bz2", ".tbz2")
_CACHE_VERSION = 1


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


def decode_image(data: bytes, image_size: int | None) -> np.ndarray:
  """Decode to RGB uint8 of size image_size (shorter side resized, centre crop);
  `image_size=None` keeps the image's own size.

  Grayscale, palette, RGBA and 16-bit images are converted to 8-bit RGB.
  """
  from PIL import Image
  with Image.open(io.BytesIO(data)) as img:
    img.load()
    img = to_rgb(img)
    w, h = img.size
    if image_size is not None and (w, h) != (image_size, image_size):
      scale = image_size / min(w, h)
      nw, nh = max(image_size, round(w * scale)), max(image_size, round(h * scale))
      img = img.resize((nw, nh), Image.BILINEAR)
      left, top = (nw - image_size) // 2, (nh - image_size) // 2
      img = img.crop((left, top, left + image_size, top + image_size))
    return np.asarray(img, dtype=np.uint8)


def _decode_many(args):
  blobs, image_size = args
  out = []
  for blob in blobs:
    try:
      out.append(decode_image(blob, image_size))
    except Exception:  # corrupt, truncated or not an image: reported by the caller
      out.append(None)
  return out


def is_image_name(name: str) -> bool:
  base = os.path.basename(name)
  return not base.startswith(".") and base.lower().endswith(IMAGE_EXTENSIONS)


def _iter_directory(root: str, splits: Sequence[str]) -> Iterable[tuple[str, str, str, bytes]]:
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
          with open(os.path.join(cls_dir, name), "rb") as f:
            yield split, cls, name, f.read()


def _iter_archive(path: str, splits: Sequence[str]) -> Iterable[tuple[str, str, str, bytes]]:
  try:
    with tarfile.open(path, "r:*") as tar:
      for member in tar:
        if not member.isfile() or not is_image_name(member.name):
          continue
        parts = [p for p in member.name.split("/") if p not in ("", ".")]
        if len(parts) < 3 or parts[-3] not in splits:
          continue
        f = tar.extractfile(member)
        if f is not None:
          yield parts[-3], parts[-2], parts[-1], f.read()
  except (tarfile.TarError, EOFError, OSError) as e:
    raise DatasetError(f"could not read the archive {path}: {e}. Check that the file is a "
                       "complete tar archive, or unpack it and pass the folder instead.") from e


def _read_all(path: str, subdir: str | None, require_subdir: bool = False
              ) -> tuple[bool, list[tuple[str, bytes]]]:
  """(whether `path` has a `subdir` folder, [(relative name, bytes)] of every image under
  that folder if it has one, else under `path`)."""
  if os.path.isdir(path):
    has_subdir = bool(subdir) and os.path.isdir(os.path.join(path, subdir))
    if require_subdir and not has_subdir:
      raise DatasetError(_missing_subdir(path, subdir))
    root = os.path.join(path, subdir) if has_subdir else path
    items = []
    for dirpath, dirnames, filenames in os.walk(root):
      dirnames.sort()
      for name in sorted(filenames):
        if is_image_name(name):
          with open(os.path.join(dirpath, name), "rb") as f:
            items.append((os.path.relpath(os.path.join(dirpath, name), root), f.read()))
    return has_subdir, items
  try:
    with tarfile.open(path, "r:*") as tar:
      members = [m for m in tar.getmembers() if m.isfile() and is_image_name(m.name)]
      has_subdir = bool(subdir) and any(subdir in m.name.split("/")[:-1] for m in members)
      if has_subdir:
        members = [m for m in members if subdir in m.name.split("/")[:-1]]
      elif require_subdir:
        raise DatasetError(_missing_subdir(path, subdir))
      items = []
      for m in members:
        f = tar.extractfile(m)
        if f is not None:
          items.append((m.name, f.read()))
      return has_subdir, items
  except (tarfile.TarError, EOFError, OSError) as e:
    raise DatasetError(f"could not read the archive {path}: {e}. Check that the file is a "
                       "complete tar archive, or unpack it and pass the folder instead.") from e


def _missing_subdir(path: str, subdir: str) -> str:
  return (f"{path} has no {subdir}/ folder of images. Expected the layout "
          f"<root>/{subdir}/*.jpg (e.g. trainA/ and trainB/ for CycleGAN), or pass the two "
          "image folders themselves as --config.dataset=<folder A>,<folder B>.")


def read_images(path: str, image_size: int, subdir: str | None = "train",
                cache_dir: str | None = "", num_workers: int | None = None,
                require_subdir: bool = False, bad_images: str = "skip") -> np.ndarray:
  """Every image under `path` (a folder of images in any layout, or a tar archive).

  If `path` has a `subdir` folder (e.g. `train/` of a classification
  layout), only that part is read; with `require_subdir` it must have one.
  Returns uint8 (N, image_size, image_size, 3) in sorted file order;
  unreadable files are skipped with a warning (`bad_images="stop"`: an error).
  """
  return read_images_and_layout(path, image_size, subdir, cache_dir, num_workers,
                                require_subdir, bad_images)[0]


def read_images_and_layout(path: str, image_size: int, subdir: str | None = "train",
                           cache_dir: str | None = "", num_workers: int | None = None,
                           require_subdir: bool = False, bad_images: str = "skip"
                           ) -> tuple[np.ndarray, bool]:
  """`read_images`, and whether `path` had a `subdir` folder (False: every image was read)."""
  path = os.path.expanduser(path)
  if not os.path.exists(path):
    raise DatasetError(f"dataset path {path!r} does not exist. Give --config.dataset "
                       "(train.py) or --dataset (evaluate.py) a TFDS name or a folder (or tar "
                       "archive) of images.")
  if os.path.isfile(path) and not is_archive(path):
    raise DatasetError(f"dataset path {path!r} is a file but not a tar archive "
                       f"({', '.join(ARCHIVE_SUFFIXES)}).")
  cache_file = None
  if cache_dir is not None:
    cache_dir = cache_dir or default_cache_dir()
    key = hashlib.sha1(f"{_CACHE_VERSION}:images-with-layout:{_fingerprint(path)}:{image_size}:{subdir}"
                       f"{':strict' if require_subdir else ''}"
                       .encode()).hexdigest()[:20]
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
  found, items = _read_all(path, subdir, require_subdir)
  if not items:
    raise DatasetError(f"found no image files ({', '.join(IMAGE_EXTENSIONS)}) under {path}.")
  names, blobs = [n for n, _ in items], [b for _, b in items]
  del items
  arrays = _decode_all(blobs, image_size, num_workers)
  pairs = sorted(zip(names, arrays), key=lambda p: p[0])
  bad = [n for n, a in pairs if a is None]
  good = [a for _, a in pairs if a is not None]
  if not good:
    raise DatasetError(f"none of the {len(pairs)} image files under {path} could be read "
                       f"(e.g. {', '.join(bad[:3])}): they are corrupt, empty or not images.")
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
    for dirpath, dirnames, filenames in os.walk(path):
      dirnames.sort()
      for name in sorted(filenames):
        st = os.stat(os.path.join(dirpath, name))
        h.update(f"{dirpath}/{name}:{st.st_size}:{st.st_mtime_ns}".encode())
  return h.hexdigest()


def _layout_help(path: str, splits: Sequence[str]) -> str:
  return (f"Expected {path}/<split>/<class>/<image files> with split in {list(splits)}, e.g. "
          f"{path}/train/cat/0001.jpg (the layout of CIFAR-10 image-folder copies).")


def read_image_folder(path: str, image_size: int, splits: Sequence[str] = ("train", "test"),
                      cache_dir: str | None = "", num_workers: int | None = None,
                      bad_images: str = "skip") -> dict:
  """Decode every image of `splits` under `path` (a folder or a tar archive).

  Returns {"class_names": [...], split: (images uint8 NHWC, labels int32)}.
  Labels index the sorted class folder names of the first split. Unreadable
  files are skipped with a warning that counts them (`bad_images="stop"`: an
  error), and listed under "skipped".
  `cache_dir`: "" for the default cache, None to disable caching.
  """
  path = os.path.expanduser(path)
  if not os.path.exists(path):
    raise DatasetError(f"dataset path {path!r} does not exist. Give --config.dataset "
                       "(train.py) or --dataset (evaluate.py) a TFDS name or an image folder. "
                       f"{_layout_help(path, splits)}")
  if os.path.isfile(path) and not is_archive(path):
    raise DatasetError(f"dataset path {path!r} is a file but not a tar archive "
                       f"({', '.join(ARCHIVE_SUFFIXES)}). {_layout_help(path, splits)}")
  if cache_dir == "":
    cache_dir = default_cache_dir()
  cache_file = None
  if cache_dir is not None:
    key = hashlib.sha1(f"{_CACHE_VERSION}:{_fingerprint(path)}:{image_size}:{sorted(splits)}"
                       .encode()).hexdigest()[:20]
    cache_file = os.path.join(cache_dir, "folders", f"{key}.npz")
    if os.path.exists(cache_file):
      try:
        result = _load_cache(cache_file, splits)
      except Exception as e:  # a damaged cache is rebuilt, never trusted
        logging.warning("ignoring unreadable cache %s (%s); decoding again", cache_file, e)
      else:
        report_bad_files(result["skipped"], path, bad_images)
        return result

  items = _iter_archive(path, splits) if os.path.isfile(path) else _iter_directory(path, splits)
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
  arrays = _decode_all(blobs, image_size, num_workers)
  del blobs

  index = {c: i for i, c in enumerate(class_names)}
  # Sort by (split, class, file name): archives list members in any order.
  per_split = {s: [] for s in splits}
  bad = []
  for (split, cls, name), arr in sorted(zip(keys, arrays), key=lambda kv: kv[0]):
    if arr is None:
      bad.append(f"{split}/{cls}/{name}")
    else:
      per_split[split].append((arr, index[cls]))
  result = {"class_names": class_names, "skipped": bad}
  for s in splits:
    pairs = per_split[s]
    images = (np.stack([a for a, _ in pairs]) if pairs
              else np.zeros((0, image_size, image_size, 3), np.uint8))
    result[s] = (images, np.asarray([c for _, c in pairs], np.int32))
  if not len(result[first][0]):
    raise DatasetError(f"no readable images in split {first!r} under {path} "
                       f"({len(bad)} unreadable files, e.g. {', '.join(bad[:3])}).")
  if cache_file is not None:
    _save_cache(cache_file, result, splits)
  report_bad_files(bad, path, bad_images)
  return result


def _decode_all(blobs: list, image_size: int, num_workers: int | None) -> list:
  """Decoded images (None where unreadable), in parallel, with a progress bar for many: the
  first read of a large folder takes a while, later runs read the cache."""
  from jaxgan.writers import progress_bar
  num_workers = num_workers or min(8, os.cpu_count() or 1)
  chunk = max(250, len(blobs) // (num_workers * 8))
  jobs = [(blobs[i:i + chunk], image_size) for i in range(0, len(blobs), chunk)]
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
          "corrupt, truncated, empty or not images")
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
