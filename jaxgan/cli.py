"""What the command-line scripts share: their flag parser, and how a user error ends them."""
import contextlib
import re
import sys

from absl import flags

from jaxgan.errors import UserError


def _exit(message: str) -> None:
  print(f"error: {message}", file=sys.stderr)
  sys.exit(2)


def parse_flags(argv):
  """absl's parser (for `app.run(..., flags_parser=parse_flags)`), where a value that does
  not parse or a misspelt --config.<field> is one line and exit status 2, as other user
  errors are."""
  try:
    argv = flags.FLAGS(argv)
    if "config" in flags.FLAGS:  # ml_collections defers a recipe file's load error to first use
      getattr(flags.FLAGS["config"].value, "get", None)
    return argv
  except OSError as e:  # the last line names the file and the reason
    _exit(f"--config: {str(e).strip().splitlines()[-1].strip()}. Give a recipe file, e.g. "
          "configs/darknet_cifar10.py.")
  except flags.Error as e:
    _exit(f"{str(e).rstrip('.')}. The flags are listed by --helpshort.")
  except (AttributeError, KeyError) as e:  # what ml_collections raises for an unknown field
    text = str(e.args[0] if e.args else e).replace("\\", "")
    field = re.search(r"'([^'\\]+)'", text)
    hint = re.search(r'Did you mean "([^"]+)"', text)
    name = field.group(1) if field else text
    given = next((a.split("=")[0] for a in argv if a.startswith("--config.")
                  and f".{name}" in a.split("=")[0]), name)
    _exit(f"{given} is not a field of this config."
          + (f" Did you mean {hint.group(1)!r}?" if hint else "")
          + " The fields and their defaults are listed in docs/config.md and in "
          "the config file.")


@contextlib.contextmanager
def user_errors():
  """A `UserError` inside ends the process with its message and exit status, no traceback."""
  try:
    yield
  except UserError as e:
    print(f"{e.prefix}: {e}", file=sys.stderr)
    sys.exit(e.exit_code)
