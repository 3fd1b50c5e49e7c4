"""Building blocks shared by the model families.

Initialisers reproduce PyTorch's defaults, because the recipes (learning
rates, weight decay, clipping ranges) were tuned against them.
"""
import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

Dtype = Any

# PyTorch's Conv2d/Linear default, kaiming_uniform_(a=sqrt(5)), is
# U(-1/sqrt(fan_in), 1/sqrt(fan_in)): variance 1/(3 fan_in).
torch_default_kernel_init = nn.initializers.variance_scaling(1 / 3, "fan_in", "uniform")


def torch_default_bias_init(fan_in: int):
  """PyTorch's default bias init for a layer with `fan_in` inputs."""
  bound = 1.0 / max(fan_in, 1) ** 0.5

  def init(key, shape, dtype=jnp.float32):
    return jax.random.uniform(key, shape, dtype, -bound, bound)

  return init


def _sums(a, b, axes):
  """Sums of two arrays over `axes` as one variadic reduction: XLA emits one kernel."""
  return jax.lax.reduce((a, b), (0.0, 0.0), lambda x, y: (x[0] + y[0], x[1] + y[1]), axes)


def _device_means(ma, mb, axis_name):
  """Two per-device means averaged over the devices of `axis_name` in one pmean."""
  if axis_name is None:
    return ma, mb
  both = jax.lax.pmean(jnp.stack([ma, mb]), axis_name)
  return both[0], both[1]


def _means(a, b, axes, axis_name):
  """Means of two arrays over `axes` and, with `axis_name`, over the devices."""
  n = np.prod([a.shape[i] for i in axes])
  ma, mb = _sums(a, b, axes)
  return _device_means(ma / n, mb / n, axis_name)


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4, 5))
def batch_norm_train(x, scale, bias, eps: float, axis_name: str | None, dtype):
  """Training-mode batch norm over all axes but the last: (y, batch mean, batch variance).

  The statistics are flax's (float32, one pass, variance clipped at 0, one
  pmean over `axis_name`); the gradient is written out, (g - mean(g) - x_hat
  mean(g x_hat)) * scale / std with both means in one reduction, which is also
  the scale and bias gradients. Autodiff of the same forward takes four
  kernels more per layer (benchmarks/gpu_kernels.py). The mean and variance
  outputs feed the running averages and are not differentiated.
  """
  return _batch_norm_fwd(x, scale, bias, eps, axis_name, dtype)[0]


def _batch_norm_fwd(x, scale, bias, eps, axis_name, dtype):
  x32 = x.astype(jnp.float32)
  axes = tuple(range(x.ndim - 1))
  mean, mean_sq = _means(x32, jnp.square(x32), axes, axis_name)
  var = jnp.maximum(0.0, mean_sq - jnp.square(mean))
  rstd = jax.lax.rsqrt(var + eps)
  y = (x32 - mean) * (rstd * scale) + bias
  return (y.astype(dtype), mean, var), (x, mean, rstd, scale)


def _batch_norm_bwd(eps, axis_name, dtype, residuals, cotangents):
  x, mean, rstd, scale = residuals
  g = cotangents[0].astype(jnp.float32)
  axes = tuple(range(x.ndim - 1))
  x_hat = (x.astype(jnp.float32) - mean) * rstd
  sum_g, sum_gx = _sums(g, g * x_hat, axes)
  n = np.prod([x.shape[i] for i in axes])
  # The statistics spanned the devices, so do their gradients (as autodiff of the pmean).
  mean_g, mean_gx = _device_means(sum_g / n, sum_gx / n, axis_name)
  dx = (g - mean_g - x_hat * mean_gx) * (rstd * scale)
  return dx.astype(x.dtype), sum_gx.astype(scale.dtype), sum_g.astype(scale.dtype)


batch_norm_train.defvjp(_batch_norm_fwd, _batch_norm_bwd)


