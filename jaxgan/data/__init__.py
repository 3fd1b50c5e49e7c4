"""Data sources: TFDS names or image folders, loaded whole as uint8 arrays.

`load_classification_data(config)` is the one entry point the trainers use;
which source it reads is decided by `config.dataset` alone.
"""
import dataclasses
import os
from typing import Sequence

import jax
import numpy as np

from jaxgan.errors import ConfigError, DatasetError


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


LABELS = ("folders", "domains", "upright")


@dataclasses.dataclass(frozen=True)
class DataFields:
  """The data fields of a config, each its default (`configs.common.DATA_DEFAULTS`) where
  the config lacks it; `cache` is None when caching is off, `tfds_data_dir` None for TFDS's
  own."""
  train_split: str
  eval_split: str
  train_subset: int
  eval_subset: int
  held_out: int
  labels: str
  cache: str | None
  bad_images: str
  tfds_data_dir: str | None
  download: bool

  @classmethod
  def of(cls, config) -> "DataFields":
    from jaxgan.configs.common import DATA_DEFAULTS
    get = lambda field: config.get(field, DATA_DEFAULTS[field])
    return cls(train_split=get("train_split"), eval_split=get("eval_split"),
               train_subset=get("train_subset"), eval_subset=get("eval_subset"),
               held_out=get("held_out"), labels=get("labels"),
               cache=None if get("cache_dir") == "none" else get("cache_dir"),
               bad_images=get("bad_images"), tfds_data_dir=get("tfds_data_dir") or None,
               download=get("download"))


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
  """Load `splits` (default: train and eval split) of `config.dataset`.

  `config.labels` says where the classes come from: "folders" (the default),
  the class subfolders of each split; "domains", the two domains of a
  CycleGAN dataset (class A and class B; see `domain_classes`); "upright",
  every image of an unlabelled set as it is and turned upside down (see
  `upright_classes`).
  """
  f = DataFields.of(config)
  train_split, eval_split = f.train_split, f.eval_split
  splits = list(splits or (train_split, eval_split))
  labels = f.labels
  if labels not in LABELS:
    raise ConfigError(f"--config.labels={labels!r}: use one of {LABELS}")
  if labels == "domains":
    return domain_classes(config, splits)
  if labels == "upright":
    return upright_classes(config, splits)
  dataset = str(config.dataset)
  if not dataset:
    raise DatasetError("--config.dataset is empty: give a TFDS name (e.g. cifar10) or a folder.")
  pi, pc = jax.process_index(), jax.process_count()
  if dataset == "fake":
    data = {s: fake_split(config.image_size, n) for s, n in
            ((train_split, f.train_subset), (eval_split, f.eval_subset))
            if s in splits}
    return ClassificationData([str(i) for i in range(10)], data, "fake data (random pixels)")
  if is_path(dataset):
    from jaxgan.data.folder import read_image_folder
    # The folder's own split names are read; `train_split`/`eval_split` name them.
    raw = read_image_folder(dataset, config.image_size, [train_split, eval_split],
                            cache_dir=f.cache, bad_images=f.bad_images)
    class_names = raw["class_names"]
    data = {s: tuple(a[pi::pc] for a in raw[s]) for s in splits}
    source = f"image folder {dataset}"
  else:
    from jaxgan.data import tfds_source
    data = {s: tfds_source.load_split(dataset, s, f.tfds_data_dir, f.download) for s in splits}
    class_names = tfds_source.class_names(dataset, f.tfds_data_dir)
    source = f"TFDS {dataset}"
    for s, (images, _) in data.items():
      if images.shape[1:3] != (config.image_size, config.image_size):
        raise DatasetError(f"TFDS {dataset} split {s} has {images.shape[1]}x{images.shape[2]} "
                           f"images but config.image_size={config.image_size}; set it to match.")
  subsets = {train_split: f.train_subset, eval_split: f.eval_subset}
  data = {s: fixed_subset(*data[s], subsets.get(s, -1)) for s in splits}
  for s, (images, labels) in data.items():
    if len(images) == 0:
      raise _empty_split(s, source, dataset, "eval_split" if s == eval_split else "train_split")
    if labels.max(initial=0) >= len(class_names) or labels.min(initial=0) < 0:
      raise DatasetError(f"split {s!r} of {source} has labels outside [0, {len(class_names)}).")
  return ClassificationData(class_names, data, source)


