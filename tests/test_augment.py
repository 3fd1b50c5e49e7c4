import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxgan.data import augment


def windows(padded, h, w):
  """Every (offset, crop) of a padded image, flipped or not."""
  out = {}
  for i in range(padded.shape[0] - h + 1):
    for j in range(padded.shape[1] - w + 1):
      crop = padded[i:i + h, j:j + w]
      out[(i, j, False)] = crop
      out[(i, j, True)] = crop[:, ::-1]
  return out


@pytest.mark.parametrize("mode", ["symmetric", "reflect"])
def test_crops_come_from_the_padded_image_at_the_drawn_offset(mode):
  rng = np.random.default_rng(0)
  images = rng.integers(0, 256, (64, 8, 8, 3), dtype=np.uint8)
  offsets, flips = augment.draw_crop_flip(jax.random.PRNGKey(3), 64, max_offset=4)
  out = np.asarray(augment.crop_flip(jnp.asarray(images), offsets, flips, 2, mode))
  offsets, flips = np.asarray(offsets), np.asarray(flips)
  assert out.shape == images.shape and out.dtype == np.uint8
  for n in range(64):
    padded = np.pad(images[n], ((2, 2), (2, 2), (0, 0)), mode=mode)
    i, j = offsets[n]
    want = padded[i:i + 8, j:j + 8]
    np.testing.assert_array_equal(out[n], want[:, ::-1] if flips[n] else want)
    # ...and from no other padding: it matches a window of this mode's padding only.
    assert any(np.array_equal(out[n], c) for c in windows(padded, 8, 8).values())


def test_symmetric_padding_repeats_the_edge_pixel_like_fastai():
  img = jnp.arange(4, dtype=jnp.uint8).reshape(1, 1, 4, 1).repeat(4, axis=1)
  out = augment.crop_flip(img, jnp.array([[0, 0]]), jnp.array([False]), 2, "symmetric")
  # cv2.BORDER_REFLECT: ba|abcd|dc
  np.testing.assert_array_equal(np.asarray(out)[0, 0, :, 0], [1, 0, 0, 1])


def test_offsets_cover_the_range_and_flips_happen_about_half_the_time():
  offsets, flips = augment.draw_crop_flip(jax.random.PRNGKey(0), 4000, max_offset=8)
  offsets, flips = np.asarray(offsets), np.asarray(flips)
  assert offsets.min() == 0 and offsets.max() == 8
  assert set(np.unique(offsets)) == set(range(9))
  # Binomial(4000, 0.5): mean 2000, sd ~32; 5 sd either way.
  assert 1840 < flips.sum() < 2160
  # Offsets are independent per image: rows and columns are not the same draw.
  assert np.mean(offsets[:, 0] == offsets[:, 1]) < 0.2


def test_no_flip_option_and_zero_pad_leave_images_unchanged():
  images = jnp.asarray(np.random.default_rng(1).integers(0, 256, (5, 6, 6, 3), dtype=np.uint8))
  offsets, flips = augment.draw_crop_flip(jax.random.PRNGKey(0), 5, max_offset=0, flip=False)
  np.testing.assert_array_equal(augment.crop_flip(images, offsets, flips, 0), images)


def test_normalize_uses_given_channel_stats():
  images = np.random.default_rng(2).integers(0, 256, (10, 4, 4, 3), dtype=np.uint8)
  s, s2, n = augment.channel_stats(images, chunk=3)
  mean, std = augment.mean_std(s, s2, n)
  x = images / 255.0
  np.testing.assert_allclose(mean, x.mean((0, 1, 2)), rtol=1e-6)
  np.testing.assert_allclose(std, x.std((0, 1, 2)), rtol=1e-5)
  out = np.asarray(augment.normalize(jnp.asarray(images), mean, std))
  np.testing.assert_allclose(out.mean((0, 1, 2)), 0, atol=1e-5)
  np.testing.assert_allclose(out.std((0, 1, 2)), 1, rtol=1e-4)


def test_device_rows_partition_the_global_draw():
  x = jnp.arange(12)
  parts = [augment.take_device_rows(x, i, 3) for i in range(4)]
  np.testing.assert_array_equal(jnp.concatenate(parts), x)


def test_crop_without_padding_takes_the_window_at_the_offset():
  # CycleGAN's random crop: S x S out of an L x L image, no padding.
  images = np.random.default_rng(2).integers(0, 256, (3, 9, 9, 3), dtype=np.uint8)
  offsets = np.array([[0, 0], [3, 1], [2, 3]])
  flips = np.array([False, True, False])
  out = np.asarray(augment.crop_flip(jnp.asarray(images), jnp.asarray(offsets),
                                     jnp.asarray(flips), size=6))
  assert out.shape == (3, 6, 6, 3)
  for img, (r, c), f, o in zip(images, offsets, flips, out):
    want = img[r:r + 6, c:c + 6]
    np.testing.assert_array_equal(o, want[:, ::-1] if f else want)
