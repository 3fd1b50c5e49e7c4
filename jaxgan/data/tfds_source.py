"""TFDS datasets as uint8 numpy arrays. TensorFlow is imported only here.

TensorFlow is hidden from the GPUs (it would otherwise reserve their memory),
and paths whose data is already on disk never import it.
"""
import difflib
import socket

import numpy as np

from jaxgan.errors import DatasetError

_LOCAL_COPY_HELP = (
    "To train without the internet, unpack an image-folder copy (layout "
    "train/<class>/*.jpg and test/<class>/*.jpg) and pass its path, e.g. "
    "--config.dataset=/data/cifar10 (a .tar.xz of that layout works too), or point "
    "--config.tfds_data_dir (or TFDS_DATA_DIR) at a directory that holds a prepared TFDS copy.")


def import_tf():
  try:
    import tensorflow as tf
    import tensorflow_datasets  # noqa: F401
  except ImportError as e:
    raise DatasetError(f"TFDS datasets need tensorflow and tensorflow-datasets ({e}). Install "
                       "them (pip install tensorflow-cpu tensorflow-datasets), or pass an "
                       "image folder or archive with --config.dataset.") from e
  try:
    tf.config.set_visible_devices([], "GPU")
  except RuntimeError:  # already initialised: visibility can no longer change
    pass
  return tf


def _internet_reachable(timeout: float = 3.0) -> bool:
  """A quick check, so an offline run fails in seconds instead of retrying for minutes."""
  for host in ("storage.googleapis.com", "www.google.com"):
    try:
      socket.create_connection((host, 443), timeout=timeout).close()
      return True
    except OSError:
      continue
  return False


def builder(name: str, data_dir: str | None = None):
  import_tf()
  import tensorflow_datasets as tfds
  try:
    return tfds.builder(name, data_dir=data_dir or None)
  except tfds.core.registered.DatasetNotFoundError:
    close = difflib.get_close_matches(name, tfds.list_builders(), n=3)
    hint = f" Did you mean {', '.join(close)}?" if close else ""
    raise DatasetError(f"unknown TFDS dataset {name!r} (and no folder of that name exists)."
                       f"{hint} --config.dataset takes a TFDS name (e.g. cifar10) or the path "
                       "of an image folder or archive.") from None


def _dataset(name: str, split: str, data_dir: str | None, download: bool):
  """The tf.data.Dataset of one split (this process's share), preparing it if allowed."""
  import jax
  import tensorflow_datasets as tfds
  b = builder(name, data_dir)
  if jax.process_count() > 1:
    split = tfds.split_for_jax_process(split)
  try:
    ds = b.as_dataset(split=split)
  except AssertionError:  # not prepared in the data dir
    if not download:
      raise DatasetError(f"TFDS dataset {name!r} is not prepared in {b.data_dir} and "
                         f"downloading is off (--config.download=False). {_LOCAL_COPY_HELP}")
    if not _internet_reachable():
      raise DatasetError(f"TFDS dataset {name!r} is not prepared in {b.data_dir} and "
                         f"the internet cannot be reached to download it. {_LOCAL_COPY_HELP}")
    _download(b, name)
    ds = b.as_dataset(split=split)
  except ValueError as e:
    raise DatasetError(f"TFDS dataset {name!r} has no split {split!r} "
                       f"(splits: {list(b.info.splits)}): {e}. Name the split to use with "
                       "--config.train_split / --config.eval_split.") from e
  return ds


# What the well-known failures of TFDS downloads look like, and what to do about each.
_DOWNLOAD_HINTS = (
    (("quota", "too many users", "drive.google"),
     "Its files are hosted on Google Drive, which refuses downloads of much-requested files "
     "for a day or so (CelebA is the usual case): try again later, or download the files "
     "by hand into <tfds data dir>/downloads/manual."),
    (("manual", "manual_dir"),
     "This dataset must be downloaded by hand (see its TFDS catalog page) into "
     "<tfds data dir>/downloads/manual."),
)


def _download(b, name: str) -> None:
  """`b.download_and_prepare()`, where a failure is one paragraph naming the dataset, the
  reason and the local alternatives, not a traceback from inside TFDS."""
  try:
    b.download_and_prepare()
  except (KeyboardInterrupt, SystemExit):
    raise
  except Exception as e:  # network, HTTP, checksum, quota, disk: TFDS raises many kinds
    reason = " ".join(str(e).split())[:400] or type(e).__name__
    hint = next((h for keys, h in _DOWNLOAD_HINTS if any(k in reason.lower() for k in keys)), "")
    raise DatasetError(f"could not download or prepare the TFDS dataset {name!r} into "
                       f"{b.data_dir} ({type(e).__name__}: {reason}). {hint} "
                       f"{_LOCAL_COPY_HELP}".replace("  ", " ")) from e


def load_split(name: str, split: str, data_dir: str | None = None, download: bool = True,
               image_key: str = "image", label_key: str = "label") -> tuple[np.ndarray, np.ndarray]:
  """All examples of one split as (uint8 NHWC images, int32 labels).

  In a multi-host run each process reads only its own share of the split.
  """
  import tensorflow_datasets as tfds
  ds = _dataset(name, split, data_dir, download)
  images, labels = [], []
  # Iterating in batches: `batch_size=-1` crashes on some TF builds.
  for ex in tfds.as_numpy(ds.batch(1024)):
    if image_key not in ex or label_key not in ex:
      raise DatasetError(f"TFDS dataset {name!r} has features {sorted(ex)}; expected "
                         f"{image_key!r} and {label_key!r}.")
    images.append(ex[image_key])
    labels.append(ex[label_key])
  if not images:
    raise DatasetError(f"TFDS dataset {name!r} split {split!r} is empty.")
  images = np.concatenate(images)
  if images.ndim == 3:
    images = images[..., None]
  if images.shape[-1] == 1:
    images = np.repeat(images, 3, axis=-1)
  return images.astype(np.uint8), np.concatenate(labels).astype(np.int32)


def class_names(name: str, data_dir: str | None = None, label_key: str = "label") -> list[str]:
  feature = builder(name, data_dir).info.features[label_key]
  return list(getattr(feature, "names", None) or map(str, range(feature.num_classes)))


def load_images(name: str, split: str, image_size: int, data_dir: str | None = None,
                download: bool = True, image_key: str = "image") -> np.ndarray:
  """All images of a split, shorter side resized to `image_size` and centre-cropped.

  For GANs: labels are ignored. uint8 (N, image_size, image_size, 3).
  """
  tf = import_tf()
  import tensorflow_datasets as tfds
  ds = _dataset(name, split, data_dir, download)

  def prepare(ex):
    img = ex[image_key]
    if img.shape[-1] == 1:
      img = tf.image.grayscale_to_rgb(img)
    h, w = tf.shape(img)[0], tf.shape(img)[1]
    scale = image_size / tf.cast(tf.minimum(h, w), tf.float32)
    size = tf.cast(tf.math.ceil(tf.cast(tf.stack([h, w]), tf.float32) * scale), tf.int32)
    size = tf.maximum(size, image_size)
    img = tf.image.resize(img, size, antialias=True)
    img = tf.image.resize_with_crop_or_pad(img, image_size, image_size)
    return tf.cast(tf.clip_by_value(tf.round(img), 0, 255), tf.uint8)

  batches = [b for b in tfds.as_numpy(ds.map(prepare, num_parallel_calls=tf.data.AUTOTUNE)
                                      .batch(1024))]
  if not batches:
    raise DatasetError(f"TFDS dataset {name!r} split {split!r} is empty.")
  return np.concatenate(batches)
