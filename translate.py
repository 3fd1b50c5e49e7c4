"""The `jaxgan-translate` command, run from a checkout: `python translate.py --helpshort`."""
from jaxgan.cli.translate import run

if __name__ == "__main__":
  run()
