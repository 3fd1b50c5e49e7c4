"""Data sources: TFDS names or image folders, loaded whole as uint8 arrays.

`load_classification_data(config)` is the one entry point the trainers use;
which source it reads is decided by `config.dataset` alone.
"""
import dataclasses
import os
from typing import Sequence

import jax
import numpy as np

from jaxgan.errors import DatasetError


@dataclasses.dataclass
class ClassificationData:
  """This process's share of each split: uint8 NHWC images and int32 labels."""
  class_names: list
  splits: dict
  source: str

  def images(self, split):
    return self.splits[split][0]

  def labels(self, split):
    return self.splits[split][1]

  @property
  def num_classes(self) -> int:
    return len(self.class_names)


def is_path(dataset: str) -> bool:
  """Whether a dataset string names a folder/archive rather than a TFDS dataset.

  TFDS names may hold a slash (`cycle_gan/horse2zebra`), so a relative path is
  recognised only if it exists; absolute, ./ and ~ paths and archives always are.
  """
  return (os.path.exists(dataset) or dataset.startswith(("/", ".", "~"))
          or dataset.lower().endswith((".tar", ".gz", ".tgz", ".xz", ".bz2", ".txz", ".tbz2")))


def epoch_permutation(seed: int, epoch: int, n: int) -> np.ndarray:
  """This process's example order for a data epoch: a function of (seed, epoch) alone,
  so a resumed run sees the same order."""
  return np.random.default_rng([seed, epoch, jax.process_index()]).permutation(n)


def fixed_subset(images: np.ndarray, labels: np.ndarray, n: int):
  """The first n examples of a fixed shuffle (seed 0): class-balanced in expectation."""
  if n < 0 or n >= len(images):
    return images, labels
  idx = np.sort(np.random.default_rng(0).permutation(len(images))[:n])
  return images[idx], labels[idx]


def fake_split(image_size: int, n: int, seed: int = 0):
  """Random uint8 images and labels, for speed runs (`--config.dataset=fake`)."""
  n = 50000 if n < 0 else n
  rng = np.random.default_rng(seed)
  return (rng.integers(0, 256, (n, image_size, image_size, 3), dtype=np.uint8),
          rng.integers(0, 10, (n,), dtype=np.int32))


def load_classification_data(config, splits: Sequence[str] | None = None) -> ClassificationData:
  """Load `splits` (default: train and eval split) of `config.dataset`."""
  train_split, eval_split = config.get("train_split", "train"), config.get("eval_split", "test")
  splits = list(splits or (train_split, eval_split))
  dataset = str(config.dataset)
  if not dataset:
    raise DatasetError("--config.dataset is empty: give a TFDS name (e.g. cifar10) or a folder.")
  pi, pc = jax.process_index(), jax.process_count()
  if dataset == "fake":
    data = {s: fake_split(config.image_size, n) for s, n in
            ((train_split, config.get("train_subset", -1)), (eval_split, config.get("eval_subset", -1)))
            if s in splits}
    return ClassificationData([str(i) for i in range(10)], data, "fake data (random pixels)")
  if is_path(dataset):
    from jaxgan.data.folder import read_image_folder
    cache = config.get("cache_dir", "")
    # The folder's own split names are read; `train_split`/`eval_split` name them.
    raw = read_image_folder(dataset, config.image_size, [train_split, eval_split],
                            cache_dir=None if cache == "none" else cache,
                            bad_images=config.get("bad_images", "skip"))
    class_names = raw["class_names"]
    data = {s: tuple(a[pi::pc] for a in raw[s]) for s in splits}
    source = f"image folder {dataset}"
  else:
    from jaxgan.data import tfds_source
    data_dir = config.get("tfds_data_dir", "") or None
    download = config.get("download", True)
    data = {s: tfds_source.load_split(dataset, s, data_dir, download) for s in splits}
    class_names = tfds_source.class_names(dataset, data_dir)
    source = f"TFDS {dataset}"
    for s, (images, _) in data.items():
      if images.shape[1:3] != (config.image_size, config.image_size):
        raise DatasetError(f"TFDS {dataset} split {s} has {images.shape[1]}x{images.shape[2]} "
                           f"images but config.image_size={config.image_size}; set it to match.")
  subsets = {train_split: config.get("train_subset", -1), eval_split: config.get("eval_subset", -1)}
  data = {s: fixed_subset(*data[s], subsets.get(s, -1)) for s in splits}
  for s, (images, labels) in data.items():
    if len(images) == 0:
      raise DatasetError(f"split {s!r} of {source} has no examples for process {pi}.")
    if labels.max(initial=0) >= len(class_names) or labels.min(initial=0) < 0:
      raise DatasetError(f"split {s!r} of {source} has labels outside [0, {len(class_names)}).")
  return ClassificationData(class_names, data, source)


