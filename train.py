"""Train a jaxgan recipe.

    python train.py --config configs/darknet_cifar10.py --workdir runs/darknet \
        [--config.batch_size=512 --config.dataset=/data/cifar10 ...]

Re-running the same command resumes from the latest checkpoint in --workdir.
"""
import re
import sys

from absl import app, flags, logging
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file("config", None, "Recipe file (configs/*.py).",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Where checkpoints, logs and config go.")
flags.mark_flags_as_required(["config", "workdir"])


def parse_flags(argv):
  """absl's parser, with a readable message for a misspelt --config.<field>."""
  try:
    return app.parse_flags_with_usage(argv)
  except (AttributeError, KeyError) as e:  # what ml_collections raises for an unknown field
    text = str(e.args[0] if e.args else e).replace("\\", "")
    field = re.search(r"'([^'\\]+)'", text)
    hint = re.search(r'Did you mean "([^"]+)"', text)
    name = field.group(1) if field else text
    given = next((a.split("=")[0] for a in argv if a.startswith("--config.")
                  and f".{name}" in a.split("=")[0]), name)
    print(f"error: {given} is not a field of this config."
          + (f" Did you mean {hint.group(1)!r}?" if hint else "")
          + " The fields and their defaults are listed in the README (Config fields) and in "
          "the config file.", file=sys.stderr)
    sys.exit(2)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  logging.set_verbosity(logging.WARNING)
  from jaxgan.errors import UserError
  from jaxgan.experiment import train_and_evaluate
  try:
    result = train_and_evaluate(_CONFIG.value, _WORKDIR.value)
  except UserError as e:
    print(f"{e.prefix}: {e}", file=sys.stderr)
    sys.exit(e.exit_code)
  if result["eval"]:
    print("final eval: " + ", ".join(f"{k} {v:.4f}" for k, v in result["eval"].items()))


if __name__ == "__main__":
  app.run(main, flags_parser=parse_flags)
