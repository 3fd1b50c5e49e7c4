"""Evaluate the latest checkpoint of a training workdir.

    python evaluate.py --workdir runs/darknet [--dataset /data/cifar10]

Uses the config saved in the workdir and writes <workdir>/eval.json:
- classifier: test accuracy (plain, with flip TTA, and with flip + translate TTA for
  recipes with tta_translate), loss, per-class accuracy;
- WGAN: --num_samples samples to samples.npz and a grid to samples.png;
- CycleGAN: the test domains translated both ways: cycle and identity L1,
  translations.npz (uint8 fake_B of each test A, fake_A of each test B), eval.png.

A workdir may come from someone else, so its config.json is read as data: the settings in
it that would make this process write or load files elsewhere (xla_flags,
compilation_cache, cache_dir) are not applied; give them here as flags instead.
"""

from absl import app, flags, logging

from jaxgan import cli

_WORKDIR = flags.DEFINE_string("workdir", None, "A workdir written by train.py.")
_DATASET = flags.DEFINE_string("dataset", None, "Override the dataset (e.g. if it moved; "
                               "for CycleGAN also <testA folder>,<testB folder>; for a WGAN "
                               "the held-out and training images of the metrics).")
_BATCH = flags.DEFINE_integer("batch_size", None, "Evaluation / feature batch size (global).")
_DEVICES = flags.DEFINE_integer("num_devices", -1, "Local devices to use (-1: all).")
_SAMPLES = flags.DEFINE_integer("num_samples", 1000, "GAN samples to draw (>= 2).")
_SUBSET = flags.DEFINE_integer("eval_subset", -1, "Classifier: evaluate on the first N test "
                               "images of a fixed shuffle (-1: every test image).")
_FEATURES = flags.DEFINE_string(
    "features", None, "Feature space of the GAN metrics: pixels (the default), "
    "darknet:<classifier workdir>, or inception:<pt_inception weights file> (FID comparable "
    "with published figures; see the README's Evaluating GANs).")
_XLA_FLAGS = flags.DEFINE_string(
    "xla_flags", "", "Extra XLA flags for this process, e.g. the ones the run was trained with "
    "(never taken from the workdir's config.json, as some write files anywhere).")
_COMPILATION_CACHE = flags.DEFINE_string(
    "compilation_cache", "", "Where compiled programs are kept across runs: '' for jaxgan's "
    "own cache, 'none', or a folder (never taken from the workdir's config.json).")
_CACHE_DIR = flags.DEFINE_string(
    "cache_dir", None, "Where decoded dataset images are cached: jaxgan's own cache by "
    "default ('none' if the run turned caching off), 'none', or a folder (never taken from "
    "the workdir's config.json).")
flags.mark_flags_as_required(["workdir"])


def _pm(std):
  return " (one estimate on all images)" if std != std else f" +- {std:.2g}"


def print_gan_report(r):
  print(f"step {r['step']}: {r['num_samples']} samples vs {r['num_held_out']} held-out and "
        f"{r['num_train']} training images; reference set: {r['reference']}")
  print(f"feature space {r['feature_space']}: {r['feature_space_description']}")
  if "held_out_images" in r:
    print(f"held-out images: {r['held_out_images']}")
  floor = "real_baseline_frechet_distance" in r and (
      f"   (real training images in their place: {r['real_baseline_frechet_distance']:.4g}, "
      f"KID {r['real_baseline_kid']:.4g})")
  print(f"  Frechet distance {r['frechet_distance']:.4g}   KID {r['kid']:.4g}{_pm(r['kid_std'])}"
        f"{floor or ''}")
  d = r["diversity"]
  print(f"  diversity: mean pairwise distance {d['mean_pairwise_distance']:.4g} vs real "
        f"{d['real_mean_pairwise_distance']:.4g} (ratio {d['diversity_ratio']:.3f}); "
        f"near-duplicate samples {d['near_duplicate_fraction']:.1%} "
        f"({d['near_duplicate_pairs']} pairs)")
  if "class_coverage" in r:
    c, h = r["class_coverage"], r["held_out_class_coverage"]
    print(f"  classes: {c['classes_covered']}/{c['num_classes']} covered, entropy "
          f"{c['class_entropy']:.3f} (held-out {h['class_entropy']:.3f}, max "
          f"{c['max_class_entropy']:.3f}); histogram {c['class_histogram']}")
  for key, name in (("memorisation", "features"), ("memorisation_pixels", "pixels")):
    if key not in r:
      print("  memorisation: not measurable without held-out images")
      break
    m = r[key]
    print(f"  memorisation ({name}): median distance to nearest training image "
          f"{m['sample_to_train_median']:.4g} (held-out real {m['held_out_to_train_median']:.4g});"
          f" samples closer than 99% of held-out: {m['copy_fraction']:.1%}")
  flags_ = r["flags"]
  memo = {True: "YES", False: "no", None: "not measured"}[flags_["memorisation"]]
  print(f"  flags: mode collapse {'YES' if flags_['mode_collapse'] else 'no'}, memorisation {memo}")
  print(f"samples in {r['samples']}, grids {r['grid']} and {r['memorisation_grid']}")


