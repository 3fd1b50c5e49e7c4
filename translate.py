"""Translate your own images with a trained CycleGAN generator.

    python translate.py --workdir runs/h2z --input my_horses/ --output zebras/ [--direction AtoB]
    python translate.py --workdir runs/h2z --input my_zebras/ --output horses/ --direction BtoA

AtoB applies G_A (domain A -> B, e.g. horse -> zebra), BtoA applies G_B.
Every image under --input (subfolders too) is translated at its own size
(sides that are not multiples of 4 are padded for the generator and cropped
back) and written as PNG under --output with the same relative name.
--resize N first scales each image's shorter side to N (e.g. 256, the
training resolution; large photos need a lot of memory at full size).
"""

from absl import app, flags, logging

from jaxgan import cli

_WORKDIR = flags.DEFINE_string("workdir", None, "A CycleGAN workdir written by train.py.")
_INPUT = flags.DEFINE_string("input", None, "Folder of images to translate.")
_OUTPUT = flags.DEFINE_string("output", None, "Folder for the translated PNGs (created).")
_DIRECTION = flags.DEFINE_string("direction", "AtoB", "AtoB (G_A) or BtoA (G_B).")
_RESIZE = flags.DEFINE_integer("resize", 0, "Scale the shorter side to this first (0: keep).")
flags.mark_flags_as_required(["workdir", "input", "output"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  logging.set_verbosity(logging.ERROR)  # orbax chatter; our warnings go to stderr directly
  from jaxgan.experiment import translate
  with cli.user_errors():
    result = translate(_WORKDIR.value, _INPUT.value, _OUTPUT.value, _DIRECTION.value,
                       _RESIZE.value)
  print(f"{result['written']} translated ({result['direction']}, checkpoint step "
        f"{result['step']}) into {result['output_dir']}")
  if result["skipped"]:
    print(f"skipped {len(result['skipped'])} unreadable file(s): "
          + ", ".join(result["skipped"][:10]))


if __name__ == "__main__":
  app.run(main, flags_parser=cli.parse_flags)
