"""Library entry points behind train.py and evaluate.py."""
import collections
import contextlib
import functools
import importlib
import importlib.util
import json
import os
import re
import shlex
import sys
import time

import jax

from jaxgan import configs, parallel, tasks
from jaxgan.config_checks import check as _check, validate_run_fields
from jaxgan.errors import ConfigError
from jaxgan.loop import run
from jaxgan.workdir import WorkdirLock, check_same_config_on_all_hosts, prepare_workdir


def validate_config(config, num_devices_total: int) -> None:
  """Reject values that cannot work, naming the field and the fix: the shared fields, then
  the family's own."""
  validate_run_fields(config, num_devices_total)
  tasks.of(config).validate(config)


def build_task(config, devices, **kwargs):
  return tasks.of(config).TASK.build(config, devices, **kwargs)


def train_and_evaluate(config, workdir: str) -> dict:
  """Train the recipe `config` in `workdir`, resuming from its latest checkpoint.

  Returns {"step": int, "train": {...}, "eval": {...}} (last logged metrics).
  """
  parallel.use_xla_flags(config.get("xla_flags", ""))  # before JAX starts: XLA reads them once
  parallel.maybe_initialize_distributed(config.get("distributed", False))
  new = not os.path.exists(os.path.expanduser(workdir))
  workdir = prepare_workdir(workdir)
  try:
    devices = parallel.local_devices(config.get("num_devices", -1))
    validate_config(config, len(devices) * jax.process_count())
    check_same_config_on_all_hosts(config)  # before the hosts' first collective can diverge
    parallel.use_compilation_cache(config.get("compilation_cache", ""))
    with WorkdirLock(workdir):
      task = build_task(config, devices)
      return run(task, config, workdir, devices)
  except BaseException:
    if new and jax.process_index() == 0:
      _remove_if_unused(workdir)
    raise


def _remove_if_unused(workdir: str) -> None:
  """Remove a workdir this run created when it failed before writing anything in it (a bad
  dataset, a config error), so a typo leaves no empty folder behind."""
  try:
    if set(os.listdir(workdir)) <= {".lock"}:
      with contextlib.suppress(FileNotFoundError):
        os.remove(os.path.join(workdir, ".lock"))
      os.rmdir(workdir)
  except OSError:  # something appeared meanwhile, or it cannot be removed: leave it
    pass


# ---- readers: evaluate.py and translate.py --------------------------------------------------
# A workdir may come from someone else (a shared run folder), so a reader treats its
# config.json as data, never as instructions to the process. What it takes from the file:
# - task: picks one of the three known code paths; anything else is refused.
# - the recipe (model sizes, image_size, load_size, dtype, loss, gan_mode, seed, ...): it only
#   shapes what is computed. Each value must have the type jaxgan's recipes give it
#   (`_check_saved_types`), each task's own validation bounds it from below, and a model
#   that does not fit the checkpoint's arrays is refused when the checkpoint is restored.
# - dataset, its splits, subsets, labels, held_out, bad_images: which images are read.
#   Reading is all that happens (archives are read in memory, never unpacked); --dataset
#   overrides it. tfds_data_dir is read the same way: a TFDS copy there is read, and
#   downloading is turned off, since preparing one would write there. download otherwise
#   keeps its value: a dataset named in the file then goes to this user's own TFDS folder,
#   as train.py would put it.
# - eval_batch_size: memory, not files (--batch_size overrides).
# What it never takes from the file, because each makes the process write or load files
# where the file says:
# - xla_flags (--xla_dump_to and others write files anywhere): --xla_flags instead;
# - compilation_cache (compiled programs are written there and loaded back as code):
#   --compilation_cache instead, by default jaxgan's own cache;
# - cache_dir (decoded images are written there): --cache_dir instead, by default jaxgan's
#   own cache; the file's "none" is kept, as it only turns writing off.
# A reader prints one line naming what it did not apply and the flags that would.
# Fields such as distributed, num_devices and the training intervals are not used.
_OFF = ("none", "off", "false")


