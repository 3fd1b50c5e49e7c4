"""GAN metrics on feature vectors: Frechet distance, KID, diversity and memorisation.

All functions take float features (N, D) as numpy arrays and compute in
float64 on the host; the features themselves come from a jitted extractor
(`jaxgan.features`). Every number is reported with the feature space it was
computed in, and numbers from different spaces are never compared.
"""
import numpy as np


def feature_stats(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Mean and (unbiased) covariance of (N, D) features, float64."""
  f = np.asarray(features, np.float64)
  if len(f) < 2:
    raise ValueError(f"need at least 2 feature vectors for a covariance, got {len(f)}")
  return f.mean(axis=0), np.cov(f, rowvar=False)


def _psd_sqrt(s: np.ndarray) -> np.ndarray:
  w, v = np.linalg.eigh((s + s.T) / 2)
  return (v * np.sqrt(np.clip(w, 0, None))) @ v.T


def frechet_distance(mu1, sigma1, mu2, sigma2) -> float:
  """||mu1 - mu2||^2 + Tr(S1 + S2 - 2 (S1 S2)^(1/2)).

  Tr((S1 S2)^(1/2)) = Tr((S1^(1/2) S2 S1^(1/2))^(1/2)), a symmetric PSD
  matrix, so eigenvalues replace a general matrix square root: exact for
  covariances, and finite and stable when they are singular (fewer samples
  than dimensions), where `scipy.linalg.sqrtm` turns complex or inaccurate.
  """
  mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
  s1, s2 = np.asarray(sigma1, np.float64), np.asarray(sigma2, np.float64)
  r = _psd_sqrt(s1)
  m = r @ s2 @ r
  tr_sqrt = np.sqrt(np.clip(np.linalg.eigvalsh((m + m.T) / 2), 0, None)).sum()
  return float(max(np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * tr_sqrt, 0.0))


def frechet_distance_of(f1: np.ndarray, f2: np.ndarray) -> float:
  """The Frechet distance of two feature sets (N1, D), (N2, D).

  With fewer vectors than dimensions the covariances have rank < D and the
  trace term is taken from the centred data: Tr((S1 S2)^(1/2)) equals the
  sum of the singular values of X1 X2^T / sqrt((N1-1)(N2-1)), an N1 x N2
  matrix, instead of D x D eigenproblems (the same number, much cheaper for
  e.g. 64 test images of 3,072 pixels).
  """
  a, b = np.asarray(f1, np.float64), np.asarray(f2, np.float64)
  if min(len(a), len(b)) >= a.shape[1]:
    return frechet_distance(*feature_stats(a), *feature_stats(b))
  if min(len(a), len(b)) < 2:
    raise ValueError(f"need at least 2 feature vectors per set, got {len(a)} and {len(b)}")
  mu1, mu2 = a.mean(0), b.mean(0)
  x1, x2 = a - mu1, b - mu2
  c1, c2 = len(a) - 1, len(b) - 1
  tr_sqrt = np.linalg.svd(x1 @ x2.T, compute_uv=False).sum() / np.sqrt(c1 * c2)
  return float(max(np.sum((mu1 - mu2) ** 2) + (x1 * x1).sum() / c1 + (x2 * x2).sum() / c2
                   - 2 * tr_sqrt, 0.0))


def kernel_inception_distance(f1: np.ndarray, f2: np.ndarray, subset_size: int = 1000,
                              num_subsets: int = 100, seed: int = 0) -> tuple[float, float]:
  """KID (Binkowski et al. 2018): the unbiased MMD^2 estimate with the kernel
  k(x, y) = (x.y / d + 1)^3, averaged over random subsets; (mean, std).

  The subset size is capped by the smaller set, so small test sets (120 / 140
  horse2zebra images) work; it needs at least 2 vectors per set. When both
  sets are no larger than the subset, the one estimate uses every vector and
  the spread is NaN (not estimated).
  """
  f1, f2 = np.asarray(f1, np.float64), np.asarray(f2, np.float64)
  m = min(subset_size, len(f1), len(f2))
  if m < 2:
    raise ValueError(f"KID needs at least 2 feature vectors per set, got {len(f1)} and {len(f2)}")
  d = f1.shape[1]
  rng = np.random.default_rng(seed)
  if m == len(f1) == len(f2):  # every subset would be the whole of both sets
    num_subsets = 1
  values = []
  for _ in range(num_subsets):
    x = f1[rng.choice(len(f1), m, replace=False)]
    y = f2[rng.choice(len(f2), m, replace=False)]
    kxx, kyy, kxy = ((a @ b.T / d + 1) ** 3 for a, b in ((x, x), (y, y), (x, y)))
    mmd = ((kxx.sum() - np.trace(kxx)) / (m * (m - 1)) + (kyy.sum() - np.trace(kyy)) / (m * (m - 1))
           - 2 * kxy.mean())
    values.append(mmd)
  return float(np.mean(values)), float(np.std(values)) if len(values) > 1 else float("nan")


def pairwise_distances(a: np.ndarray, b: np.ndarray | None = None, chunk: int = 2048) -> np.ndarray:
  """Euclidean distances (len(a), len(b)) in float64, computed in row chunks."""
  a = np.asarray(a, np.float64).reshape(len(a), -1)
  b = a if b is None else np.asarray(b, np.float64).reshape(len(b), -1)
  b2 = (b * b).sum(1)
  out = np.empty((len(a), len(b)))
  for i in range(0, len(a), chunk):
    x = a[i:i + chunk]
    out[i:i + chunk] = np.sqrt(np.clip((x * x).sum(1)[:, None] + b2[None] - 2 * x @ b.T, 0, None))
  return out


def nearest(a: np.ndarray, b: np.ndarray, chunk: int = 1024) -> tuple[np.ndarray, np.ndarray]:
  """For each row of `a`: (distance to, index of) its nearest row of `b`."""
  dist, idx = [], []
  for i in range(0, len(a), chunk):
    d = pairwise_distances(a[i:i + chunk], b)
    idx.append(d.argmin(1))
    dist.append(d[np.arange(len(d)), idx[-1]])
  return np.concatenate(dist), np.concatenate(idx)


def diversity(samples: np.ndarray, real: np.ndarray, duplicate_quantile: float = 0.01) -> dict:
  """Mode-collapse signs in one feature space.

  - `mean_pairwise_distance` of samples and of real images, and their ratio
    (about 1 for a healthy generator, much lower when it collapses);
  - `near_duplicate_fraction`: the fraction of samples whose nearest other
    sample is closer than all but `duplicate_quantile` of real images are
    to their nearest other real image (about that quantile for real data);
    `near_duplicate_pairs` counts the sample pairs that close.
  """
  ds, dr = pairwise_distances(samples), pairwise_distances(real)
  n, m = len(ds), len(dr)
  mean_s = ds.sum() / (n * (n - 1))
  mean_r = dr.sum() / (m * (m - 1))
  np.fill_diagonal(ds, np.inf)
  np.fill_diagonal(dr, np.inf)
  threshold = np.quantile(dr.min(1), duplicate_quantile)
  return {"mean_pairwise_distance": float(mean_s), "real_mean_pairwise_distance": float(mean_r),
          "diversity_ratio": float(mean_s / mean_r) if mean_r > 0 else float("nan"),
          "near_duplicate_fraction": float(np.mean(ds.min(1) < threshold)),
          "near_duplicate_pairs": int(np.triu(ds < threshold, 1).sum()),
          "near_duplicate_threshold": float(threshold)}


def class_coverage(predictions: np.ndarray, num_classes: int, min_share: float = 0.01) -> dict:
  """Histogram of predicted classes, its entropy (nats; log K for uniform) and how many
  classes get at least `min_share` of the samples."""
  hist = np.bincount(np.asarray(predictions, np.int64), minlength=num_classes).astype(np.float64)
  p = hist / max(hist.sum(), 1)
  nz = p[p > 0]
  return {"class_histogram": hist.astype(int).tolist(),
          "class_entropy": max(0.0, float(-(nz * np.log(nz)).sum())),  # not -0.0
          "max_class_entropy": float(np.log(num_classes)),
          "classes_covered": int((p >= min_share).sum()), "num_classes": int(num_classes)}


def memorisation(samples: np.ndarray, held_out: np.ndarray, train: np.ndarray,
                 quantile: float = 0.01) -> dict:
  """How close samples sit to the training set, against real held-out images.

  `copy_fraction`: the fraction of samples nearer to their nearest training
  image than all but `quantile` of held-out images are (about `quantile` for
  a generator that does not copy; near 1 for one that replays its data).
  """
  d_s, idx = nearest(samples, train)
  d_h, _ = nearest(held_out, train)
  threshold = float(np.quantile(d_h, quantile))
  return {"sample_to_train_median": float(np.median(d_s)),
          "held_out_to_train_median": float(np.median(d_h)),
          "copy_threshold": threshold, "copy_fraction": float(np.mean(d_s < threshold)),
          "_nearest_index": idx, "_nearest_distance": d_s}


# Flags: a healthy generator sits near the real-data values (ratio ~1, fractions ~the
# quantile, 0.01); these bounds are far from them and far from clear failures.
COLLAPSE_DIVERSITY_RATIO = 0.5
COLLAPSE_DUPLICATE_FRACTION = 0.1
COPY_FRACTION = 0.1


def _public(d: dict) -> dict:
  return {k: v for k, v in d.items() if not k.startswith("_")}


def unconditional_report(space, samples: np.ndarray, held_out: np.ndarray | None,
                         train: np.ndarray, batch_size: int = 250, devices=None
                         ) -> tuple[dict, np.ndarray]:
  """Every metric for uint8 samples of an unconditional GAN, against real held-out
  images and the training images; (report, grid of the closest sample/train pairs).

  With held-out images, `real_baseline_*` gives the floor: the same distances
  for as many real training images as there are samples. Without them (a
  dataset with no test split) the training images are the reference for the
  distances and diversity, and the memorisation check, which needs images
  the generator never saw, is reported as unavailable.
  """
  from jaxgan.features import pixel_space
  from jaxgan.images import make_grid
  fs, ps = space(samples, batch_size, devices)
  ft, pt = space(train, batch_size, devices)
  fh, ph = space(held_out, batch_size, devices) if held_out is not None else (ft, pt)
  kid, kid_std = kernel_inception_distance(fs, fh)
  div = diversity(fs, fh)
  report = {"feature_space": space.name, "feature_space_description": space.describe,
            "num_samples": len(samples), "num_train": len(train),
            "num_held_out": 0 if held_out is None else len(held_out),
            "reference": "held-out real images" if held_out is not None
            else "training images (the dataset has no held-out split)",
            "frechet_distance": frechet_distance_of(fs, fh), "kid": kid, "kid_std": kid_std,
            "diversity": div}
  if held_out is not None:  # the floor: as many real training images as samples, in their place
    real = ft[np.sort(np.random.default_rng(1).permutation(len(ft))[:len(fs)])]
    report["real_baseline_frechet_distance"] = frechet_distance_of(real, fh)
    report["real_baseline_kid"] = kernel_inception_distance(real, fh)[0]
  if space.num_classes:
    report["class_coverage"] = class_coverage(ps, space.num_classes)
    report["held_out_class_coverage"] = class_coverage(ph, space.num_classes)
  report["flags"] = {
      "mode_collapse": bool(div["diversity_ratio"] < COLLAPSE_DIVERSITY_RATIO
                            or div["near_duplicate_fraction"] > COLLAPSE_DUPLICATE_FRACTION),
      "memorisation": None}
  mem = memorisation(fs, fh, ft) if held_out is not None else None
  if mem is not None:
    if space.name == "pixels":  # already computed
      mem_px = mem
    else:
      pixels = pixel_space()
      mem_px = memorisation(*(pixels(x, batch_size, devices)[0]
                              for x in (samples, held_out, train)))
    report["memorisation"], report["memorisation_pixels"] = _public(mem), _public(mem_px)
    report["flags"]["memorisation"] = bool(mem["copy_fraction"] > COPY_FRACTION
                                           or mem_px["copy_fraction"] > COPY_FRACTION)
    closest = np.argsort(mem["_nearest_distance"])[:8]
    nearest_train = train[mem["_nearest_index"][closest]]
  else:
    closest, nearest_train = np.arange(min(8, len(samples))), None
    _, idx = nearest(fs[closest], ft)
    nearest_train = train[idx]
  pairs = np.stack([samples[closest], nearest_train], 1)
  return report, make_grid(pairs.reshape(-1, *samples.shape[1:]), ncol=4)


def translation_report(space, fake: np.ndarray, real_target: np.ndarray, source: np.ndarray,
                       target_domain: str, batch_size: int = 250, devices=None,
                       target_train: np.ndarray | None = None) -> dict:
  """One CycleGAN direction into `target_domain` ("A" or "B"): translated test images
  against the target domain's real test images, beside the do-nothing baseline (the source
  images themselves) and, given the target domain's training images, the real-vs-real
  floor (those against the real test images: what a perfect translator would score).

  In a space with classes, also the share of images assigned the target class
  (`target_class_share`): translated, untranslated (the baseline) and real target
  images (the ceiling: the classifier's accuracy there). With a domain
  classifier the target class is the target domain; with any other classifier
  it is the class most common among the real target images.
  """
  ff, pf = space(fake, batch_size, devices)
  fr, pr = space(real_target, batch_size, devices)
  fsrc, psrc = space(source, batch_size, devices)
  kid, kid_std = kernel_inception_distance(ff, fr)
  base_kid, _ = kernel_inception_distance(fsrc, fr)
  report = {"frechet_distance": frechet_distance_of(ff, fr), "kid": kid, "kid_std": kid_std,
            "identity_baseline_frechet_distance": frechet_distance_of(fsrc, fr),
            "identity_baseline_kid": base_kid}
  if target_train is not None:
    ft, _ = space(target_train, batch_size, devices)
    report["real_baseline_frechet_distance"] = frechet_distance_of(ft, fr)
    report["real_baseline_kid"] = kernel_inception_distance(ft, fr)[0]
  if space.num_classes:
    if space.domains:
      target = list(space.class_names).index(target_domain)
    else:
      target = int(np.bincount(pr, minlength=space.num_classes).argmax())
    name = space.class_names[target] if space.class_names else str(target)
    report["target_class"] = name
    report["target_class_rule"] = ("the target domain (a domain classifier)" if space.domains
                                   else "the class most common among the real target images")
    report["target_class_share"] = {"translated": float(np.mean(pf == target)),
                                    "untranslated": float(np.mean(psrc == target)),
                                    "real_target": float(np.mean(pr == target))}
  return report


def plus_minus(std) -> str:
  """" +- std" of a KID, or a note where one estimate on all images has no spread."""
  return " (one estimate on all images)" if std != std else f" +- {std:.2g}"


def format_unconditional_report(r: dict) -> list[str]:
  """The lines evaluate.py prints for an `unconditional_report` (a WGAN's evaluation)."""
  lines = [f"step {r['step']}: {r['num_samples']} samples vs {r['num_held_out']} held-out and "
           f"{r['num_train']} training images; reference set: {r['reference']}",
           f"feature space {r['feature_space']}: {r['feature_space_description']}"]
  if "held_out_images" in r:
    lines.append(f"held-out images: {r['held_out_images']}")
  floor = "real_baseline_frechet_distance" in r and (
      f"   (real training images in their place: {r['real_baseline_frechet_distance']:.4g}, "
      f"KID {r['real_baseline_kid']:.4g})")
  lines.append(f"  Frechet distance {r['frechet_distance']:.4g}   KID {r['kid']:.4g}"
               f"{plus_minus(r['kid_std'])}{floor or ''}")
  d = r["diversity"]
  lines.append(f"  diversity: mean pairwise distance {d['mean_pairwise_distance']:.4g} vs real "
               f"{d['real_mean_pairwise_distance']:.4g} (ratio {d['diversity_ratio']:.3f}); "
               f"near-duplicate samples {d['near_duplicate_fraction']:.1%} "
               f"({d['near_duplicate_pairs']} pairs)")
  if "class_coverage" in r:
    c, h = r["class_coverage"], r["held_out_class_coverage"]
    lines.append(f"  classes: {c['classes_covered']}/{c['num_classes']} covered, entropy "
                 f"{c['class_entropy']:.3f} (held-out {h['class_entropy']:.3f}, max "
                 f"{c['max_class_entropy']:.3f}); histogram {c['class_histogram']}")
  for key, name in (("memorisation", "features"), ("memorisation_pixels", "pixels")):
    if key not in r:
      lines.append("  memorisation: not measurable without held-out images")
      break
    m = r[key]
    lines.append(f"  memorisation ({name}): median distance to nearest training image "
                 f"{m['sample_to_train_median']:.4g} (held-out real "
                 f"{m['held_out_to_train_median']:.4g}); samples closer than 99% of held-out: "
                 f"{m['copy_fraction']:.1%}")
  flags = r["flags"]
  memo = {True: "YES", False: "no", None: "not measured"}[flags["memorisation"]]
  lines.append(f"  flags: mode collapse {'YES' if flags['mode_collapse'] else 'no'}, "
               f"memorisation {memo}")
  lines.append(f"samples in {r['samples']}, grids {r['grid']} and {r['memorisation_grid']}")
  return lines
