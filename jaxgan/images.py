"""Image helpers: [-1, 1] floats to uint8, grids, PNG files; output files written without
following links (`write_file`)."""
import contextlib
import os
import secrets
import stat
import sys
from typing import BinaryIO, Callable, Sequence

import numpy as np

from jaxgan.errors import WorkdirError


def to_uint8(x) -> np.ndarray:
  """Images in [-1, 1] (any float array) to uint8 [0, 255]."""
  x = np.asarray(x, np.float32)
  return np.clip(np.round((x + 1.0) * 127.5), 0, 255).astype(np.uint8)


def from_uint8(x):
  """uint8 [0, 255] to float32 [-1, 1] (works on numpy and jax arrays)."""
  return x.astype("float32") / 127.5 - 1.0


def make_grid(images: np.ndarray, ncol: int | None = None, pad: int = 2,
              fill: int = 255) -> np.ndarray:
  """Tile uint8 NHWC images into one HWC image, `ncol` per row (default: square)."""
  images = np.asarray(images)
  n, h, w, c = images.shape
  ncol = ncol or int(np.ceil(np.sqrt(n)))
  nrow = int(np.ceil(n / ncol))
  grid = np.full((nrow * (h + pad) + pad, ncol * (w + pad) + pad, c), fill, images.dtype)
  for i, img in enumerate(images):
    r, q = divmod(i, ncol)
    top, left = pad + r * (h + pad), pad + q * (w + pad)
    grid[top:top + h, left:left + w] = img
  return grid


def png_writer(image: np.ndarray) -> Callable[[BinaryIO], None]:
  """What `write_file` calls to put `image` (uint8 HW or HWC) in a file as PNG."""
  from PIL import Image
  return lambda f: Image.fromarray(np.asarray(image)).save(f, format="PNG")


def save_png(path: str, image: np.ndarray) -> None:
  """`image` to `path` as PNG (its folder made if missing), whole or not at all and never
  through a link (`write_file`)."""
  folder = os.path.dirname(os.path.abspath(path))
  os.makedirs(folder, exist_ok=True)
  write_file(folder, os.path.basename(path), png_writer(image))


# Output files are written so that nothing already on disk can redirect them: a folder or
# file may have been planted by whoever shared the folder (a run folder, an output folder
# with a link to an original photo in it). `root` is the caller's own choice (the --output
# or --workdir the user named) and is followed like any path given on the command line;
# below it every folder is entered without following a link, the data goes to a fresh file
# created exclusively (O_EXCL | O_NOFOLLOW) beside its final name, and a rename puts it in
# place: a rename replaces a name, it never writes into what a link points at.
_IN_FOLDER = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW
_NEW_FILE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | getattr(os, "O_BINARY", 0)


def _parts(relpath: str) -> list[str]:
  parts = relpath.replace(os.sep, "/").split("/")
  if os.path.isabs(relpath) or any(p in ("", ".", "..") for p in parts):
    raise ValueError(f"{relpath!r} is not a plain relative path")  # a caller's bug, not input
  return parts


def _kind(dir_fd: int, name: str) -> str | None:
  """'link', 'folder', 'file' or 'other' for what is at `name`; None if nothing is."""
  try:
    mode = os.lstat(name, dir_fd=dir_fd).st_mode
  except FileNotFoundError:
    return None
  return ("link" if stat.S_ISLNK(mode) else "folder" if stat.S_ISDIR(mode)
          else "file" if stat.S_ISREG(mode) else "other")


def _refusal(shown: str, kind: str, want: str) -> WorkdirError:
  if kind == "link":
    return WorkdirError(f"{shown} is a symbolic link, where jaxgan would write {want}: it never "
                        "writes through a link (its target could be any file, e.g. an "
                        "original). Remove the link, or use another folder.")
  what = {"folder": "a folder", "file": "a file"}.get(kind, "a special file")
  return WorkdirError(f"{shown} is {what}, where jaxgan would write {want}. Move it away, or use "
                      "another folder.")


