import jax
import jax.numpy as jnp
import numpy as np

from jaxgan.image_pool import init_pool, query_pool


def run(pool, batches, seed=0):
  query = jax.jit(query_pool)
  outs = []
  for i, b in enumerate(batches):
    pool, out = query(pool, b, jax.random.fold_in(jax.random.PRNGKey(seed), i))
    outs.append(np.asarray(out))
  return pool, outs


def test_fills_to_size_then_returns_stored_images_about_half_the_time():
  # Image i is a constant image of value i, so every image is identifiable.
  batches = [jnp.full((1, 2, 2, 1), float(i)) for i in range(650)]
  pool, outs = run(init_pool(50, (2, 2, 1)), batches)
  values = [int(o[0, 0, 0, 0]) for o in outs]
  # While filling, each new fake is returned and stored.
  assert values[:50] == list(range(50))
  # Full: the pool stays at 50, each returning either the new image or an older stored one.
  assert int(pool.count) == 50
  later = values[50:]
  old = [v < i + 50 for i, v in enumerate(later)]
  assert all(v <= i + 50 for i, v in enumerate(later))  # never an image from the future
  # Binomial(600, 0.5): mean 300, sd ~12; 5 sd either way.
  assert 240 < sum(old) < 360
  stored = sorted(int(x) for x in np.asarray(pool.images)[:, 0, 0, 0])
  assert len(set(stored)) == 50  # 50 distinct images, each seen once
  # A returned old image left the pool; the new one took its place.
  returned_old = {v for v, o in zip(later, old) if o}
  assert not (returned_old & set(stored))


def test_batches_are_processed_image_by_image_and_reproducibly():
  images = jnp.arange(8.0).reshape(8, 1, 1, 1)
  pool, out = query_pool(init_pool(3, (1, 1, 1)), images, jax.random.PRNGKey(1))
  out = np.asarray(out).ravel()
  np.testing.assert_array_equal(out[:3], [0, 1, 2])
  assert int(pool.count) == 3
  pool2, out2 = query_pool(init_pool(3, (1, 1, 1)), images, jax.random.PRNGKey(1))
  np.testing.assert_array_equal(out, np.asarray(out2).ravel())
  np.testing.assert_array_equal(pool.images, pool2.images)


def test_zero_size_pool_passes_images_through():
  images = jnp.ones((4, 2, 2, 3))
  pool, out = query_pool(init_pool(0, (2, 2, 3)), images, jax.random.PRNGKey(0))
  assert out is images