def _empty_split(split: str, source: str, dataset: str, field: str) -> DatasetError:
  """The error for a split with no images: the folder lacks it, or (multi-host) this
  process's share of it is empty."""
  if jax.process_count() > 1:
    return DatasetError(f"split {split!r} of {source} has no examples for process "
                        f"{jax.process_index()} of {jax.process_count()}: it needs at least "
                        "one image per process.")
  found = ""
  if os.path.isdir(dataset):
    folders = sorted(d for d in os.listdir(dataset) if os.path.isdir(os.path.join(dataset, d)))
    found = f" (its folders: {', '.join(folders) or 'none'})"
  return DatasetError(f"split {split!r} of {source} has no images{found}. If the dataset "
                      f"names it differently, set --config.{field}=<that split's folder>, "
                      f"e.g. --config.{field}=valid.")


def _labelled(parts: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
  """The images of each part, concatenated, labelled with the part's index."""
  labels = np.concatenate([np.full(len(p), i, np.int32) for i, p in enumerate(parts)])
  return np.concatenate(parts), labels


def domain_classes(config, splits: Sequence[str]) -> ClassificationData:
  """A two-domain dataset as a classification problem: class "A" is domain A, "B" domain B.

  The domains are read as CycleGAN reads them (`load_domains`: a TFDS pair,
  a folder with `config.train_splits` / `config.test_splits` subfolders, or
  `<A>,<B>`), at `config.image_size`. The eval split is the test domains; a
  dataset without them (two folders, or a folder with no test subfolders)
  holds `config.held_out` images of each domain (at most a tenth) out of
  training instead.
  """
  f = DataFields.of(config)
  train_split, eval_split = f.train_split, f.eval_split
  sized = config.copy_and_resolve_references()
  with sized.unlocked():
    sized.load_size = config.image_size
  whole = sized.copy_and_resolve_references()
  with whole.unlocked():
    whole.train_subset = -1
  test, which = None, "images held out of training"
  if "," not in str(config.dataset):
    try:
      test = load_domains(whole, config.test_splits)
      which = "/".join(config.test_splits)
    except DatasetError:
      if not is_path(str(config.dataset)):
        raise
  data = {}
  if train_split in splits:
    part = "train" if test is None else None
    data[train_split] = _labelled(list(load_domains(sized, config.train_splits, part)))
  if eval_split in splits:
    if test is None:
      test = load_domains(whole, config.train_splits, "held_out")
      which = f"{len(test[0])} + {len(test[1])} images held out of training"
    data[eval_split] = fixed_subset(*_labelled(list(test)), f.eval_subset)
  names = "/".join(config.train_splits) if "," not in str(config.dataset) else "<A>,<B>"
  source = f"domains A and B ({names}) of {config.dataset}, tested on {which}"
  return ClassificationData(["A", "B"], data, source)


def upright_classes(config, splits: Sequence[str]) -> ClassificationData:
  """An unlabelled image set as a classification problem: each image as it is (class
  "upright") and turned 180 degrees ("upside down").

  Telling which way up a face (or bedroom) is needs its layout: eyes above
  mouth, hair above chin. The features of a network trained at it serve as an
  offline feature space for GANs of that data. Both classes survive a
  horizontal flip, so flip augmentation and flip TTA stay valid. The splits
  are the GAN's (`load_gan_split`): a flat folder's held-out images are never
  trained on here either.
  """
  eval_split = DataFields.of(config).eval_split
  data, which = {}, {}
  for split in splits:
    images, which[split] = load_gan_split(config, split)
    if split == eval_split:
      images = fixed_subset(images, np.zeros(len(images), np.int32),
                            DataFields.of(config).eval_subset)[0]
    data[split] = _labelled([images, images[:, ::-1, ::-1]])
  source = (f"{config.dataset} upright vs upside down"
            + (f", tested on {which[eval_split]}" if eval_split in which else ""))
  return ClassificationData(["upright", "upside down"], data, source)


def hold_out(n: int, k: int) -> tuple[np.ndarray, np.ndarray]:
  """(training, held-out) indices of n images whose held-out ones are the first k of a
  fixed shuffle (seed 0), the same images in every run, process and recipe; a tenth of
  them at most, so that small folders keep most of their images for training."""
  k = max(0, min(k, n // 10))
  perm = np.random.default_rng(0).permutation(n)
  return np.sort(perm[k:]), np.sort(perm[:k])


def load_gan_images(config, split: str | None = None) -> np.ndarray:
  """This process's share of the images of a GAN dataset: uint8 (N, S, S, 3).

  See `load_gan_split`, which also says which images they are.
  """
  return load_gan_split(config, split)[0]


def load_gan_split(config, split: str | None = None) -> tuple[np.ndarray, str]:
  """(this process's share of one split of an unlabelled image set, which images they are).

  `config.dataset` is a TFDS name (images resized, centre-cropped), a folder
  or archive of images in any layout (its `split` subfolder if it has one),
  or `fake`. `split` defaults to `config.train_split`; any other split is the
  held-out images of the metrics. A folder without a `train_split` subfolder
  (e.g. a flat folder of faces) holds out `config.held_out` images (at most a
  tenth), the first of a fixed shuffle, which training never sees. `config.train_subset`
  keeps the first N training images of a fixed shuffle.
  """
  dataset, size, f = str(config.dataset), config.image_size, DataFields.of(config)
  train_split = f.train_split
  split = split or train_split
  held_out = split != train_split
  pi, pc = jax.process_index(), jax.process_count()
  if dataset == "fake":
    images = fake_split(size, 1000 if held_out else f.train_subset,
                        seed=int(held_out))[0]
    which = "random pixels"
  elif is_path(dataset):
    images, which = _folder_split(config, dataset, split, held_out)
    images = images[pi::pc]
  else:
    from jaxgan.data import tfds_source
    images = tfds_source.load_images(dataset, split, size, f.tfds_data_dir, f.download)
    which = f"TFDS split {split}"
  if not held_out:
    images = fixed_subset(images, np.zeros(len(images), np.int32), f.train_subset)[0]
  if len(images) == 0:
    raise DatasetError(f"{dataset} has no {split} images for process {pi}.")
  return images, which


def _folder_split(config, dataset: str, split: str, held_out: bool) -> tuple[np.ndarray, str]:
  """All images of one split of a folder or archive (every process's share), and which."""
  from jaxgan.data.folder import read_images, read_images_and_layout
  f = DataFields.of(config)
  cache, bad, train_split = f.cache, f.bad_images, f.train_split
  images, has_train = read_images_and_layout(dataset, config.image_size, train_split, cache,
                                             bad_images=bad)
  if has_train:
    if not held_out:
      return images, f"the {train_split}/ folder"
    return (read_images(dataset, config.image_size, split, cache, require_subdir=True,
                        bad_images=bad), f"the {split}/ folder")
  train, held = hold_out(len(images), f.held_out)
  k = len(held)
  if not k:
    if held_out:
      raise DatasetError(f"{dataset} has no {split}/ folder and no images were held out of "
                         f"training (--config.held_out={f.held_out}, at most a "
                         f"tenth of its {len(images)} images); set --config.held_out and train "
                         "afresh, or pass a folder with held-out images as --dataset.")
    return images, f"all {len(images)} images (none held out)"
  if held_out:
    return images[held], (f"{k} of the {len(images)} images, held out of training (the first "
                          "of a fixed shuffle, seed 0)")
  return images[train], f"{len(images) - k} of the {len(images)} images ({k} held out)"


def load_domains(config, splits: Sequence[str], part: str | None = None
                 ) -> tuple[np.ndarray, np.ndarray]:
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
  `part`: "train" or "held_out" splits each domain into its images for
  training and the `config.held_out` (at most a tenth) held out of it (the
  first of a fixed shuffle); None keeps all of them.
  """
  dataset, size = str(config.dataset).strip(), config.load_size
  pi, pc = jax.process_index(), jax.process_count()
  f = DataFields.of(config)
  cache, subset, bad = f.cache, f.train_subset, f.bad_images
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
    domains = [_domain_part(read_images(p, size, None, cache, bad_images=bad), config, part)
               [pi::pc] for p in paths]
  elif is_path(dataset):
    from jaxgan.data.folder import read_images
    domains = [_domain_part(read_images(dataset, size, s, cache, require_subdir=True,
                                        bad_images=bad), config, part)[pi::pc] for s in splits]
  else:
    from jaxgan.data import tfds_source
    domains = [_domain_part(tfds_source.load_images(
        dataset, s, size, f.tfds_data_dir, f.download),
        config, part) for s in splits]
  domains = [fixed_subset(d, np.zeros(len(d), np.int32), subset)[0] for d in domains]
  for name, d in zip(splits, domains):
    if len(d) == 0:
      raise DatasetError(f"domain {name} of {dataset} has no images for process {pi}.")
  return domains[0], domains[1]


def _domain_part(images: np.ndarray, config, part: str | None) -> np.ndarray:
  """All images of a domain (part None), or those for training or held out of it."""
  if part is None:
    return images
  held_out = DataFields.of(config).held_out
  train, held = hold_out(len(images), held_out)
  if not len(held):
    raise DatasetError(f"a domain of {len(images)} images of {config.dataset} has no test split "
                       f"and none held out (--config.held_out={held_out}, at "
                       "most a tenth); set --config.held_out or give a dataset with test folders.")
  return images[held if part == "held_out" else train]
