"""Evaluate the latest checkpoint of a training workdir.

    jaxgan-evaluate --workdir runs/darknet [--dataset /data/cifar10]

(or `python evaluate.py` in a checkout).

Uses the config saved in the workdir and writes <workdir>/eval.json (with --name N:
eval_N.json, and N-suffixed files, so that several evaluations of one workdir are kept):
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
    "with published figures; see docs/evaluation.md).")
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
_NAME = flags.DEFINE_string(
    "name", "", "Name of this evaluation, to keep several: results go to eval_<name>.json "
    "and its files get the same suffix (samples_<name>.npz, ...). Default: eval.json.")
flags.mark_flags_as_required(["workdir"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  cli.quiet_libraries(logging.ERROR)  # orbax chatter; jaxgan's warnings go to stderr directly
  from jaxgan.experiment import evaluate
  with cli.user_errors():
    result = evaluate(_WORKDIR.value, dataset=_DATASET.value, num_devices=_DEVICES.value,
                      eval_batch_size=_BATCH.value, num_samples=_SAMPLES.value,
                      features=_FEATURES.value, eval_subset=_SUBSET.value,
                      xla_flags=_XLA_FLAGS.value, compilation_cache=_COMPILATION_CACHE.value,
                      cache_dir=_CACHE_DIR.value, name=_NAME.value)
  from jaxgan import tasks
  print("\n".join(tasks.family(result["task"]).format_report(result)))
  took = result["seconds"]
  print(f"took {took['total']:.0f} s, {took['compiling']:.0f} s of it compiling")
  if "not_written" in result:
    print(f"not saved in {_WORKDIR.value}: {', '.join(result['not_written'])} (see the warnings "
          "above); the results are the ones printed here")


def run():
  cli.main(main, __doc__)


if __name__ == "__main__":
  run()
