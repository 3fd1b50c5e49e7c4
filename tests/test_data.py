"""Data sources: image folders, tar archives, TFDS (mocked), and their errors."""
import os
import tarfile
import time

import numpy as np
import pytest

from conftest import tiny_config, write_image_folder
from jaxgan.data import folder, is_path, load_classification_data
from jaxgan.errors import DatasetError


def test_folder_layout_labels_and_sizes(image_folder):
  data = folder.read_image_folder(image_folder, 8, cache_dir=None)
  assert data["class_names"] == ["a", "b", "c"]
  images, labels = data["train"]
  assert images.shape == (36, 8, 8, 3) and images.dtype == np.uint8
  np.testing.assert_array_equal(labels, np.repeat([0, 1, 2], 12))
  # Images are decoded exactly (PNG is lossless): class c is brighter by 60*c on average.
  means = [images[labels == c].mean() for c in range(3)]
  assert means[0] < means[1] < means[2]
  from PIL import Image
  first = np.asarray(Image.open(os.path.join(image_folder, "train", "a", "0000.png")))
  np.testing.assert_array_equal(images[0], first)
  assert data["test"][0].shape == (12, 8, 8, 3)


def test_archive_reads_the_same_as_the_folder(image_folder, tmp_path):
  archive = str(tmp_path / "data.tar.gz")
  with tarfile.open(archive, "w:gz") as tar:
    tar.add(image_folder, arcname="cifar-like")  # a top-level folder inside is fine
  a = folder.read_image_folder(image_folder, 8, cache_dir=None)
  b = folder.read_image_folder(archive, 8, cache_dir=None)
  assert a["class_names"] == b["class_names"]
  for split in ("train", "test"):
    np.testing.assert_array_equal(a[split][0], b[split][0])
    np.testing.assert_array_equal(a[split][1], b[split][1])


def test_image_modes_and_sizes_are_converted(tmp_path):
  from PIL import Image
  root = tmp_path / "modes"
  d = root / "train" / "x"
  d.mkdir(parents=True)
  rgb = np.random.default_rng(0).integers(0, 256, (12, 16, 3), dtype=np.uint8)
  Image.fromarray(rgb).save(d / "rgb.png")  # 16x12: resized (shorter side) + centre crop
  Image.fromarray(rgb[:, :, 0]).save(d / "gray.png")
  Image.fromarray(np.dstack([rgb, np.full((12, 16), 255, np.uint8)])).save(d / "rgba.png")
  Image.fromarray(rgb).convert("P").save(d / "palette.png")
  Image.fromarray((rgb[:, :, 0].astype(np.uint16) * 257)).save(d / "sixteen.png")
  (root / "test" / "x").mkdir(parents=True)
  Image.fromarray(rgb).save(root / "test" / "x" / "t.jpg")
  data = folder.read_image_folder(str(root), 8, cache_dir=None)
  images = data["train"][0]
  assert images.shape == (5, 8, 8, 3)
  by_name = dict(zip(["gray", "palette", "rgb", "rgba", "sixteen"], images))
  np.testing.assert_array_equal(by_name["rgba"], by_name["rgb"])  # opaque alpha changes nothing
  g = by_name["gray"]
  assert np.array_equal(g[..., 0], g[..., 1]) and np.array_equal(g[..., 1], g[..., 2])
  np.testing.assert_array_equal(by_name["sixteen"], by_name["gray"])  # 16 bit scaled to 8


def test_corrupt_and_non_image_files_are_skipped_with_a_count(image_folder):
  bad = os.path.join(image_folder, "train", "a")
  with open(os.path.join(bad, "zero.png"), "wb"):
    pass
  with open(os.path.join(bad, "junk.jpg"), "wb") as f:
    f.write(b"definitely not a jpeg")
  with open(os.path.join(bad, "notes.txt"), "w") as f:
    f.write("ignored: not an image extension")
  with pytest.warns(UserWarning, match="skipped 2 unreadable image file"):
    data = folder.read_image_folder(image_folder, 8, cache_dir=None)
  assert len(data["train"][0]) == 36


