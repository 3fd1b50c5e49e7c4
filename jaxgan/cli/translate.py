r"""Translate your own images with a CycleGAN generator: one you trained, or a published one
(`jaxgan-translate`, or `python translate.py` in a checkout).

    jaxgan-translate --workdir runs/h2z --input my_horses/ --output zebras/ [--direction AtoB]
    jaxgan-translate --workdir runs/h2z --input my_zebras/ --output horses/ --direction BtoA
    jaxgan-translate --weights horse2zebra_pretrained/latest_net_G.pth --input horse.jpg \
        --output zebras/

With --workdir, AtoB applies the run's G_A (domain A -> B, e.g. horse -> zebra),
BtoA its G_B. --weights takes a generator saved by the reference repository
(junyanz/pytorch-CycleGAN-and-pix2pix: latest_net_G_A.pth, or a published
*_pretrained/latest_net_G.pth), read without PyTorch; it is one direction.
--input is an image file or a folder: every image under it (subfolders too) is
translated at its own size (sides that are not multiples of 4 are padded for
the generator and cropped back) and written as PNG under --output with the
same relative name. The generator compiles once per distinct image size, so a
folder of same-sized photos runs at full speed and mixed sizes pay a compile
for each new size (a few seconds); --resize N first scales each image's
shorter side to N (e.g. 256, the training resolution; large photos need a lot
of memory at full size), which also gives same-shaped inputs for square photos.

Nothing is written outside --output, and never through a symbolic link: a link (or a
folder) where an output goes is refused before any image is translated. A --workdir's
xla_flags and compilation_cache are not applied (a shared workdir could name any folder);
--xla_flags and --compilation_cache give this process's own.
"""

from absl import app, flags, logging

from jaxgan import cli

_WORKDIR = flags.DEFINE_string("workdir", None, "A CycleGAN workdir written by train.py.")
_WEIGHTS = flags.DEFINE_string("weights", None, "Or: a ResNet generator file (.pth) saved by "
                               "pytorch-CycleGAN-and-pix2pix.")
_INPUT = flags.DEFINE_string("input", None, "An image, or a folder of images, to translate.")
_OUTPUT = flags.DEFINE_string("output", None, "Folder for the translated PNGs (created).")
_DIRECTION = flags.DEFINE_string("direction", None, "With --workdir: AtoB (G_A, the default) "
                                 "or BtoA (G_B).")
_RESIZE = flags.DEFINE_integer("resize", 0, "Scale the shorter side to this first (0: keep).")
_XLA_FLAGS = flags.DEFINE_string(
    "xla_flags", "", "Extra XLA flags for this process (never taken from the workdir's "
    "config.json, as some write files anywhere).")
_COMPILATION_CACHE = flags.DEFINE_string(
    "compilation_cache", "", "Where compiled programs are kept across runs: '' for jaxgan's "
    "own cache (with --workdir; none with --weights), 'none', or a folder (never taken from "
    "the workdir's config.json).")
flags.mark_flags_as_required(["input", "output"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  cli.quiet_libraries(logging.ERROR)  # orbax chatter; jaxgan's warnings go to stderr directly
  from jaxgan.experiment import translate
  with cli.user_errors():
    result = translate(_INPUT.value, _OUTPUT.value, workdir=_WORKDIR.value,
                       weights=_WEIGHTS.value, direction=_DIRECTION.value, resize=_RESIZE.value,
                       xla_flags=_XLA_FLAGS.value, compilation_cache=_COMPILATION_CACHE.value)
  how = (f"{result['direction']}, checkpoint step {result['step']}" if result["step"] is not None
         else f"weights {result['source']}")
  print(f"{result['written']} translated ({how}) into {result['output_dir']}")
  if result["skipped"]:
    print(f"skipped {len(result['skipped'])} unreadable file(s): "
          + ", ".join(result["skipped"][:10]))


def run():
  cli.main(main, __doc__)


if __name__ == "__main__":
  run()
