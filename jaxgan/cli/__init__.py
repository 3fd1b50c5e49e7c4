"""The command-line programs (`jaxgan-train`, `jaxgan-evaluate`, `jaxgan-translate`, and the
checkout's train.py, evaluate.py, translate.py) and what they share: their flag parser, the
recipe names, the log level, and how a user error ends them."""
import contextlib
import os
import re
import sys

from absl import app, flags, logging

from jaxgan import configs
from jaxgan.errors import UserError


def _exit(message: str) -> None:
  print(f"error: {message}", file=sys.stderr)
  sys.exit(2)


def main(command_main, doc: str) -> None:
  """Run a command: absl's `app.run` with `parse_flags`, and `doc` as its --help text (an
  installed command's __main__ is a generated stub with none)."""
  sys.modules["__main__"].__doc__ = doc
  for flag in flags.FLAGS.get_key_flags_for_module(command_main.__module__):
    flags.FLAGS.register_key_flag_for_module(sys.argv[0], flag)  # what --helpshort lists
  app.run(command_main, flags_parser=parse_flags)


def quiet_libraries(level=logging.WARNING) -> None:
  """Orbax and JAX log at INFO; jaxgan prints its own lines. --verbosity, if given, wins."""
  if not flags.FLAGS["verbosity"].present:
    logging.set_verbosity(level)


def _recipe_file(value: str) -> str:
  """--config's value with a recipe name (`darknet_cifar10`, or `darknet_cifar10:arg`)
  replaced by that recipe's file; a file path is kept."""
  name, sep, rest = value.partition(":")
  if os.path.exists(name) or not re.fullmatch(r"\w+", name):
    return value
  found = configs.path(name)
  if found is None:
    _exit(f"--config={value}: no such file, and {name!r} is not a recipe name. The recipes: "
          + ", ".join(configs.names()) + " (or give a recipe file).")
  return found + sep + rest


def _with_recipe_files(argv: list) -> list:
  out = list(argv)
  for i, arg in enumerate(out):
    if arg.startswith("--config="):
      out[i] = "--config=" + _recipe_file(arg[len("--config="):])
    elif arg == "--config" and i + 1 < len(out):
      out[i + 1] = _recipe_file(out[i + 1])
  return out


def parse_flags(argv):
  """absl's parser (for `app.run(..., flags_parser=parse_flags)`), where a value that does
  not parse or a misspelt --config.<field> is one line and exit status 2, as other user
  errors are. --config takes a recipe name as well as a file."""
  try:
    argv = flags.FLAGS(_with_recipe_files(argv))
    if "config" in flags.FLAGS:  # ml_collections defers a recipe file's load error to first use
      getattr(flags.FLAGS["config"].value, "get", None)
    return argv
  except OSError as e:  # the last line names the file and the reason
    _exit(f"--config: {str(e).strip().splitlines()[-1].strip()}. Give a recipe file, e.g. "
          "configs/darknet_cifar10.py, or a recipe name, e.g. darknet_cifar10.")
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
