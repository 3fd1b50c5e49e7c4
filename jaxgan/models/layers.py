"""Building blocks shared by the model families.

Initialisers reproduce PyTorch's defaults, because the recipes (learning
rates, weight decay, clipping ranges) were tuned against them.
"""
import functools
from typing import Any

import jax
import jax.numpy as jnp
import flax.linen as nn

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


def batch_norm(torch_momentum: float = 0.1, axis_name: str | None = None,
               dtype: Dtype = jnp.float32, **kwargs) -> nn.BatchNorm:
  """BatchNorm with PyTorch's momentum convention and eps; call it with
  `use_running_average=not train`.

  PyTorch keeps `running = (1 - m) * running + m * batch`; Flax's `momentum`
  is the decay, so it is `1 - m`. Statistics are always reduced in float32.
  `axis_name` makes training-mode statistics span all devices of a pmap.
  """
  return nn.BatchNorm(momentum=1.0 - torch_momentum, epsilon=1e-5, axis_name=axis_name,
                      dtype=dtype, **kwargs)


ACTIVATIONS = {
    "leaky_relu": functools.partial(nn.leaky_relu, negative_slope=0.1),
    "leaky_relu_0.2": functools.partial(nn.leaky_relu, negative_slope=0.2),
    "relu": nn.relu,
}


def activation(name: str):
  try:
    return ACTIVATIONS[name]
  except KeyError:
    raise ValueError(f"unknown activation {name!r}; choose one of {sorted(ACTIVATIONS)}") from None


def count_params(params) -> int:
  return sum(int(x.size) for x in jax.tree_util.tree_leaves(params))
