"""The folder / archive loaders under random trees and random bytes: they either load
images of the promised shape or raise DatasetError, never anything else."""
import io
import os
import tarfile
import warnings

import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings, strategies as st  # noqa: E402

from jaxgan.data.folder import read_image_folder, read_images  # noqa: E402
from jaxgan.errors import DatasetError  # noqa: E402


def _encoded(fmt, mode, size, seed):
  from PIL import Image
  rng = np.random.default_rng(seed)
  channels = {"L": 1, "RGB": 3, "RGBA": 4}[mode]
  arr = rng.integers(0, 256, (size[1], size[0], channels), dtype=np.uint8)
  img = Image.fromarray(arr[..., 0] if channels == 1 else arr, mode)
  buf = io.BytesIO()
  img.save(buf, fmt)
  return buf.getvalue()


VALID = [_encoded("PNG", "RGB", (5, 7), 0), _encoded("JPEG", "RGB", (9, 4), 1),
         _encoded("PNG", "RGBA", (3, 3), 2), _encoded("PNG", "L", (12, 6), 3),
         _encoded("GIF", "L", (4, 4), 4), _encoded("BMP", "RGB", (1, 1), 5)]

contents = st.one_of(
    st.sampled_from(VALID),
    st.tuples(st.sampled_from(VALID), st.floats(0, 1)).map(lambda t: t[0][:int(len(t[0]) * t[1])]),
    st.binary(max_size=300),
    st.sampled_from(VALID).map(lambda b: b[:8] + bytes(reversed(b[8:]))),
)
segment = st.sampled_from(["train", "test", "trainA", "a", "b", "x y", ".hidden", "deep"])
filename = st.tuples(st.text("abcxyz019_-", min_size=1, max_size=6),
                     st.sampled_from([".png", ".jpg", ".JPEG", ".gif", ".bmp", ".txt", ""]))
tree = st.lists(st.tuples(st.lists(segment, max_size=3), filename, contents), max_size=10)


def _write_tree(root, files):
  for dirs, (stem, ext), blob in files:
    d = os.path.join(root, *dirs)
    try:
      os.makedirs(d, exist_ok=True)
      with open(os.path.join(d, stem + ext), "wb") as f:
        f.write(blob)
    except (FileExistsError, NotADirectoryError, IsADirectoryError):
      continue  # a name already used for a file and a folder: not a tree


def _check(load, size):
  try:
    with warnings.catch_warnings():
      warnings.simplefilter("ignore")
      out = load()
  except DatasetError as e:
    assert str(e)  # a message for the user
    hypothesis.event("DatasetError")
    return
  hypothesis.event("loaded")
  images = [out] if isinstance(out, np.ndarray) else [v[0] for k, v in out.items()
                                                      if k not in ("class_names", "skipped")]
  for x in images:
    assert x.dtype == np.uint8 and x.shape[1:] == (size, size, 3)


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(files=tree, as_archive=st.booleans())
def test_loaders_load_or_raise_dataset_error(tmp_path_factory, files, as_archive):
  root = str(tmp_path_factory.mktemp("fuzz"))
  _write_tree(os.path.join(root, "data"), files)
  path = os.path.join(root, "data")
  if as_archive:
    path = os.path.join(root, "data.tar.gz")
    with tarfile.open(path, "w:gz") as tar:
      if os.path.isdir(os.path.join(root, "data")):
        tar.add(os.path.join(root, "data"), arcname="data")
  _check(lambda: read_images(path, 6, None, cache_dir=None, num_workers=1), 6)
  _check(lambda: read_images(path, 6, "trainA", cache_dir=None, num_workers=1,
                             require_subdir=True), 6)
  _check(lambda: read_image_folder(path, 6, ["train", "test"], cache_dir=None, num_workers=1), 6)


@settings(max_examples=30, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(blob=st.binary(max_size=2000), suffix=st.sampled_from([".tar", ".tar.gz", ".tar.xz", ".tgz"]))
def test_random_bytes_as_an_archive_is_a_dataset_error(tmp_path_factory, blob, suffix):
  path = os.path.join(str(tmp_path_factory.mktemp("fuzz")), "data" + suffix)
  with open(path, "wb") as f:
    f.write(blob)
  _check(lambda: read_images(path, 6, None, cache_dir=None, num_workers=1), 6)
  _check(lambda: read_image_folder(path, 6, ["train", "test"], cache_dir=None, num_workers=1), 6)
