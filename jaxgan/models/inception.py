"""The InceptionV3 of FID (Heusel et al. 2017), in Flax, for weights loaded from a file.

The network is the TensorFlow FID graph as ported by pytorch-fid
(mseitzer/pytorch-fid, `FIDInceptionA/C/E_1/E_2`): torchvision's Inception3
without the auxiliary head, with average pools that do not count padding,
a max pool in the last block's pool branch, and a 1008-way classifier.
Submodules carry the PyTorch names (`Mixed_5b.branch5x5_2.conv`), so a
state dict maps onto them mechanically (`jaxgan.inception_weights`).

Input: uint8 or [0, 1] float NHWC images of any size; they are resized to
299x299 (bilinear, no antialiasing, as torch's `interpolate`) and scaled to
[-1, 1]. Output: the 2048-d pool3 features and the 1008 logits.
"""
import flax.linen as nn
import numpy as np
import jax
import jax.numpy as jnp

# 2048 pool3 features: 21,785,568 parameters; with the 2048 -> 1008 classifier 23,850,960.
NUM_FEATURES = 2048
NUM_CLASSES = 1008


class BasicConv2d(nn.Module):
  """conv (no bias) + BatchNorm(eps 1e-3, running statistics) + ReLU."""
  features: int
  kernel: tuple = (1, 1)
  stride: int = 1
  padding: tuple = (0, 0)

  @nn.compact
  def __call__(self, x):
    ph, pw = self.padding
    x = nn.Conv(self.features, self.kernel, self.stride, padding=((ph, ph), (pw, pw)),
                use_bias=False, name="conv")(x)
    x = nn.BatchNorm(use_running_average=True, epsilon=1e-3, name="bn")(x)
    return nn.relu(x)


def _conv(name, features, kernel=1, stride=1, padding=0):
  kernel = (kernel, kernel) if isinstance(kernel, int) else kernel
  padding = (padding, padding) if isinstance(padding, int) else padding
  return BasicConv2d(features, kernel, stride, padding, name=name)


def _avg_pool(x):  # count_include_pad=False, as the FID graph
  return nn.avg_pool(x, (3, 3), (1, 1), ((1, 1), (1, 1)), count_include_pad=False)


def _max_pool(x, stride=2, pad=0):
  return nn.max_pool(x, (3, 3), (stride, stride), ((pad, pad), (pad, pad)))


class InceptionA(nn.Module):
  pool_features: int

  @nn.compact
  def __call__(self, x):
    b1 = _conv("branch1x1", 64)(x)
    b5 = _conv("branch5x5_2", 64, 5, padding=2)(_conv("branch5x5_1", 48)(x))
    b3 = _conv("branch3x3dbl_1", 64)(x)
    b3 = _conv("branch3x3dbl_3", 96, 3, padding=1)(_conv("branch3x3dbl_2", 96, 3, padding=1)(b3))
    bp = _conv("branch_pool", self.pool_features)(_avg_pool(x))
    return jnp.concatenate([b1, b5, b3, bp], -1)


class InceptionB(nn.Module):
  @nn.compact
  def __call__(self, x):
    b3 = _conv("branch3x3", 384, 3, stride=2)(x)
    bd = _conv("branch3x3dbl_1", 64)(x)
    bd = _conv("branch3x3dbl_3", 96, 3, stride=2)(_conv("branch3x3dbl_2", 96, 3, padding=1)(bd))
    return jnp.concatenate([b3, bd, _max_pool(x)], -1)


class InceptionC(nn.Module):
  channels_7x7: int

  @nn.compact
  def __call__(self, x):
    c = self.channels_7x7
    b1 = _conv("branch1x1", 192)(x)
    b7 = _conv("branch7x7_1", c)(x)
    b7 = _conv("branch7x7_2", c, (1, 7), padding=(0, 3))(b7)
    b7 = _conv("branch7x7_3", 192, (7, 1), padding=(3, 0))(b7)
    bd = _conv("branch7x7dbl_1", c)(x)
    for i, (k, p, f) in enumerate((((7, 1), (3, 0), c), ((1, 7), (0, 3), c), ((7, 1), (3, 0), c),
                                   ((1, 7), (0, 3), 192)), start=2):
      bd = _conv(f"branch7x7dbl_{i}", f, k, padding=p)(bd)
    bp = _conv("branch_pool", 192)(_avg_pool(x))
    return jnp.concatenate([b1, b7, bd, bp], -1)


class InceptionD(nn.Module):
  @nn.compact
  def __call__(self, x):
    b3 = _conv("branch3x3_2", 320, 3, stride=2)(_conv("branch3x3_1", 192)(x))
    b7 = _conv("branch7x7x3_1", 192)(x)
    b7 = _conv("branch7x7x3_2", 192, (1, 7), padding=(0, 3))(b7)
    b7 = _conv("branch7x7x3_3", 192, (7, 1), padding=(3, 0))(b7)
    b7 = _conv("branch7x7x3_4", 192, 3, stride=2)(b7)
    return jnp.concatenate([b3, b7, _max_pool(x)], -1)