def print_result(result):
  if "cycle_l1_A" in result:
    print(f"step {result['step']} on {result['dataset']} ({result['split']}: "
          f"{result['num_a']} A, {result['num_b']} B images)")
    print(f"cycle L1  A->B->A {result['cycle_l1_A']:.4f}  B->A->B {result['cycle_l1_B']:.4f}")
    print(f"identity L1  G_A(B) {result['identity_l1_A']:.4f}  G_B(A) {result['identity_l1_B']:.4f}")
    print(f"in feature space {result['feature_space']} ({result['feature_space_description']}):")
    for d in ("AtoB", "BtoA"):
      r = result[d]
      target = d[-1]
      floor = ("real_baseline_frechet_distance" in r and
               f"; real {target} train vs test: {r['real_baseline_frechet_distance']:.4g}")
      floor_kid = "real_baseline_kid" in r and f"; real: {r['real_baseline_kid']:.4g}"
      print(f"  {d}: Frechet distance {r['frechet_distance']:.4g} (untranslated: "
            f"{r['identity_baseline_frechet_distance']:.4g}{floor or ''}), KID {r['kid']:.4g}"
            f"{_pm(r['kid_std'])} (untranslated: {r['identity_baseline_kid']:.4g}"
            f"{floor_kid or ''})")
      if "target_class" in r:
        share = r["target_class_share"]
        print(f"    classified as {r['target_class']!r}: translated {share['translated']:.1%}, "
              f"untranslated {share['untranslated']:.1%}, real target {share['real_target']:.1%}")
    if "classifier_accuracy" in result:
      print(f"  domain classifier accuracy on these real test images: "
            f"{result['classifier_accuracy']:.1%}")
    print(f"translations in {result['translations']}, grid {result['grid']}")
    return
  if "samples" in result:
    print_gan_report(result)
    return
  print(f"step {result['step']} on {result['dataset']} ({result['split']}, "
        f"{result['num_examples']} images)")
  translate = result.get("accuracy_translate_tta")
  print(f"accuracy {result['accuracy']:.4f}  with flip TTA {result['accuracy_flip_tta']:.4f}  "
        + (f"with flip + translate TTA {translate:.4f}  " if translate is not None else "")
        + f"loss {result['loss']:.4f}")
  for name, acc in result["per_class_accuracy"].items():
    print(f"  {name:>12s} {acc:.4f}")
  if "not_written" not in result:
    print(f"written to {_WORKDIR.value}/eval.json")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  logging.set_verbosity(logging.ERROR)  # orbax chatter; our warnings go to stderr directly
  from jaxgan.experiment import evaluate
  with cli.user_errors():
    result = evaluate(_WORKDIR.value, dataset=_DATASET.value, num_devices=_DEVICES.value,
                      eval_batch_size=_BATCH.value, num_samples=_SAMPLES.value,
                      features=_FEATURES.value, eval_subset=_SUBSET.value,
                      xla_flags=_XLA_FLAGS.value, compilation_cache=_COMPILATION_CACHE.value,
                      cache_dir=_CACHE_DIR.value)
  print_result(result)
  if "not_written" in result:
    print(f"not saved in {_WORKDIR.value}: {', '.join(result['not_written'])} (see the warnings "
          "above); the results are the ones printed here")


if __name__ == "__main__":
  app.run(main, flags_parser=cli.parse_flags)
