"""CycleGAN's history of generated images (Shrivastava et al.), as device arrays.

The reference (junyanz ImagePool, 50 images per direction) works image by
image: until the pool is full each new fake is stored and returned; after
that, with probability 0.5 a random stored fake is returned and the new one
takes its place, otherwise the new fake is returned. Here the pool is a
pytree of arrays updated inside the compiled step (a `lax.scan` over the
batch keeps the per-image order), so it can be checkpointed with the rest of
the state and is reproducible from the key.
"""
import flax
import jax
import jax.numpy as jnp


class ImagePool(flax.struct.PyTreeNode):
  images: jax.Array  # (size, H, W, C); rows >= count are unused
  count: jax.Array   # int32: how many rows are filled


def init_pool(size: int, image_shape, dtype=jnp.float32) -> ImagePool:
  return ImagePool(images=jnp.zeros((size, *image_shape), dtype), count=jnp.zeros((), jnp.int32))


def query_pool(pool: ImagePool, images: jax.Array, key: jax.Array) -> tuple[ImagePool, jax.Array]:
  """Pass a batch of new fakes through the pool: (updated pool, images to train on)."""
  size = pool.images.shape[0]
  if size == 0:
    return pool, images

  def one(carry, xs):
    stored, count = carry
    image, k = xs
    k_coin, k_slot = jax.random.split(k)
    filling = count < size
    swap = jnp.logical_and(~filling, jax.random.uniform(k_coin) > 0.5)
    slot = jnp.where(filling, count, jax.random.randint(k_slot, (), 0, size))
    old = stored[slot]
    stored = stored.at[slot].set(jnp.where(filling | swap, image.astype(stored.dtype), old))
    out = jnp.where(swap, old.astype(image.dtype), image)
    return (stored, count + filling.astype(jnp.int32)), out

  keys = jax.random.split(key, images.shape[0])
  (stored, count), out = jax.lax.scan(one, (pool.images, pool.count), (images, keys))
  return ImagePool(stored, count), out