class InceptionE(nn.Module):
  max_pool: bool = False  # FIDInceptionE_2 (Mixed_7c) pools with max, E_1 with average

  @nn.compact
  def __call__(self, x):
    split = lambda prefix, h: jnp.concatenate([
        _conv(f"{prefix}a", 384, (1, 3), padding=(0, 1))(h),
        _conv(f"{prefix}b", 384, (3, 1), padding=(1, 0))(h)], -1)
    b1 = _conv("branch1x1", 320)(x)
    b3 = split("branch3x3_2", _conv("branch3x3_1", 384)(x))
    bd = _conv("branch3x3dbl_2", 384, 3, padding=1)(_conv("branch3x3dbl_1", 448)(x))
    bd = split("branch3x3dbl_3", bd)
    pooled = _max_pool(x, stride=1, pad=1) if self.max_pool else _avg_pool(x)
    bp = _conv("branch_pool", 192)(pooled)
    return jnp.concatenate([b1, b3, bd, bp], -1)


class FIDInceptionV3(nn.Module):
  """images (N, H, W, 3) uint8 or [0, 1] -> (pool3 features (N, 2048), logits (N, 1008))."""
  with_logits: bool = True

  @nn.compact
  def __call__(self, images):
    x = images.astype(jnp.float32)
    if images.dtype == jnp.uint8:
      x = x / 255.0
    if x.shape[1:3] != (299, 299):
      x = jax.image.resize(x, (x.shape[0], 299, 299, x.shape[3]), "linear", antialias=False)
    x = 2.0 * x - 1.0
    x = _conv("Conv2d_1a_3x3", 32, 3, stride=2)(x)
    x = _conv("Conv2d_2a_3x3", 32, 3)(x)
    x = _max_pool(_conv("Conv2d_2b_3x3", 64, 3, padding=1)(x))
    x = _conv("Conv2d_3b_1x1", 80)(x)
    x = _max_pool(_conv("Conv2d_4a_3x3", 192, 3)(x))
    for name, pool in (("Mixed_5b", 32), ("Mixed_5c", 64), ("Mixed_5d", 64)):
      x = InceptionA(pool, name=name)(x)
    x = InceptionB(name="Mixed_6a")(x)
    for name, c7 in (("Mixed_6b", 128), ("Mixed_6c", 160), ("Mixed_6d", 160), ("Mixed_6e", 192)):
      x = InceptionC(c7, name=name)(x)
    x = InceptionD(name="Mixed_7a")(x)
    x = InceptionE(name="Mixed_7b")(x)
    x = InceptionE(max_pool=True, name="Mixed_7c")(x)
    features = x.mean(axis=(1, 2))
    logits = nn.Dense(NUM_CLASSES, name="fc")(features) if self.with_logits else features[:, :0]
    return features, logits


def _torch_name(collection: str, path: tuple) -> tuple[str, tuple | None]:
  """The state-dict key of a Flax leaf, and the transpose that maps it (None: as is)."""
  *module, leaf = path
  base = ".".join(module)
  if collection == "batch_stats":
    return f"{base}.running_{leaf}", None
  if leaf == "kernel":
    return f"{base}.weight", (1, 0) if module[-1] == "fc" else (2, 3, 1, 0)
  return f"{base}.{'weight' if leaf == 'scale' else 'bias'}", None


def variables_from_state_dict(state_dict: dict, with_logits: bool = True) -> dict:
  """Flax variables of `FIDInceptionV3` from pytorch-fid's state dict (numpy arrays).

  Raises ValueError naming what is missing or mis-shaped, so a file of other
  weights is refused rather than half-loaded.
  """
  from flax import traverse_util
  template = jax.eval_shape(lambda: FIDInceptionV3(with_logits).init(
      jax.random.PRNGKey(0), jnp.zeros((1, 75, 75, 3))))
  out, problems = {}, []
  for collection in ("params", "batch_stats"):
    flat = {}
    for path, leaf in traverse_util.flatten_dict(template[collection]).items():
      key, perm = _torch_name(collection, path)
      if key not in state_dict:
        problems.append(f"{key} missing")
        continue
      value = np.asarray(state_dict[key], np.float32)
      value = value.transpose(perm) if perm else value
      if value.shape != leaf.shape:
        problems.append(f"{key} has shape {value.shape[::-1] if perm else value.shape}")
        continue
      flat[path] = jnp.asarray(value)
    out[collection] = traverse_util.unflatten_dict(flat)
  if problems:
    raise ValueError(f"not the FID InceptionV3 weights ({len(problems)} problems, e.g. "
                     f"{'; '.join(problems[:3])})")
  return out