class BatchNorm(nn.Module):
  """flax.linen.BatchNorm over the last axis, same variables and results, with a
  written-out gradient in training mode (`batch_norm_train`).

  Parameters `scale`, `bias`; `batch_stats` `mean`, `var` (float32), updated
  as `momentum * running + (1 - momentum) * batch` with the biased variance.
  While initialising, statistics are local and the running values stay put.
  """
  use_running_average: bool | None = None
  momentum: float = 0.99
  epsilon: float = 1e-5
  dtype: Dtype | None = None
  param_dtype: Dtype = jnp.float32
  use_bias: bool = True
  use_scale: bool = True
  bias_init: Any = nn.initializers.zeros
  scale_init: Any = nn.initializers.ones
  axis_name: str | None = None

  @nn.compact
  def __call__(self, x, use_running_average: bool | None = None):
    use_running_average = nn.merge_param("use_running_average", self.use_running_average,
                                         use_running_average)
    features = (x.shape[-1],)
    ra_mean = self.variable("batch_stats", "mean", lambda: jnp.zeros(features, jnp.float32))
    ra_var = self.variable("batch_stats", "var", lambda: jnp.ones(features, jnp.float32))
    # Created in flax's order, so random initialisers draw the same values.
    args = [x]
    scale = bias = None
    if self.use_scale:
      scale = self.param("scale", self.scale_init, features, self.param_dtype)
      args.append(scale)
    if self.use_bias:
      bias = self.param("bias", self.bias_init, features, self.param_dtype)
      args.append(bias)
    dtype = nn.dtypes.canonicalize_dtype(*args, dtype=self.dtype)
    scale = jnp.ones(features, jnp.float32) if scale is None else scale.astype(jnp.float32)
    bias = jnp.zeros(features, jnp.float32) if bias is None else bias.astype(jnp.float32)
    if use_running_average:
      y = (x.astype(jnp.float32) - ra_mean.value) * (jax.lax.rsqrt(ra_var.value + self.epsilon)
                                                     * scale) + bias
      return y.astype(dtype)
    initializing = self.is_initializing()
    y, mean, var = batch_norm_train(x, scale, bias, self.epsilon,
                                    None if initializing else self.axis_name, dtype)
    if not initializing:
      ra_mean.value = self.momentum * ra_mean.value + (1 - self.momentum) * mean
      ra_var.value = self.momentum * ra_var.value + (1 - self.momentum) * var
    return y


def batch_norm(torch_momentum: float = 0.1, axis_name: str | None = None,
               dtype: Dtype = jnp.float32, eps: float = 1e-5, **kwargs) -> BatchNorm:
  """BatchNorm with PyTorch's momentum convention and eps; call it with
  `use_running_average=not train`.

  PyTorch keeps `running = (1 - m) * running + m * batch`; Flax's `momentum`
  is the decay, so it is `1 - m`. Statistics are always reduced in float32.
  `axis_name` makes training-mode statistics span all devices of a pmap.
  """
  return BatchNorm(momentum=1.0 - torch_momentum, epsilon=eps, axis_name=axis_name,
                   dtype=dtype, **kwargs)


ACTIVATIONS = {
    "leaky_relu": functools.partial(nn.leaky_relu, negative_slope=0.1),
    "leaky_relu_0.2": functools.partial(nn.leaky_relu, negative_slope=0.2),
    "relu": nn.relu,
    "gelu": functools.partial(nn.gelu, approximate=False),  # PyTorch's nn.GELU() default
}


def activation(name: str):
  try:
    return ACTIVATIONS[name]
  except KeyError:
    raise ValueError(f"unknown activation {name!r}; choose one of {sorted(ACTIVATIONS)}") from None


COMPUTE_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


def compute_dtype(name: str):
  """The jnp dtype of a config's `dtype` name (convolutions and matmuls run in it)."""
  try:
    return COMPUTE_DTYPES[name]
  except KeyError:
    raise ValueError(f"dtype {name!r} is not supported; use one of {sorted(COMPUTE_DTYPES)}") \
        from None


def count_params(params) -> int:
  return sum(int(x.size) for x in jax.tree_util.tree_leaves(params))


