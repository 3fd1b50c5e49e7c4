"""The model families, by the name `config.task` gives them.

Each family is a module that provides what the shared code needs of it, so that the
loop, `experiment` and the command-line scripts never name a family's own fields:

- `TASK`: its `loop.Task` subclass. `TASK.build(config, devices, train=True)` validates the
  config, loads the data (`TASK.load_data`) and hands it to the task. It also names the
  family's own fields a resumed run may change (`resume_safe_fields`);
- `validate(config)` (also `TASK.validate`): the checks of its own fields (the shared ones
  are `config_checks.validate_run_fields`);
- `check_evaluation(saved_config, **options)`: checks before an evaluation loads anything;
- `evaluate_workdir(workdir, devices, *, dataset, batch_size, cache_dir, features,
  num_samples, eval_subset)`: evaluate a trained workdir (options it has no use for are
  ignored); returns (result, {file name: writer}) and `experiment.evaluate` writes them
  with `eval.json` (a result value that is one of those file names becomes that file's
  path);
- `EVAL_OUTPUTS`: the names of those files, checked before any work;
- `format_report(result)`: the lines `evaluate.py` prints.
"""
import importlib

from jaxgan.errors import ConfigError

FAMILIES = {"classifier": "jaxgan.classifier", "wgan": "jaxgan.wgan",
            "cyclegan": "jaxgan.cyclegan"}
NAMES = tuple(FAMILIES)


def family(name: str):
  """The module of family `name`, imported on first use (each pulls in its own models)."""
  if name not in FAMILIES:
    raise ConfigError(f"--config.task={name!r} is unknown; use one of "
                      + ", ".join(repr(n) for n in NAMES))
  return importlib.import_module(FAMILIES[name])


def of(config):
  return family(config.get("task", "classifier"))