def for_reader(config, cache_dir: str | None = None):
  """A workdir's saved `config` with the settings a reader does not take from the file (see
  above) replaced by its own: the decode cache `cache_dir` (None: jaxgan's own, or none
  where the file turned it off), and no TFDS download into a folder the file names.
  Changed in place, and returned."""
  saved_cache = str(config.get("cache_dir", "") or "").strip().lower()
  with config.unlocked():
    config.cache_dir = cache_dir if cache_dir is not None else (
        "none" if saved_cache in _OFF else "")
    if config.get("tfds_data_dir"):
      config.download = False
  return config


def _kind(value) -> str:
  if value is None:
    return "null"
  if isinstance(value, bool):
    return "a boolean"
  return {int: "a whole number", float: "a number", str: "a string", list: "a list",
          tuple: "a list", dict: "a group of fields"}.get(type(value), type(value).__name__)


def _fits(value, kinds: set) -> bool:
  kind = _kind(value)
  return "null" in kinds or kind in kinds or (kind == "a whole number" and "a number" in kinds)


def _leaves(tree: dict, prefix: str = "") -> dict:
  out = {}
  for key, value in tree.items():
    if isinstance(value, dict) and value:
      out.update(_leaves(value, f"{prefix}{key}."))
    else:
      out[f"{prefix}{key}"] = value
  return out


@functools.lru_cache(maxsize=None)
def _recipe_kinds(task: str) -> dict:
  """{field: {kinds}, field + "[]": {kinds of its items}} over jaxgan's recipes
  (`jaxgan.configs`) of `task`, as train.py writes them to config.json: the schema a saved
  config is checked against."""
  kinds = collections.defaultdict(set)
  for name in configs.names():
    try:
      saved = json.loads(importlib.import_module(f"jaxgan.configs.{name}").get_config()
                         .to_json_best_effort())
    except Exception:  # a recipe that needs an argument
      continue
    if saved.get("task", "classifier") != task:
      continue
    for field, value in _leaves(saved).items():
      kinds[field].add(_kind(value))
      for item in value if isinstance(value, list) else ():
        kinds[field + "[]"].add(_kind(item))
  return dict(kinds)


def _check_saved_types(saved: dict, task: str, path: str) -> None:
  """Every field of a saved config that jaxgan's recipes know holds the type they give it."""
  kinds = _recipe_kinds(task)
  for field, value in _leaves(saved).items():
    groups = [f for f in kinds if f.startswith(field + ".")]
    parent = next((p for p in kinds if field.startswith(p + ".")), None)
    if parent is not None:  # a group of fields where the recipes have one value
      value = functools.reduce(lambda node, key: node[key], parent.split("."), saved)
      field, expected = parent, " or ".join(sorted(kinds[parent]))
    elif groups and not isinstance(value, dict):
      expected = "a group of fields"
    elif field in kinds and not _fits(value, kinds[field]):
      expected = " or ".join(sorted(kinds[field]))
    elif isinstance(value, list) and kinds.get(field + "[]") and not all(
        _fits(item, kinds[field + "[]"]) for item in value):
      expected = "a list of " + " or ".join(sorted(kinds[field + "[]"])).replace("a ", "")
    else:
      continue
    shown = repr(value) if len(repr(value)) <= 60 else repr(value)[:57] + "..."
    raise ConfigError(f"{path}: field {field!r} is {shown} ({_kind(value)}), where jaxgan's "
                      f"{task} recipes have {expected}. The file was changed after training, or "
                      "comes from another run; restore it from a backup, or train again.")


def _note_unapplied(path: str, saved, program: str, given: dict) -> None:
  """One line on stderr naming the settings of the saved config that `program` did not
  apply (see above), and the flags that would apply them."""
  unapplied = {}
  for field, value in given.items():
    kept = str(saved.get(field, "") or "").strip()
    if kept.lower() in ("",) + _OFF or kept == (value or "").strip():
      continue
    if field == "xla_flags" and parallel.xla_flags_in_effect(kept):
      continue
    unapplied[field] = kept
  if unapplied:
    print(f"note: {path} sets "
          + ", ".join(f"{field}={value!r}" for field, value in unapplied.items())
          + f"; {program} does not apply settings from a workdir that would make it write or "
          "load files outside it (a shared workdir could name any folder). To apply them, pass "
          + " ".join(f"--{field}={shlex.quote(value)}" for field, value in unapplied.items()),
          file=sys.stderr, flush=True)


