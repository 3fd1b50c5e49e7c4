"""Device-side normalisation and augmentation, run inside the compiled step.

Randomness for a step is drawn for the whole global batch from one key and
each device takes its own rows, so a run gives the same augmentations on one
device or many (and no two devices draw the same ones).
"""
import jax
import jax.numpy as jnp
import numpy as np

PAD_MODES = ("symmetric", "reflect", "edge", "constant")


def channel_stats(images: np.ndarray, chunk: int = 4096) -> tuple[np.ndarray, np.ndarray, int]:
  """Per-channel (sum, sum of squares, count) of uint8 images scaled to [0, 1].

  Returned as sums so several processes can add theirs before dividing.
  """
  s = np.zeros(images.shape[-1], np.float64)
  s2 = np.zeros(images.shape[-1], np.float64)
  for i in range(0, len(images), chunk):
    x = images[i:i + chunk].astype(np.float64) / 255.0
    s += x.sum(axis=(0, 1, 2))
    s2 += (x * x).sum(axis=(0, 1, 2))
  return s, s2, int(np.prod(images.shape[:-1]))


def mean_std(s: np.ndarray, s2: np.ndarray, count: int) -> tuple[np.ndarray, np.ndarray]:
  mean = s / count
  return mean.astype(np.float32), np.sqrt(np.maximum(s2 / count - mean * mean, 0)).astype(np.float32)


def normalize(images: jax.Array, mean, std) -> jax.Array:
  """uint8 NHWC -> float32, (x/255 - mean) / std per channel."""
  x = images.astype(jnp.float32) / 255.0
  return (x - jnp.asarray(mean, jnp.float32)) / jnp.asarray(std, jnp.float32)


def draw_crop_flip(rng: jax.Array, batch: int, max_offset: int, flip: bool = True):
  """Random crop offsets in [0, max_offset] (rows, cols) and flip decisions for `batch` images.

  For a pad-and-crop to the same size `max_offset` is 2 * pad; for a crop of
  size S out of L it is L - S.
  """
  k1, k2 = jax.random.split(rng)
  offsets = jax.random.randint(k1, (batch, 2), 0, max_offset + 1)
  flips = jax.random.bernoulli(k2, 0.5, (batch,)) if flip else jnp.zeros((batch,), bool)
  return offsets, flips


def crop_flip(images: jax.Array, offsets: jax.Array, flips: jax.Array, pad: int = 0,
              mode: str = "symmetric", size: int | None = None) -> jax.Array:
  """Pad each image by `pad` pixels, crop `size` x `size` (default: the input size) at
  `offsets`, flip horizontally where asked.

  `mode` follows numpy: "symmetric" repeats the edge pixel (fastai 0.7's
  cv2.BORDER_REFLECT, the notebook's default); "reflect" does not (PyTorch's
  ReflectionPad2d).
  """
  if mode not in PAD_MODES:
    raise ValueError(f"pad mode {mode!r} is not one of {PAD_MODES}")
  n, h, w, c = images.shape
  out_h, out_w = (h, w) if size is None else (size, size)
  if pad > 0:
    images = jnp.pad(images, ((0, 0), (pad, pad), (pad, pad), (0, 0)), mode=mode)
  if images.shape[1:3] != (out_h, out_w):
    crop = lambda img, o: jax.lax.dynamic_slice(img, (o[0], o[1], 0), (out_h, out_w, c))
    images = jax.vmap(crop)(images, offsets)
  return jnp.where(flips[:, None, None, None], images[:, :, ::-1], images)


def take_device_rows(x: jax.Array, device_index, rows: int) -> jax.Array:
  """Rows [i*rows, (i+1)*rows) of a globally drawn array, for device i."""
  return jax.lax.dynamic_slice_in_dim(x, device_index * rows, rows, axis=0)


def draw_device_crop_flip(rng: jax.Array, device_batch: int, num_devices: int,
                          device_index, max_offset: int, flip: bool = True):
  """This device's rows of `draw_crop_flip` for the whole global batch (inside pmap): the
  draws do not depend on how many devices share the batch."""
  offsets, flips = draw_crop_flip(rng, device_batch * num_devices, max_offset, flip)
  return (take_device_rows(offsets, device_index, device_batch),
          take_device_rows(flips, device_index, device_batch))
