"""GAN metrics: known answers, independent computations, and the feature spaces."""
import glob

import jax
import numpy as np
import pytest

from conftest import tiny_config
from jaxgan import experiment
from jaxgan.features import darknet_space, feature_space, pixel_space
from jaxgan.errors import ConfigError
from jaxgan.gan_metrics import (class_coverage, diversity, feature_stats, frechet_distance, frechet_distance_of,
                                kernel_inception_distance, unconditional_report)


def test_frechet_distance_matches_scipy_in_float64():
  scipy_linalg = pytest.importorskip("scipy.linalg")
  rng = np.random.default_rng(0)
  a = rng.normal(size=(400, 12)) @ rng.normal(size=(12, 12))
  b = rng.normal(size=(300, 12)) @ rng.normal(size=(12, 12)) + 0.5
  (m1, s1), (m2, s2) = feature_stats(a), feature_stats(b)
  covmean = scipy_linalg.sqrtm(s1 @ s2).real
  want = np.sum((m1 - m2) ** 2) + np.trace(s1 + s2 - 2 * covmean)
  assert frechet_distance(m1, s1, m2, s2) == pytest.approx(want, rel=1e-9)


def test_frechet_distance_known_answers_and_singular_covariances():
  rng = np.random.default_rng(1)
  x = rng.normal(size=(500, 8))
  assert frechet_distance_of(x, x) == pytest.approx(0.0, abs=1e-9)
  shift = np.arange(8) / 4.0
  # Same covariance, moved mean: exactly the squared shift.
  assert frechet_distance_of(x, x + shift) == pytest.approx(np.sum(shift ** 2), rel=1e-9)
  # Fewer samples than dimensions: singular covariances, still finite, >= 0, ~0 for itself.
  few = rng.normal(size=(10, 64))
  assert frechet_distance_of(few, few) == pytest.approx(0.0, abs=1e-8)
  other = rng.normal(size=(12, 64)) + 1.0
  d = frechet_distance_of(few, other)
  assert np.isfinite(d) and d > 50  # the mean alone moved by 64
  # The low-rank route (fewer vectors than dimensions) is the same number as the D x D one.
  assert d == pytest.approx(frechet_distance(*feature_stats(few), *feature_stats(other)), rel=1e-7)