def _read_workdir(workdir: str, program: str, xla_flags: str = "", compilation_cache: str = "",
                  cache_dir: str | None = None):
  """(task, saved config) of a trained workdir, checked as data (see above); XLA's flags and
  the compilation cache come from `program`'s command line, never from the file. Call it
  before JAX starts, as XLA reads its flags once."""
  from jaxgan.workdir import load_config
  saved = load_config(workdir)
  path = os.path.join(workdir, "config.json")
  task = saved.get("task", "classifier")
  if task not in tasks.NAMES:
    raise ConfigError(f"{path}: field 'task' is {task!r}; jaxgan's tasks are "
                      f"{', '.join(tasks.NAMES)}. The file was changed after training, or is not a jaxgan config; "
                      "restore it from a backup, or train again.")
  _check_saved_types(saved.to_dict(), task, path)
  parallel.use_xla_flags(xla_flags, strict=False, flag="--xla_flags")
  parallel.use_compilation_cache(compilation_cache, strict=False, flag="--compilation_cache")
  given = {"xla_flags": xla_flags, "compilation_cache": compilation_cache}
  if program == "evaluate.py":
    given["cache_dir"] = cache_dir
  _note_unapplied(path, saved, program, given)
  return task, saved


@contextlib.contextmanager
def _missing_fields_named(workdir: str, saved, task: str):
  """A field missing from the workdir's config.json (an edited file, or another task's
  config) is a ConfigError naming the file and the field inside, not a traceback."""
  try:
    yield
  except (AttributeError, KeyError) as e:
    # ml_collections' missing field: KeyError("'name'"), or an AttributeError around one
    key = e.args[0] if isinstance(e, AttributeError) and e.args else e
    match = isinstance(key, KeyError) and key.args and re.fullmatch(r"'(.+)'", str(key.args[0]))
    if not match or match.group(1) in _all_keys(saved.to_dict()):
      raise
    raise ConfigError(f"{os.path.join(workdir, 'config.json')} has no field {match.group(1)!r}, "
                      f"which a {task} run needs. The file was changed after training, or "
                      "comes from another kind of run; restore it from a backup, or train "
                      "again.") from e


def _all_keys(tree: dict) -> set:
  return set(tree) | {k for v in tree.values() if isinstance(v, dict) for k in _all_keys(v)}


def _check_can_write_results(workdir: str, names: tuple) -> None:
  """Before any work: evaluate.py's results can be saved in the workdir, and nothing there
  (a planted link, a folder) stands where they go."""
  from jaxgan.images import check_output_paths, check_writable
  check_writable(workdir, f"evaluate.py saves its results there ({', '.join(names)}). Make it "
                 f"writable, or evaluate a copy (cp -r {workdir} <a writable folder>).")
  check_output_paths(workdir, names)


def evaluate(workdir: str, dataset: str | None = None, num_devices: int = -1,
             eval_batch_size: int | None = None, num_samples: int = 1000,
             features: str | None = None, eval_subset: int = -1, xla_flags: str = "",
             compilation_cache: str = "", cache_dir: str | None = None,
             name: str = "") -> dict:
  """Evaluate the latest checkpoint of `workdir`; writes `<workdir>/eval.json`, or with a
  `name`, `eval_<name>.json` and its other files with the same suffix (`output_name`), so
  that several evaluations of one workdir are kept side by side.

  Classifier: test accuracy (plain, flip TTA), loss, per class, on the first
  `eval_subset` test images (-1: all, whatever the training run used);
  `dataset`, `eval_batch_size` override the saved config. WGAN: `num_samples`
  samples (samples.npz, samples.png) and the GAN metrics in the feature space
  `features` against the held-out images of `dataset`. CycleGAN: the test
  domains translated both ways (cycle / identity L1, Frechet distance and KID
  per direction, translations.npz, eval.png). `xla_flags`, `compilation_cache`
  and `cache_dir` are this process's own; the workdir's are not applied (see
  the readers' notes above). A result that cannot be saved at the end is still
  returned, with the names not written under "not_written".
  """
  _check(eval_batch_size is None or eval_batch_size >= 1,
         f"--batch_size must be >= 1, got {eval_batch_size}")
  _check(num_samples >= 2, f"--num_samples must be >= 2 (KID compares pairs), got {num_samples}")
  _check(eval_subset == -1 or eval_subset >= 1,
         f"--eval_subset must be -1 (every test image) or >= 1, got {eval_subset}")
  task, saved = _read_workdir(workdir, "evaluate.py", xla_flags, compilation_cache, cache_dir)
  family = tasks.family(task)
  family.check_evaluation(saved, num_samples=num_samples)
  _check(name == "" or re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}", name) is not None,
         f"--name={name!r}: use letters, digits, '_', '-' and '.' (e.g. inception); it "
         "becomes part of file names in the workdir")
  _check_can_write_results(workdir, tuple(output_name(f, name) for f in
                                          family.EVAL_OUTPUTS + ("eval.json",)))
  devices = parallel.local_devices(num_devices, "--num_devices")
  start = time.perf_counter()
  with _missing_fields_named(workdir, saved, task), parallel.CompileTime() as compiling:
    result, files = family.evaluate_workdir(
        workdir, devices, dataset=dataset, batch_size=eval_batch_size, cache_dir=cache_dir,
        features=features, num_samples=num_samples, eval_subset=eval_subset)
  result["seconds"] = {"total": round(time.perf_counter() - start, 1),
                       "compiling": round(compiling.seconds, 1)}
  return _save_evaluation(workdir, {"task": task, **result}, files, name)