def identity_init(base_init=torch_default_kernel_init):
  """PyTorch's `dirac_` on the first `in_features` filters of a conv kernel of flax's shape
  (kh, kw, in, out), which `Conv` gives its `kernel_init`; `base_init` for the rest: a conv
  with at least as many outputs as inputs starts by passing each input channel through, an
  implicit residual (airbench's conv init)."""

  def init(key, shape, dtype=jnp.float32):
    h, w, cin, cout = shape
    kernel = base_init(key, shape, dtype)
    n = min(cin, cout)
    identity = jnp.zeros((h, w, cin, n), dtype).at[h // 2, w // 2].set(jnp.eye(cin, n, dtype=dtype))
    return kernel.at[..., :n].set(identity)

  return init


def dcgan_normal_init(stddev: float = 0.02):
  """DCGAN/CycleGAN reference init: weights ~ N(0, stddev)."""
  return nn.initializers.normal(stddev)


def dcgan_bn_scale_init(key, shape, dtype=jnp.float32):
  """DCGAN reference BatchNorm scale init: N(1, 0.02)."""
  return 1.0 + 0.02 * jax.random.normal(key, shape, dtype)


# Kernels are stored (out, kh, kw, in): the layout cuDNN works in on NHWC images in half
# precision, and PyTorch's channels_last weight. With flax's (kh, kw, in, out), XLA transposes
# every filter gradient inside the optimiser's update, and will not write such an update in
# place, so a donated train state cost a copy per kernel and its optimiser buffers (164 in a
# CycleGAN step, 77 in the Darknet's; benchmarks/gpu_kernels.py).
def _conv(x, kernel, strides, padding):
  """NHWC images convolved with a stored (out, kh, kw, in) kernel; `padding` as lax takes it."""
  return jax.lax.conv_general_dilated(x, kernel, _pair(strides), padding,
                                      dimension_numbers=("NHWC", "OHWI", "NHWC"))


def _add_bias(module, y):
  """`y` plus the module's `bias` parameter (features,), if it has one."""
  if not module.use_bias:
    return y
  bias = module.param("bias", module.bias_init, (module.features,), module.param_dtype)
  return y + bias.astype(module.dtype)


def _ohwi_init(init, hwio_shape):
  """An initialiser of the stored kernel that calls flax-style `init` with the (kh, kw, in, out)
  shape its fans are defined on: the values nn.Conv would draw, transposed."""
  return lambda key, shape, dtype: jnp.transpose(init(key, hwio_shape, dtype), (3, 0, 1, 2))


def _pair(v) -> tuple:
  return tuple(v) if isinstance(v, (tuple, list)) else (v, v)


class Conv(nn.Module):
  """flax.linen.Conv on NHWC images with the kernel stored (out, kh, kw, in) (see
  `_conv`); `kernel_init` gets flax's (kh, kw, in, out) shape.

  `padding`: pixels on each side (fast.ai's ks // 2), or "SAME" / "VALID".
  """
  features: int
  kernel_size: int | tuple
  strides: int | tuple = 1
  padding: int | str = "SAME"
  use_bias: bool = True
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32
  kernel_init: Any = nn.initializers.lecun_normal()
  bias_init: Any = nn.initializers.zeros

  @nn.compact
  def __call__(self, x):
    kh, kw = _pair(self.kernel_size)
    cin = x.shape[-1]
    kernel = self.param("kernel", _ohwi_init(self.kernel_init, (kh, kw, cin, self.features)),
                        (self.features, kh, kw, cin), self.param_dtype)
    if isinstance(self.padding, str):
      if self.padding not in ("SAME", "VALID"):
        raise ValueError(f"padding {self.padding!r}: use a number of pixels, 'SAME' or 'VALID'")
      padding = self.padding
    else:
      padding = tuple((p, p) for p in _pair(self.padding))
    return _add_bias(self, _conv(x.astype(self.dtype), kernel.astype(self.dtype), self.strides,
                                 padding))


def _strided_conv(z, kernel, stride: int, padding: int):
  return _conv(z, kernel, stride, ((padding, padding),) * 2)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4))
def conv_transpose(x, kernel, stride: int, padding: int, out_hw: tuple):
  """The input gradient of `_strided_conv(z, kernel, stride, padding)` at cotangent x,
  for z of spatial size out_hw: PyTorch's conv_transpose2d. The VJP says what each
  gradient is in terms of that forward conv, which XLA maps onto cuDNN's kernels."""
  z = jax.ShapeDtypeStruct((x.shape[0], *out_hw, kernel.shape[3]), x.dtype)
  return jax.linear_transpose(lambda z: _strided_conv(z, kernel, stride, padding), z)(x)[0]


def _conv_transpose_fwd(x, kernel, stride, padding, out_hw):
  return conv_transpose(x, kernel, stride, padding, out_hw), (x, kernel)


def _conv_transpose_bwd(stride, padding, out_hw, residuals, g):
  x, kernel = residuals
  # <g, T(x; K)> = <conv(g; K), x>: the forward conv of g, and that conv's filter gradient.
  y, filter_grad = jax.vjp(lambda k: _strided_conv(g, k, stride, padding), kernel)
  return y, filter_grad(x)[0]


conv_transpose.defvjp(_conv_transpose_fwd, _conv_transpose_bwd)