def load_gan_images(config, split: str | None = None) -> np.ndarray:
  """This process's share of the images of a GAN dataset: uint8 (N, S, S, 3).

  `config.dataset` is a TFDS name (images resized, centre-cropped), a folder
  or archive of images in any layout (its `split` subfolder if it has one),
  or `fake`. `split` defaults to `config.train_split`; any other split (the
  held-out images of the GAN metrics) must exist as such. `config.train_subset`
  keeps the first N training images of a fixed shuffle.
  """
  dataset, size = str(config.dataset), config.image_size
  train_split = config.get("train_split", "train")
  split = split or train_split
  held_out = split != train_split
  pi, pc = jax.process_index(), jax.process_count()
  if dataset == "fake":
    images = fake_split(size, 1000 if held_out else config.get("train_subset", -1),
                        seed=int(held_out))[0]
  elif is_path(dataset):
    from jaxgan.data.folder import read_images
    cache = config.get("cache_dir", "")
    images = read_images(dataset, size, split, None if cache == "none" else cache,
                         require_subdir=held_out,
                         bad_images=config.get("bad_images", "skip"))[pi::pc]
  else:
    from jaxgan.data import tfds_source
    images = tfds_source.load_images(dataset, split, size, config.get("tfds_data_dir", "") or None,
                                     config.get("download", True))
  if not held_out:
    images = fixed_subset(images, np.zeros(len(images), np.int32),
                          config.get("train_subset", -1))[0]
  if len(images) == 0:
    raise DatasetError(f"{dataset} has no {split} images for process {pi}.")
  return images


def load_domains(config, splits: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
  """This process's share of two unpaired image domains (CycleGAN's A and B).

  uint8 (N, S, S, 3) each, S = `config.load_size` (shorter side resized,
  centre-cropped). `config.dataset` is one of
  - a TFDS name with one split per domain, e.g. `cycle_gan/horse2zebra` with
    `splits=("trainA", "trainB")`;
  - a folder or tar archive with one subfolder per domain named by `splits`
    (the reference's `datasets/horse2zebra/trainA/...` layout);
  - two folders or archives, `<A>,<B>`, each read whole (any layout);
  - `fake`: random pixels (`config.train_subset` images per domain, default 64).
  `config.train_subset` keeps the first N of a fixed shuffle of each domain.
  """
  dataset, size = str(config.dataset).strip(), config.load_size
  pi, pc = jax.process_index(), jax.process_count()
  cache = config.get("cache_dir", "")
  cache = None if cache == "none" else cache
  subset = config.get("train_subset", -1)
  bad = config.get("bad_images", "skip")
  if not dataset:
    raise DatasetError("--config.dataset is empty: give a TFDS name (e.g. cycle_gan/horse2zebra),"
                       " a folder with trainA/ and trainB/, or two folders as <A>,<B>.")
  if dataset == "fake":
    n = 64 if subset < 0 else subset
    domains = [fake_split(size, n, seed)[0] for seed in (0, 1)]
  elif "," in dataset:
    paths = [p.strip() for p in dataset.split(",")]
    if len(paths) != 2 or not all(paths):
      raise DatasetError(f"--config.dataset={dataset!r}: give exactly two folders, <A>,<B>.")
    from jaxgan.data.folder import read_images
    domains = [read_images(p, size, None, cache, bad_images=bad)[pi::pc] for p in paths]
  elif is_path(dataset):
    from jaxgan.data.folder import read_images
    domains = [read_images(dataset, size, s, cache, require_subdir=True, bad_images=bad)[pi::pc]
               for s in splits]
  else:
    from jaxgan.data import tfds_source
    domains = [tfds_source.load_images(dataset, s, size, config.get("tfds_data_dir", "") or None,
                                       config.get("download", True)) for s in splits]
  domains = [fixed_subset(d, np.zeros(len(d), np.int32), subset)[0] for d in domains]
  for name, d in zip(splits, domains):
    if len(d) == 0:
      raise DatasetError(f"domain {name} of {dataset} has no images for process {pi}.")
  return domains[0], domains[1]
