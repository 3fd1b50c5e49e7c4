"""Image helpers: [-1, 1] floats to uint8, grids, PNG files."""
import os

import numpy as np


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


def save_png(path: str, image: np.ndarray) -> None:
  from PIL import Image
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  tmp = f"{path}.tmp.png"
  Image.fromarray(np.asarray(image)).save(tmp)
  os.replace(tmp, path)