def _kid_by_loops(x, y):
  d = x.shape[1]
  k = lambda a, b: (a @ b / d + 1) ** 3
  m = len(x)
  xx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
  yy = sum(k(y[i], y[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
  xy = sum(k(x[i], y[j]) for i in range(m) for j in range(m)) / (m * m)
  return xx + yy - 2 * xy


def test_kid_is_the_unbiased_polynomial_mmd_and_works_on_small_test_sets():
  rng = np.random.default_rng(2)
  x, y = rng.normal(size=(20, 5)), rng.normal(size=(20, 5)) + 0.3
  mean, std = kernel_inception_distance(x, y, subset_size=20, num_subsets=3)
  assert mean == pytest.approx(_kid_by_loops(x, y), rel=1e-9) and np.isnan(std)  # one estimate
  # horse2zebra's 120 / 140 test images: the subset size follows the smaller set.
  same = kernel_inception_distance(rng.normal(size=(120, 16)), rng.normal(size=(140, 16)))
  moved = kernel_inception_distance(rng.normal(size=(120, 16)), rng.normal(size=(140, 16)) + 1)
  assert abs(same[0]) < 3 * same[1] + 0.05 and moved[0] > 10 * abs(same[0]) + 0.1


def _blobs(n, seed, size=8):
  """Random smooth-ish images: 4x4 noise upsampled, so pixels carry structure."""
  rng = np.random.default_rng(seed)
  small = rng.integers(0, 256, (n, 4, 4, 3))
  return np.repeat(np.repeat(small, size // 4, 1), size // 4, 2).astype(np.uint8)


def test_known_failures_are_flagged_and_real_images_are_not():
  train, held_out = _blobs(300, 0), _blobs(200, 1)
  space = pixel_space()
  devices = jax.local_devices()[:1]
  real, _ = unconditional_report(space, _blobs(200, 2), held_out, train, devices=devices)
  assert real["flags"] == {"mode_collapse": False, "memorisation": False}
  assert 0.9 < real["diversity"]["diversity_ratio"] < 1.1
  copies, grid = unconditional_report(space, train[:200], held_out, train, devices=devices)
  assert copies["flags"]["memorisation"] and copies["memorisation"]["copy_fraction"] == 1.0
  assert grid.shape == (2 + 4 * 10, 2 + 4 * 10, 3)  # 8 (sample, nearest training image) pairs
  three = np.repeat(_blobs(3, 3), 70, axis=0)[:200]
  collapsed, _ = unconditional_report(space, three, held_out, train, devices=devices)
  assert collapsed["flags"]["mode_collapse"] and not collapsed["flags"]["memorisation"]
  assert collapsed["diversity"]["near_duplicate_fraction"] == 1.0
  # 3 groups of 70, 70, 60 identical images: every pair within a group.
  assert collapsed["diversity"]["near_duplicate_pairs"] == 2 * 70 * 69 // 2 + 60 * 59 // 2
  # Distances rank them: copies and collapse are further from the real images than real ones.
  assert real["frechet_distance"] < collapsed["frechet_distance"]
  no_held_out, _ = unconditional_report(space, _blobs(100, 4), None, train, devices=devices)
  assert no_held_out["flags"]["memorisation"] is None and "memorisation" not in no_held_out
  # The floor: 200 of the (same-distribution) training images in the samples' place score as
  # real samples do, and the floor does not depend on the samples.
  assert "real_baseline_frechet_distance" not in no_held_out
  assert real["real_baseline_frechet_distance"] == collapsed["real_baseline_frechet_distance"]
  assert 0.5 < real["real_baseline_frechet_distance"] / real["frechet_distance"] < 2


def test_class_coverage_entropy_and_counts():
  c = class_coverage(np.array([0, 0, 1, 1, 2, 2, 3, 3]), num_classes=10)
  assert c["class_entropy"] == pytest.approx(np.log(4)) and c["classes_covered"] == 4
  collapsed = class_coverage(np.zeros(8, np.int64), num_classes=10)
  # One class only: entropy exactly 0.0, which a report prints as 0.000, not -0.000.
  assert f"{collapsed['class_entropy']:.3f}" == "0.000" and collapsed["classes_covered"] == 1


def test_diversity_ratio_of_identical_sets():
  x = np.random.default_rng(5).normal(size=(50, 4))
  d = diversity(x, x)
  assert d["diversity_ratio"] == pytest.approx(1.0) and d["near_duplicate_fraction"] <= 0.02


def test_darknet_feature_space_end_to_end(image_folder, tmp_path):
  workdir = str(tmp_path / "clf")
  experiment.train_and_evaluate(tiny_config(image_folder, num_epochs=6), workdir)
  accuracy = experiment.evaluate(workdir, num_devices=1)["accuracy"]
  space = feature_space(f"darknet:{workdir}")
  assert space.num_classes == 3 and f"test accuracy {accuracy:.4f}" in space.describe
  images = np.random.default_rng(0).integers(0, 256, (13, 8, 8, 3), dtype=np.uint8)
  f1, p1 = space(images, batch_size=250, devices=jax.local_devices()[:1])
  f4, p4 = space(images, batch_size=8, devices=jax.local_devices()[:4])  # padded last batch
  assert f1.shape == (13, 8) and p1.shape == (13,) and p1.max() < 3
  np.testing.assert_allclose(f1, f4, atol=1e-5)
  np.testing.assert_array_equal(p1, p4)
  # Larger images are resized to the classifier's size.
  big = np.repeat(np.repeat(images, 2, 1), 2, 2)
  assert space(big, devices=jax.local_devices()[:1])[0].shape == (13, 8)
  with pytest.raises(ConfigError, match="darknet:<workdir"):
    feature_space("inception")
  with pytest.raises(ConfigError, match="GAN metrics need a feature space"):
    feature_space("")
  assert darknet_space(workdir).name == f"darknet:{workdir}"
  # CycleGAN's per-direction report in a space with classes: the target class share.
  from jaxgan.gan_metrics import translation_report
  folder = lambda cls: np.stack([np.asarray(__import__("PIL.Image").Image.open(p)) for p in
                                 sorted(glob.glob(f"{image_folder}/train/{cls}/*.png"))])
  a, c = folder("a"), folder("c")
  r = translation_report(space, c, c, a, "B", devices=jax.local_devices()[:1])  # "translations" = c
  assert r["frechet_distance"] < r["identity_baseline_frechet_distance"]
  share = r["target_class_share"]
  assert share["translated"] == share["real_target"] > share["untranslated"]
