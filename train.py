"""The `jaxgan-train` command, run from a checkout: `python train.py --helpshort`."""
from jaxgan.cli.train import run

if __name__ == "__main__":
  run()