def test_cache_is_reused_and_invalidated_by_changes(image_folder, tmp_path):
  cache = str(tmp_path / "cache")
  a = folder.read_image_folder(image_folder, 8, cache_dir=cache)
  files = os.listdir(os.path.join(cache, "folders"))
  assert len(files) == 1
  b = folder.read_image_folder(image_folder, 8, cache_dir=cache)
  np.testing.assert_array_equal(a["train"][0], b["train"][0])
  write_image_folder(image_folder, classes=("a",), per_class=(13, 0), seed=5)  # adds a file
  c = folder.read_image_folder(image_folder, 8, cache_dir=cache)
  assert len(c["train"][0]) == 37
  # A damaged cache file is ignored and rebuilt.
  for name in os.listdir(os.path.join(cache, "folders")):
    with open(os.path.join(cache, "folders", name), "wb") as f:
      f.write(b"garbage")
  d = folder.read_image_folder(image_folder, 8, cache_dir=cache)
  np.testing.assert_array_equal(c["train"][0], d["train"][0])


@pytest.mark.parametrize("make,match", [
    (lambda root: str(root / "missing"), "does not exist"),
    (lambda root: (root / "empty").mkdir() or str(root / "empty"), "found no images"),
    (lambda root: (root / "f.txt").write_text("x") and str(root / "f.txt"), "not a tar archive"),
])
def test_bad_folders_are_clear_errors(tmp_path, make, match):
  with pytest.raises(DatasetError, match=match):
    folder.read_image_folder(make(tmp_path), 8, cache_dir=None)


def test_test_split_class_missing_from_train_is_an_error(image_folder):
  os.makedirs(os.path.join(image_folder, "test", "zebra"))
  write_image_folder(image_folder + "/x", classes=("zebra",), per_class=(0, 1))
  os.replace(os.path.join(image_folder, "x", "test", "zebra", "0000.png"),
             os.path.join(image_folder, "test", "zebra", "0000.png"))
  with pytest.raises(DatasetError, match="zebra"):
    folder.read_image_folder(image_folder, 8, cache_dir=None)


def test_subset_and_dataset_kind_detection(image_folder):
  assert is_path(image_folder) and is_path("./x") and is_path("data.tar.xz")
  assert not is_path("cifar10") and not is_path("cycle_gan/horse2zebra")
  data = load_classification_data(tiny_config(image_folder, train_subset=9))
  assert len(data.images("train")) == 9 and len(data.images("test")) == 12
  assert data.num_classes == 3


def test_tfds_source_under_mock_data(tmp_path):
  tfds = pytest.importorskip("tensorflow_datasets")
  with tfds.testing.mock_data(num_examples=24):
    data = load_classification_data(tiny_config("cifar10", image_size=32,
                                                tfds_data_dir=str(tmp_path)))
  assert data.images("train").shape == (24, 32, 32, 3)
  assert data.images("train").dtype == np.uint8
  assert len(data.class_names) == 10  # names come from metadata a mock lacks
  assert data.labels("test").dtype == np.int32 and data.labels("test").max() < 10


def test_tfds_training_end_to_end_under_mock_data(tmp_path):
  tfds = pytest.importorskip("tensorflow_datasets")
  from jaxgan import experiment
  from jaxgan.writers import read_metrics
  workdir = str(tmp_path / "run")
  with tfds.testing.mock_data(num_examples=32):
    result = experiment.train_and_evaluate(
        tiny_config("cifar10", image_size=32, augment__pad=4, tfds_data_dir=str(tmp_path),
                    num_epochs=1), workdir)
  assert result["step"] == 4
  assert [r["step"] for r in read_metrics(workdir) if r["split"] == "eval"] == [4]


def test_tfds_offline_without_a_copy_fails_at_once_with_the_fix(tmp_path, monkeypatch):
  pytest.importorskip("tensorflow_datasets")
  from jaxgan.data import tfds_source
  monkeypatch.setattr(tfds_source, "_internet_reachable", lambda timeout=3.0: False)
  start = time.time()
  with pytest.raises(DatasetError, match="internet cannot be reached.*--config.dataset"):
    load_classification_data(tiny_config("cifar10", image_size=32, tfds_data_dir=str(tmp_path)))
  assert time.time() - start < 30
  with pytest.raises(DatasetError, match="downloading is off"):
    load_classification_data(tiny_config("cifar10", image_size=32, download=False,
                                         tfds_data_dir=str(tmp_path)))


