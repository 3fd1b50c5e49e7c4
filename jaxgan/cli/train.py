r"""Train a jaxgan recipe.

    jaxgan-train --config darknet_cifar10 --workdir runs/darknet \
        [--config.batch_size=512 --config.dataset=/data/cifar10 ...]

(or `python train.py` in a checkout). --config takes a recipe name or a recipe file
(configs/*.py). Re-running the same command resumes from the latest checkpoint in --workdir.
"""
from absl import app, flags
from ml_collections import config_flags

from jaxgan import cli

_CONFIG = config_flags.DEFINE_config_file("config", None, "Recipe name (e.g. tiny_darknet) or file.",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Where checkpoints, logs and config go.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  cli.quiet_libraries()
  from jaxgan.experiment import train_and_evaluate
  with cli.user_errors():
    result = train_and_evaluate(_CONFIG.value, _WORKDIR.value)
  if result["eval"]:
    print("final eval: " + ", ".join(f"{k} {v:.4f}" for k, v in result["eval"].items()))


def run():
  cli.main(main, __doc__)


if __name__ == "__main__":
  run()
