"""The `jaxgan-evaluate` command, run from a checkout: `python evaluate.py --helpshort`."""
from jaxgan.cli.evaluate import run

if __name__ == "__main__":
  run()