def output_name(file_name: str, name: str) -> str:
  """Where evaluation `name` writes `file_name`: eval.json -> eval_<name>.json,
  samples.npz -> samples_<name>.npz; unchanged without a name."""
  stem, ext = os.path.splitext(file_name)
  return f"{stem}_{name}{ext}" if name else file_name


def _save_evaluation(workdir: str, result: dict, files: dict, name: str = "") -> dict:
  """Process 0 writes a family's files and the result (eval.json) into the workdir; what
  cannot be written is listed in the returned result under "not_written". Paths in the
  result are absolute: the workdir, and each value that names one of `files`."""
  from jaxgan.images import save_outputs
  workdir = os.path.abspath(workdir)
  path = lambda f: os.path.join(workdir, output_name(f, name))
  result = {"workdir": workdir, "eval_json": path("eval.json"),
            **{k: path(v) if isinstance(v, str) and v in files else v for k, v in result.items()}}
  if jax.process_index() == 0:
    text = json.dumps(result, indent=2).encode()
    outputs = {output_name(f, name): write for f, write in files.items()}
    not_written = save_outputs(workdir, {**outputs, output_name("eval.json", name):
                                         lambda f: f.write(text)})
    if not_written:
      result["not_written"] = not_written
  return result


def translate(input_path: str, output_dir: str, workdir: str | None = None,
              weights: str | None = None, direction: str | None = None, resize: int = 0,
              xla_flags: str = "", compilation_cache: str = "") -> dict:
  """Translate an image or a folder of images with a CycleGAN workdir's latest generators
  (`direction` AtoB or BtoA), or with a generator file saved by the reference repository.
  `xla_flags` and `compilation_cache` are this process's own, never the workdir's."""
  from jaxgan.translation import translate_folder
  if weights is not None and direction is not None:
    raise ConfigError("--direction applies to --workdir runs, which hold both generators; a "
                      "--weights file holds one (translate with latest_net_G_B.pth for the "
                      "other direction)")
  if workdir is None or weights is not None:
    # translate_folder refuses both or neither of workdir and weights
    parallel.use_xla_flags(xla_flags, strict=False, flag="--xla_flags")
    if compilation_cache:
      parallel.use_compilation_cache(compilation_cache, strict=False, flag="--compilation_cache")
    return translate_folder(workdir, input_path, output_dir, direction or "AtoB", resize,
                            weights=weights)
  task, saved = _read_workdir(workdir, "translate.py", xla_flags, compilation_cache)
  if task != "cyclegan":
    raise ConfigError(f"workdir {workdir} holds a {task!r} run; translate.py needs a CycleGAN "
                      "one (trained with configs/cyclegan_*.py)")
  with _missing_fields_named(workdir, saved, task):
    return translate_folder(workdir, input_path, output_dir, direction or "AtoB", resize)
