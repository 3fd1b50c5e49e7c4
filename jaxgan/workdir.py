"""A training run's folder: creating it, locking it to one run, and the config saved in it
(writing and reading config.json, and which changes a resumed run may make)."""
import fcntl
import json
import os
import socket
import time

import jax

from jaxgan import parallel
from jaxgan.errors import ConfigError, WorkdirError

# Fields a resumed run may change: they leave the model, the data and the optimisation
# already done as they were. (num_epochs stretches the remaining schedule, as documented.)
RESUME_SAFE_FIELDS = frozenset({
    "num_epochs", "num_train_steps", "log_every_steps", "eval_every_epochs",
    "checkpoint_every_epochs", "keep_checkpoints", "progress_bar", "sample_every_steps",
    "num_grid_samples", "num_devices", "distributed", "dataset", "tfds_data_dir", "download",
    "cache_dir", "eval_batch_size", "eval_subset", "eval_split", "test_splits",
    "bad_images", "on_nonfinite", "compilation_cache", "xla_flags"})



def prepare_workdir(workdir: str) -> str:
  workdir = os.path.abspath(os.path.expanduser(workdir))
  try:
    os.makedirs(workdir, exist_ok=True)
    probe = os.path.join(workdir, f".write-test-{os.getpid()}")
    with open(probe, "w") as f:
      f.write("ok")
    os.remove(probe)
  except OSError as e:
    raise WorkdirError(f"cannot write to the workdir {workdir}: {e.strerror or e}. "
                       "Pass a --workdir on a writable disk with free space.") from e
  return workdir


class WorkdirLock:
  """One training run per workdir: an exclusive lock on `<workdir>/.lock`.

  The OS releases it when the process ends, however it ends (SIGKILL too),
  so a stale lock never blocks a restart.
  """

  def __init__(self, workdir: str):
    self.workdir = workdir
    self.path = os.path.join(workdir, ".lock")
    self._file = None

  def __enter__(self):
    if jax.process_index() != 0:  # the hosts of one run share the workdir
      return self
    f = open(self.path, "a+")
    try:
      fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
      f.seek(0)
      owner = f.read().strip() or "owner unknown"
      f.close()
      raise WorkdirError(f"another training run is using the workdir {self.workdir} ({owner}). "
                         "Wait for it to finish or stop it, or pass a different --workdir.")
    f.seek(0)
    f.truncate()
    f.write(f"pid {os.getpid()} on {socket.gethostname()}, since "
            f"{time.strftime('%Y-%m-%d %H:%M:%S')}\n")
    f.flush()
    self._file = f
    return self

  def __exit__(self, *exc):
    if self._file is not None:
      self._file.truncate(0)
      fcntl.flock(self._file, fcntl.LOCK_UN)
      self._file.close()
      self._file = None


def _flatten(d: dict, prefix: str = "") -> dict:
  out = {}
  for k, v in d.items():
    if isinstance(v, dict):
      out.update(_flatten(v, f"{prefix}{k}."))
    else:
      out[f"{prefix}{k}"] = v
  return out


def config_differences(saved: dict, new: dict, safe: frozenset = RESUME_SAFE_FIELDS
                       ) -> list[str]:
  """`field: saved -> new` for every field that differs and is not in `safe`.

  Fields only one side has (a newer jaxgan added or dropped them) are not
  differences.
  """
  a, b = _flatten(saved), _flatten(json.loads(json.dumps(new)))
  return [f"{k}: {a[k]!r} (saved) -> {b[k]!r}" for k in sorted(a.keys() & b.keys())
          if a[k] != b[k] and k not in safe]


def check_resumable(config, workdir: str, family_fields: frozenset = frozenset()) -> None:
  """Refuse to resume a workdir with a config that changes the model, data or recipe;
  `family_fields`: the task's own resume-safe fields."""
  path = os.path.join(workdir, "config.json")
  saved = read_saved_config(workdir)
  if saved is None:
    return
  safe = RESUME_SAFE_FIELDS | family_fields
  diffs = config_differences(saved, config.to_dict(), safe)
  if diffs:
    raise ConfigError(
        f"{workdir} holds a run trained with a different config, so it cannot be resumed with "
        "this one: " + "; ".join(diffs) + ". Use a new --workdir, or the saved values (in "
        f"{path}). Fields that may change on resume: {', '.join(sorted(safe))}.")


# Where each host finds its data and keeps its caches may differ; all else must match.
HOST_LOCAL_FIELDS = frozenset({"dataset", "tfds_data_dir", "download", "cache_dir",
                               "compilation_cache"})


def check_same_config_on_all_hosts(config) -> None:
  """Refuse to start a multi-host run whose hosts were given different configs."""
  if jax.process_count() == 1:
    return
  fields = {k: v for k, v in _flatten(json.loads(config.to_json_best_effort())).items()
            if k not in HOST_LOCAL_FIELDS}
  differ = parallel.differing_processes(json.dumps(fields, sort_keys=True))
  if differ:
    raise ConfigError(f"process(es) {differ} were started with a config that differs from "
                      "process 0's: start every host with the same command (only "
                      f"{', '.join(sorted(HOST_LOCAL_FIELDS))} may differ).")


VERSIONED = ("jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "numpy")


def library_versions() -> dict:
  """The versions a run trains with: Python, jaxgan and the libraries its numbers depend on."""
  import importlib.metadata
  import platform
  import jaxgan
  versions = {"python": platform.python_version(), "jaxgan": jaxgan.__version__}
  for name in VERSIONED:
    try:
      versions[name] = importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
      versions[name] = "not installed"
  return versions


def _write_atomically(path: str, text: str) -> None:
  with open(path + ".tmp", "w") as f:
    f.write(text)
  os.replace(path + ".tmp", path)


def save_config(config, workdir: str) -> None:
  """`config.json`, and the library versions in `versions.json` beside it (rewritten by each
  run in the workdir, a resumed one too).

  The versions are a sibling file rather than a key of config.json: config.json is read back
  as the config itself, compared field by field on resume (`config_differences`) and
  type-checked field by field by evaluate.py's and translate.py's readers
  (`experiment._check_saved_types`); a key that is no config field would reach all of them.
  """
  if jax.process_index() == 0:
    _write_atomically(os.path.join(workdir, "config.json"),
                      config.to_json_best_effort(indent=2, sort_keys=True))
    _write_atomically(os.path.join(workdir, "versions.json"),
                      json.dumps(library_versions(), indent=2) + "\n")


def read_saved_config(workdir: str) -> dict | None:
  """The workdir's config.json as a dict, or None if it has none."""
  path = os.path.join(workdir, "config.json")
  if not os.path.exists(path):
    return None
  try:
    with open(path) as f:
      saved = json.load(f)
  except (OSError, ValueError) as e:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
    raise WorkdirError(f"{path} cannot be read as a config ({e}). It records the run's recipe; "
                       "restore it from a backup, or train in a new --workdir.") from None
  if not isinstance(saved, dict):
    raise WorkdirError(f"{path} holds no config (a JSON {type(saved).__name__}); restore it "
                       "from a backup, or train in a new --workdir.")
  return saved


def load_config(workdir: str):
  """The config a workdir was trained with (written by `run`)."""
  import ml_collections
  saved = read_saved_config(workdir)
  if saved is None:
    raise WorkdirError(f"{workdir} has no config.json: it is not a jaxgan workdir, or training "
                       "never started there. Pass the --workdir that train.py used.")
  return ml_collections.ConfigDict(saved)