class ConvTranspose(nn.Module):
  """What PyTorch's `ConvTranspose2d(k, stride, padding, output_padding)` computes, NHWC.

  A transposed convolution is the input gradient of the strided convolution
  Conv2d(k, stride, padding) that it undoes (`conv_transpose`). Its kernel
  (in, k, k, out) is that conv's kernel, stored like `Conv`'s: PyTorch's
  (in, out, k, k) weight permuted, no flip. `kernel_init` gets the (k, k, out,
  in) shape of that conv in flax's layout. Output size (n-1)*s - 2p + k + op.

  The custom gradient matters for speed: autodiff of the input-dilated conv
  (flax's ConvTranspose, or `conv_transpose` without its VJP) leaves XLA a
  weight gradient it cannot map onto cuDNN's filter-gradient kernel, a
  forward conv with a 127x127 window instead (benchmarks/gpu_kernels.py).
  """
  features: int
  kernel_size: int
  stride: int = 1
  padding: int = 0
  output_padding: int = 0
  use_bias: bool = True
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32
  kernel_init: Any = torch_default_kernel_init
  bias_init: Any = nn.initializers.zeros

  @nn.compact
  def __call__(self, x):
    k, s, p, op = self.kernel_size, self.stride, self.padding, self.output_padding
    if p > k - 1:
      raise ValueError(f"padding {p} > kernel_size - 1 is not supported")
    if not 0 <= op < s:
      raise ValueError(f"output_padding {op} must be in [0, stride={s}), as in PyTorch")
    cin = x.shape[-1]
    kernel = self.param("kernel", _ohwi_init(self.kernel_init, (k, k, self.features, cin)),
                        (cin, k, k, self.features), self.param_dtype)
    x, kernel = x.astype(self.dtype), kernel.astype(self.dtype)
    out_hw = tuple((n - 1) * s - 2 * p + k + op for n in x.shape[1:3])
    return _add_bias(self, conv_transpose(x, kernel, s, p, out_hw))


def torch_conv_transpose(features: int, kernel_size: int, stride: int = 1, padding: int = 0,
                         output_padding: int = 0, **kwargs) -> ConvTranspose:
  """`ConvTranspose` from PyTorch's positional arguments."""
  return ConvTranspose(features, kernel_size, stride, padding, output_padding, **kwargs)


def _spatial_means(a, b):
  """The means over H and W of two NHWC arrays, as one reduction (one kernel)."""
  ma, mb = _means(a, b, (1, 2), None)
  return ma[:, None, None], mb[:, None, None]


def _instance_stats(x32):
  """Per image and channel mean and variance over H and W, in one pass: E[x^2] - E[x]^2.

  One reduction kernel instead of two (flax's BatchNorm makes the same trade by
  default). Cancellation costs accuracy only where a channel's mean is far from zero
  against its spread: normalised outputs are off by ~4e-5 at mean = 10 std and ~1e-2
  at 100 std (float32 on CPU). The convolutions here see activations that the layer
  before normalised, which keeps the ratio near 1.
  """
  mean, mean_sq = _spatial_means(x32, jnp.square(x32))
  return mean, jnp.maximum(mean_sq - jnp.square(mean), 0.0)


@functools.partial(jax.custom_vjp, nondiff_argnums=(1,))
def instance_norm(x, eps: float = 1e-5):
  """InstanceNorm2d without affine parameters or running statistics (PyTorch's default).

  Each image's channels are normalised over H and W; statistics in float32
  whatever the compute dtype. The gradient is written out, (g - mean(g) -
  x_hat mean(g x_hat)) / std with both means in one reduction, because
  autodiff of the forward formula takes three more kernels per layer, and a
  CycleGAN step runs over a hundred of them (see benchmarks/gpu_kernels.py).
  """
  return _instance_norm_fwd(x, eps)[0]


def _instance_norm_fwd(x, eps):
  x32 = x.astype(jnp.float32)
  mean, var = _instance_stats(x32)
  rstd = jax.lax.rsqrt(var + eps)
  return ((x32 - mean) * rstd).astype(x.dtype), (x, mean, rstd)


def _instance_norm_bwd(eps, residuals, g):
  x, mean, rstd = residuals
  x_hat = (x.astype(jnp.float32) - mean) * rstd
  g = g.astype(jnp.float32)
  mean_g, mean_gx = _spatial_means(g, g * x_hat)
  return (((g - mean_g - x_hat * mean_gx) * rstd).astype(x.dtype),)


instance_norm.defvjp(_instance_norm_fwd, _instance_norm_bwd)


def reflect_pad(x, pad: int):
  """PyTorch's ReflectionPad2d on NHWC (the edge pixel is not repeated)."""
  return jnp.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)), mode="reflect")