@contextlib.contextmanager
def _folder(root: str, parts: Sequence[str], create: bool):
  """A descriptor of root/parts..., each part entered without following a link (made first
  where missing, if `create`); None if a part is missing and not `create`."""
  fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
  try:
    for i, part in enumerate(parts):
      kind = _kind(fd, part)
      if kind is None and create:
        with contextlib.suppress(FileExistsError):  # made meanwhile: checked on opening
          os.mkdir(part, dir_fd=fd)
      elif kind is None:
        fd, old = None, fd
        os.close(old)
        break
      try:
        child = os.open(part, _IN_FOLDER, dir_fd=fd)
      except OSError:
        kind = _kind(fd, part)
        if kind == "folder":  # a real folder that cannot be opened (permissions): a disk error
          raise
        shown = os.path.join(root, *parts[:i + 1])
        raise _refusal(shown, kind or "other", "a folder of outputs") from None
      os.close(fd)
      fd = child
    yield fd
  finally:
    if fd is not None:
      os.close(fd)


def check_output_paths(root: str, relpaths: Sequence[str]) -> None:
  """Refuse (WorkdirError) before any work is done an output under `root` that `write_file`
  would refuse: a link, or something of the wrong kind, at one of its names. `root` need
  not exist yet."""
  if not os.path.isdir(root):
    return
  seen = set()
  for relpath in relpaths:
    parts = _parts(relpath)
    for depth in range(1, len(parts) + 1):
      key = tuple(parts[:depth])
      if key in seen:
        continue
      seen.add(key)
      is_file = depth == len(parts)
      with _folder(root, key[:-1], create=False) as fd:  # its folders were checked already
        kind = None if fd is None else _kind(fd, key[-1])
      if kind not in (None, "file" if is_file else "folder"):
        raise _refusal(os.path.join(root, *key), kind,
                       f"the output {relpath}" if is_file else "a folder of outputs")


def check_writable(folder: str, why: str) -> None:
  """A WorkdirError naming `folder` and `why` if a file cannot be created in it."""
  try:
    with _folder(folder, (), create=False) as fd:
      name = f".jaxgan-write-test-{secrets.token_hex(4)}"
      os.close(os.open(name, _NEW_FILE, 0o600, dir_fd=fd))
      os.unlink(name, dir_fd=fd)
  except OSError as e:
    raise WorkdirError(f"cannot write to {folder} ({e.strerror or e}): {why}") from None


def write_file(root: str, relpath: str, write: Callable[[BinaryIO], None]) -> str:
  """Put the bytes `write(f)` writes into `root/relpath`, whole or not at all, never
  following a link under `root` (see above); missing folders are made. A link, or a folder
  or other non-file, at the name is refused with a WorkdirError; a failing disk raises
  OSError. Returns the path."""
  *folders, name = _parts(relpath)
  shown = os.path.join(root, relpath)
  with _folder(root, folders, create=True) as fd:
    kind = _kind(fd, name)
    if kind not in (None, "file"):
      raise _refusal(shown, kind, "a file")
    tmp, handle = None, None
    while handle is None:  # a fresh name that nothing (no planted link) holds
      tmp = f".{name[:200]}.{secrets.token_hex(6)}.tmp"
      with contextlib.suppress(FileExistsError):
        handle = os.open(tmp, _NEW_FILE, 0o666, dir_fd=fd)
    try:
      with os.fdopen(handle, "wb") as f:
        write(f)
      os.replace(tmp, name, src_dir_fd=fd, dst_dir_fd=fd)
    except BaseException:
      with contextlib.suppress(OSError):
        os.unlink(tmp, dir_fd=fd)
      raise
  return shown


def save_outputs(folder: str, files: dict) -> list[str]:
  """Write each of `files` ({name: writer}, see `write_file`) into `folder`; one that cannot
  be written is a one-line warning, so that results already computed are still shown.
  Returns the names not written."""
  failed = []
  for name, write in files.items():
    try:
      write_file(folder, name, write)
    except (OSError, WorkdirError) as e:
      failed.append(name)
      reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
      print(f"warning: could not write {os.path.join(folder, name)} ({reason}); the results "
            "are shown but that file is not saved", file=sys.stderr, flush=True)
  return failed
