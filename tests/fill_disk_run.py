"""Train a tiny recipe and fill the disk the workdir is on at a chosen moment (a real
ENOSPC, for tests/test_hardening.py): python tests/fill_disk_run.py FOLDER WORKDIR WHEN N
with WHEN `step` (before training step N) or `save` (just after the save of step N began)."""
import os
import sys

sys.path[:0] = [os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                os.path.dirname(os.path.abspath(__file__))]

from conftest import tiny_config  # noqa: E402
from jaxgan import cli, experiment  # noqa: E402
from jaxgan.checkpoint import Checkpointer  # noqa: E402
from jaxgan.classifier import ClassifierTask  # noqa: E402


def fill_disk(folder):
  try:
    with open(os.path.join(folder, "filler"), "wb") as f:
      while True:
        f.write(b"\0" * 65536)
        f.flush()
  except OSError:  # full (also if it already was)
    pass
  print("disk filled", file=sys.stderr, flush=True)


def main(folder, workdir, when, n):
  n = int(n)
  disk = os.path.dirname(workdir)
  if when == "step":
    batch = ClassifierTask.train_batch
    ClassifierTask.train_batch = lambda self, step: (
        fill_disk(disk) if step == n else None, batch(self, step))[1]
  else:
    save = Checkpointer.save

    def save_then_fill(self, step, *args, **kwargs):
      save(self, step, *args, **kwargs)
      if step == n:
        fill_disk(disk)
    Checkpointer.save = save_then_fill
  with cli.user_errors():
    experiment.train_and_evaluate(tiny_config(folder, batch_size=4, log_every_steps=1,
                                              num_epochs=20), workdir)


if __name__ == "__main__":
  main(*sys.argv[1:])
