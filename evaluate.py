"""Evaluate the latest checkpoint of a training workdir.

    python evaluate.py --workdir runs/darknet [--dataset /data/cifar10]

Uses the config saved in the workdir and writes <workdir>/eval.json:
- classifier: test accuracy (plain and with flip TTA), loss, per-class accuracy;
- WGAN: --num_samples samples to samples.npz and a grid to samples.png;
- CycleGAN: the test domains translated both ways: cycle and identity L1,
  translations.npz (uint8 fake_B of each test A, fake_A of each test B), eval.png.
"""
import sys

from absl import app, flags, logging

_WORKDIR = flags.DEFINE_string("workdir", None, "A workdir written by train.py.")
_DATASET = flags.DEFINE_string("dataset", None, "Override the dataset (e.g. if it moved; "
                               "for CycleGAN also <testA folder>,<testB folder>).")
_BATCH = flags.DEFINE_integer("batch_size", None, "Evaluation batch size (global).")
_DEVICES = flags.DEFINE_integer("num_devices", -1, "Local devices to use (-1: all).")
_SAMPLES = flags.DEFINE_integer("num_samples", 1000, "GAN samples to draw.")
flags.mark_flags_as_required(["workdir"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  logging.set_verbosity(logging.WARNING)
  from jaxgan.errors import UserError
  from jaxgan.experiment import evaluate
  try:
    result = evaluate(_WORKDIR.value, dataset=_DATASET.value, num_devices=_DEVICES.value,
                      eval_batch_size=_BATCH.value, num_samples=_SAMPLES.value)
  except UserError as e:
    print(f"{e.prefix}: {e}", file=sys.stderr)
    sys.exit(e.exit_code)
  if "cycle_l1_A" in result:
    print(f"step {result['step']} on {result['dataset']} ({result['split']}: "
          f"{result['num_a']} A, {result['num_b']} B images)")
    print(f"cycle L1  A->B->A {result['cycle_l1_A']:.4f}  B->A->B {result['cycle_l1_B']:.4f}")
    print(f"identity L1  G_A(B) {result['identity_l1_A']:.4f}  G_B(A) {result['identity_l1_B']:.4f}")
    print(f"translations in {result['translations']}, grid {result['grid']}")
    return
  if "samples" in result:
    print(f"step {result['step']}: {result['num_samples']} samples in {result['samples']}, "
          f"grid {result['grid']}")
    return
  print(f"step {result['step']} on {result['dataset']} ({result['split']}, "
        f"{result['num_examples']} images)")
  print(f"accuracy {result['accuracy']:.4f}  with flip TTA {result['accuracy_flip_tta']:.4f}  "
        f"loss {result['loss']:.4f}")
  for name, acc in result["per_class_accuracy"].items():
    print(f"  {name:>12s} {acc:.4f}")
  print(f"written to {_WORKDIR.value}/eval.json")


if __name__ == "__main__":
  app.run(main)