def test_a_failed_tfds_download_is_one_paragraph_with_the_alternatives(tmp_path, monkeypatch):
  tfds = pytest.importorskip("tensorflow_datasets")
  from jaxgan.data import tfds_source
  monkeypatch.setattr(tfds_source, "_internet_reachable", lambda timeout=3.0: True)

  def drive_refuses(self, *args, **kwargs):  # what CelebA's Google Drive host answers
    raise OSError("Too many users have viewed or downloaded this file recently (Google Drive "
                  "quota exceeded)")
  monkeypatch.setattr(tfds.core.DatasetBuilder, "download_and_prepare", drive_refuses)
  with pytest.raises(DatasetError, match=r"could not download or prepare the TFDS dataset "
                     r"'cifar10' into .*\(OSError: Too many users.*try again later.*"
                     r"--config.dataset=/data/cifar10"):
    load_classification_data(tiny_config("cifar10", image_size=32, tfds_data_dir=str(tmp_path)))


def test_a_folder_without_the_eval_split_names_the_field_to_set(tmp_path, image_folder):
  import shutil
  shutil.move(os.path.join(image_folder, "test"), tmp_path / "valid")
  with pytest.raises(DatasetError, match=r"split 'test' of image folder .* has no images "
                     r"\(its folders: train\)\..*--config.eval_split="):
    load_classification_data(tiny_config(image_folder))


def test_unknown_tfds_name_suggests_close_names():
  pytest.importorskip("tensorflow_datasets")
  with pytest.raises(DatasetError, match="unknown TFDS dataset 'cifar1O'.*cifar10"):
    load_classification_data(tiny_config("cifar1O", image_size=32))


def test_gan_images_from_a_flat_folder_an_archive_and_a_train_subfolder(tmp_path, image_folder):
  from PIL import Image
  from conftest import tiny_wgan_config
  from jaxgan.data import load_gan_images
  flat = tmp_path / "flat"
  flat.mkdir()
  rng = np.random.default_rng(0)
  for i in range(5):  # no class folders at all; sizes differ
    Image.fromarray(rng.integers(0, 256, (20 + i, 24, 3), dtype=np.uint8)).save(flat / f"{i}.png")
  images = load_gan_images(tiny_wgan_config(str(flat)))
  assert images.shape == (5, 16, 16, 3) and images.dtype == np.uint8
  # A classification layout: only train/ is read (36 images, not 36 + 12).
  assert load_gan_images(tiny_wgan_config(image_folder, image_size=8)).shape == (36, 8, 8, 3)
  archive = str(tmp_path / "imgs.tar")
  with tarfile.open(archive, "w") as tar:
    tar.add(str(flat), arcname="faces")
  np.testing.assert_array_equal(load_gan_images(tiny_wgan_config(archive)), images)


def test_gan_images_from_tfds_are_resized_and_cropped(tmp_path):
  tfds = pytest.importorskip("tensorflow_datasets")
  from conftest import tiny_wgan_config
  from jaxgan.data import load_gan_images
  with tfds.testing.mock_data(num_examples=10):
    images = load_gan_images(tiny_wgan_config("cifar10", image_size=16,
                                              tfds_data_dir=str(tmp_path)))
  assert images.shape == (10, 16, 16, 3) and images.dtype == np.uint8


def test_a_run_that_fails_before_writing_leaves_no_empty_workdir(tmp_path):
  from jaxgan import experiment
  workdir, missing = tmp_path / "runs" / "typo", str(tmp_path / "no_such_folder")
  with pytest.raises(DatasetError, match="does not exist"):
    experiment.train_and_evaluate(tiny_config(missing), str(workdir))
  assert not workdir.exists() and (tmp_path / "runs").is_dir()
  workdir.mkdir()  # a folder the user made is theirs: kept
  with pytest.raises(DatasetError, match="does not exist"):
    experiment.train_and_evaluate(tiny_config(missing), str(workdir))
  assert workdir.is_dir()
