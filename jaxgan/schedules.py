"""fast.ai (0.7) learning-rate and momentum schedules, as pure functions of the step.

Each constructor returns `(lr_schedule, momentum_schedule)`: two functions of
the (0-based) iteration that work on Python ints and on traced JAX integers,
so optax can call them inside a compiled step.
"""
from typing import Callable, Sequence

import jax.numpy as jnp

Schedule = Callable[[int], float]


def clr_beta(total_steps: int, peak_lr: float, div: float = 20, pct: float = 20,
             moms: Sequence[float] = (0.95, 0.85)) -> tuple[Schedule, Schedule]:
  """fastai's `CircularLR_beta`, the notebook's `use_clr_beta=(div, pct, m0, m1)`.

  With `c = int(total_steps * (1 - pct/100) / 2)`: the lr rises linearly from
  peak/div to peak over iterations [0, c], falls back to peak/div over (c, 2c],
  then decays linearly to peak/div/100 at `total_steps`. Momentum goes
  moms[0] -> moms[1] over [0, c], back to moms[0] over (c, 2c], then stays.

  optax's `linear_onecycle_schedule` is close but not this; the iteration
  count `c` is truncated to an int here, as DESIGN.md specifies.
  """
  if total_steps < 1:
    raise ValueError(f"clr_beta needs total_steps >= 1, got {total_steps}")
  c = int(total_steps * (1 - pct / 100) / 2)
  c_safe = max(c, 1)  # a degenerate c == 0 only reaches the final decay branch
  tail = max(total_steps - 2 * c, 1)
  m0, m1 = moms
  base = peak_lr / div

  def lr(step):
    i = jnp.asarray(step, jnp.float32)
    up = base * (1 + (i / c_safe) * (div - 1))
    down = base * (1 + (1 - (i - c) / c_safe) * (div - 1))
    decay = base * (1 - 0.99 * (i - 2 * c) / tail)
    return jnp.where(i <= c, up, jnp.where(i <= 2 * c, down, decay)) if c > 0 else decay

  def momentum(step):
    i = jnp.asarray(step, jnp.float32)
    up = m0 + (i / c_safe) * (m1 - m0)
    down = m1 + ((i - c) / c_safe) * (m0 - m1)
    return jnp.where(i <= c, up, jnp.where(i <= 2 * c, down, m0)) if c > 0 else jnp.full_like(i, m0)

  return lr, momentum


def clr(total_steps: int, peak_lr: float, div: float = 4, cut_div: float = 8,
        moms: Sequence[float] = (0.95, 0.85)) -> tuple[Schedule, Schedule]:
  """fastai's `CircularLR`, the DAWNBench script's `use_clr=(div, cut_div, m0, m1)`.

  With `cut = total_steps // cut_div`: the lr rises linearly from peak/div to
  peak over [0, cut], then falls linearly back to peak/div at `total_steps`.
  Momentum mirrors it: moms[0] -> moms[1] over [0, cut], then back to moms[0].
  """
  if total_steps < 1:
    raise ValueError(f"clr needs total_steps >= 1, got {total_steps}")
  cut = max(int(total_steps // cut_div), 1)
  tail = max(total_steps - cut, 1)
  m0, m1 = moms
  base = peak_lr / div

  def frac(step):  # 0 -> 1 -> 0 over the cycle
    i = jnp.asarray(step, jnp.float32)
    return jnp.where(i > cut, 1 - (i - cut) / tail, i / cut)

  def lr(step):
    return base * (1 + frac(step) * (div - 1))

  def momentum(step):
    return m1 + (1 - frac(step)) * (m0 - m1)

  return lr, momentum


def triangle(total_steps: int, peak_lr: float, start: float = 0.2, peak_pct: float = 23,
             end: float = 0.07, momentum: float = 0.85) -> tuple[Schedule, Schedule]:
  """airbench's piecewise-linear lr: peak*start at step 0, peak at step
  `int(total_steps * peak_pct / 100)`, peak*end at `total_steps`; constant momentum."""
  if total_steps < 1:
    raise ValueError(f"triangle needs total_steps >= 1, got {total_steps}")
  top = min(max(int(total_steps * peak_pct / 100), 1), total_steps)  # >= 1 for tiny runs
  xs, ys = jnp.array([0.0, top, total_steps]), jnp.array([start, 1.0, end]) * peak_lr

  def lr(step):
    return jnp.interp(jnp.asarray(step, jnp.float32), xs, ys)

  return lr, constant(peak_lr, momentum)[1]


def constant(peak_lr: float, momentum: float = 0.9) -> tuple[Schedule, Schedule]:
  return (lambda step: jnp.full((), peak_lr, jnp.float32),
          lambda step: jnp.full((), momentum, jnp.float32))


def constant_then_linear(value: float, constant_steps: int, decay_steps: int) -> Schedule:
  """CycleGAN's learning rate: `value` for `constant_steps`, then linearly to zero
  over `decay_steps` (reaching it just after the last step).

  The reference steps the rate once per epoch with `1 - max(0, e + 1 - n) / (n_decay + 1)`,
  which never reaches zero within its run; this is the plain linear decay it
  describes, step by step.
  """
  if constant_steps < 0 or decay_steps < 0:
    raise ValueError(f"steps must be >= 0, got {constant_steps} and {decay_steps}")

  def lr(step):
    i = jnp.asarray(step, jnp.float32)
    if decay_steps == 0:
      return jnp.full_like(i, value)
    return value * jnp.clip((constant_steps + decay_steps - i) / decay_steps, 0.0, 1.0)

  return lr
