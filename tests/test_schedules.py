import numpy as np
import pytest

from jaxgan.schedules import clr, clr_beta


def reference_clr_beta(i, nb, peak, div, pct, moms):
  """DESIGN.md's CircularLR_beta formulas, written out plainly."""
  c = int(nb * (1 - pct / 100) / 2)
  if i <= c:
    lr = peak / div * (1 + (i / c) * (div - 1))
    mom = moms[0] + (i / c) * (moms[1] - moms[0])
  elif i <= 2 * c:
    lr = peak / div * (1 + (1 - (i - c) / c) * (div - 1))
    mom = moms[1] + ((i - c) / c) * (moms[0] - moms[1])
  else:
    lr = peak / div * (1 - 0.99 * (i - 2 * c) / (nb - 2 * c))
    mom = moms[0]
  return lr, mom


def reference_clr(i, nb, peak, div, cut_div, moms):
  """fastai 0.7 CircularLR with momentums, as a plain loop body."""
  cut = nb // cut_div
  pct = 1 - (i - cut) / (nb - cut) if i > cut else i / cut
  mpct = (i - cut) / (nb - cut) if i > cut else 1 - i / cut
  return peak * (1 + pct * (div - 1)) / div, moms[1] + mpct * (moms[0] - moms[1])


@pytest.mark.parametrize("nb,div,pct,moms", [(5850, 20, 20, (0.95, 0.85)), (1000, 10, 10, (0.9, 0.8)),
                                             (37, 20, 20, (0.95, 0.85))])
def test_clr_beta_matches_formula_at_every_step(nb, div, pct, moms):
  lr_fn, mom_fn = clr_beta(nb, 1.3, div, pct, moms)
  steps = np.arange(nb + 1)
  got_lr, got_mom = np.asarray(lr_fn(steps)), np.asarray(mom_fn(steps))
  want = np.array([reference_clr_beta(i, nb, 1.3, div, pct, moms) for i in steps])
  np.testing.assert_allclose(got_lr, want[:, 0], rtol=2e-6, atol=1e-7)
  np.testing.assert_allclose(got_mom, want[:, 1], rtol=2e-6)
  # Scalars (what optax passes inside the step) give the same values.
  for i in (0, nb // 3, nb - 1):
    assert float(lr_fn(i)) == pytest.approx(want[i, 0], rel=2e-6, abs=1e-7)


def test_clr_beta_shape_of_the_notebook_cycle():
  nb = 30 * 195  # 30 epochs of 195 steps
  lr_fn, mom_fn = clr_beta(nb, 1.3, 20, 20, (0.95, 0.85))
  c = int(nb * 0.8 / 2)
  assert float(lr_fn(0)) == pytest.approx(1.3 / 20)
  assert float(lr_fn(c)) == pytest.approx(1.3)
  assert float(mom_fn(c)) == pytest.approx(0.85)
  assert float(lr_fn(2 * c)) == pytest.approx(1.3 / 20)
  assert float(lr_fn(nb)) == pytest.approx(1.3 / 20 / 100, rel=1e-4)
  assert float(mom_fn(nb - 1)) == pytest.approx(0.95)
  lrs = np.asarray(lr_fn(np.arange(nb)))
  assert np.all(np.diff(lrs[:c + 1]) > 0) and np.all(np.diff(lrs[c:]) < 0)


@pytest.mark.parametrize("nb,div,cut_div", [(2450, 50, 15), (1000, 4, 8)])
def test_clr_matches_fastai_circular_lr(nb, div, cut_div):
  lr_fn, mom_fn = clr(nb, 1.3, div, cut_div, (0.95, 0.85))
  steps = np.arange(nb + 1)
  want = np.array([reference_clr(i, nb, 1.3, div, cut_div, (0.95, 0.85)) for i in steps])
  np.testing.assert_allclose(np.asarray(lr_fn(steps)), want[:, 0], rtol=2e-6, atol=1e-7)
  np.testing.assert_allclose(np.asarray(mom_fn(steps)), want[:, 1], rtol=2e-6)


def test_bad_total_steps_is_an_error():
  with pytest.raises(ValueError, match="total_steps"):
    clr_beta(0, 1.0)


def test_cyclegan_schedule_is_constant_then_linear_to_zero():
  from jaxgan.schedules import constant_then_linear
  spe, n, nd = 10, 100, 100  # steps per epoch, constant epochs, decay epochs
  lr = constant_then_linear(2e-4, n * spe, nd * spe)
  at_epoch = lambda e: float(lr(e * spe))
  assert at_epoch(0) == pytest.approx(2e-4) and at_epoch(99) == pytest.approx(2e-4)
  assert float(lr(n * spe - 1)) == pytest.approx(2e-4)
  assert at_epoch(100) == pytest.approx(2e-4)  # the decay starts from the full rate
  assert at_epoch(101) == pytest.approx(2e-4 * 99 / 100)
  assert at_epoch(150) == pytest.approx(1e-4)
  assert float(lr((n + nd) * spe - 1)) == pytest.approx(2e-4 / (nd * spe))  # last step
  assert float(lr((n + nd) * spe)) == 0.0 and float(lr(10 ** 6)) == 0.0
  # Linear inside the decay: equal drops per step.
  steps = np.arange(n * spe, (n + nd) * spe)
  np.testing.assert_allclose(np.diff([float(lr(s)) for s in steps[::97]]),
                             -2e-4 * 97 / (nd * spe), rtol=1e-4)
  assert float(constant_then_linear(1.0, 5, 0)(7)) == 1.0
