"""Library entry points behind train.py and evaluate.py."""
import collections
import contextlib
import functools
import importlib
import importlib.util
import json
import math
import os
import pkgutil
import re
import shlex
import sys

import jax

from jaxgan import parallel
from jaxgan.data import LABELS
from jaxgan.data.augment import PAD_MODES
from jaxgan.errors import ConfigError
from jaxgan.models.layers import COMPUTE_DTYPES
from jaxgan.loop import (WorkdirLock, check_same_config_on_all_hosts, prepare_workdir, run,
                         skips_nonfinite)


def _check(ok: bool, message: str) -> None:
  if not ok:
    raise ConfigError(message)


# Widths must be >= 1; numbers of blocks or extra layers may be 0.
_MODEL_COUNTS = {"nf": 1, "ngf": 1, "ndf": 1, "nz": 1, "stem": 1, "widths": 1, "n_layers_d": 1,
                 "num_blocks": 0, "n_blocks": 0, "n_extra_layers": 0, "blocks_per_group": 0}


def _check_counts(field: str, value, minimum: int) -> None:
  """An int (or a tuple of ints) that is at least `minimum`."""
  values = value if isinstance(value, (tuple, list)) else (value,)
  ok = all(isinstance(v, int) and not isinstance(v, bool) and v >= minimum for v in values)
  kind = "whole numbers" if isinstance(value, (tuple, list)) else "a whole number"
  _check(ok and len(values) > 0, f"--config.{field} must be {kind} >= {minimum}, got {value!r}")


# (field, lowest, highest, whether the lowest is allowed) for numeric fields any recipe may
# have; a field a recipe lacks is not checked. Upper bounds are where a value stops making
# sense or would overflow (seeds and step counts are 32-bit on the device).
_RANGES = (
    ("seed", 0, 2**31 - 2, True), ("image_size", 1, 8192, True), ("load_size", 1, 8192, True),
    ("num_grid_samples", 1, 4096, True), ("iters_per_epoch", 1, 2**31 - 1, True),
    ("learning_rate", 0, float("inf"), False), ("lr", 0, float("inf"), False),
    ("lr_g", 0, float("inf"), False), ("lr_d", 0, float("inf"), False),
    ("weight_decay", 0, float("inf"), True), ("momentum", 0, 1, True),
    ("beta1", 0, 1, True), ("beta2", 0, 1, True), ("clip", 0, float("inf"), False),
    ("gp_weight", 0, float("inf"), True), ("critic_warmup_iters", 0, 2**31 - 1, True),
    ("label_smoothing", 0, 1, True), ("bias_lr_scale", 0, float("inf"), False),
    ("whiten_images", 1, 2**31 - 1, True), ("whiten_bias_epochs", 0, 2**31 - 1, True),
    ("model.bn_momentum", 0, 1, True), ("model.bn_eps", 0, float("inf"), False),
    ("model.bottleneck", 0, float("inf"), False), ("model.logit_scale", 0, float("inf"), False),
)


def _lookup(config, dotted: str):
  node = config
  for part in dotted.split("."):
    if not hasattr(node, "keys") or part not in node:
      return None
    node = node[part]
  return node


def _check_ranges(config) -> None:
  for field, low, high, low_ok in _RANGES:
    value = _lookup(config, field)
    if value is None:
      continue
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    inside = number and (value >= low if low_ok else value > low) and value <= high
    if high != float("inf"):
      bound = f"in {'[' if low_ok else '('}{low}, {high:,}]"
    else:
      bound = f">= {low}" if low_ok else "positive" if low == 0 else f"> {low}"
    _check(inside and value == value, f"--config.{field} must be {bound}, got {value!r}")


def validate_config(config, num_devices_total: int) -> None:
  """Reject values that cannot work, naming the field and the fix."""
  _check_ranges(config)
  _check(config.batch_size > 0, f"--config.batch_size must be positive, got {config.batch_size}")
  _check(config.batch_size % num_devices_total == 0,
         f"--config.batch_size={config.batch_size} does not split evenly over "
         f"{num_devices_total} devices; use a multiple of {num_devices_total} "
         "(or choose devices with --config.num_devices)")
  _check(config.num_epochs > 0, f"--config.num_epochs must be positive, got {config.num_epochs}")
  _check(config.num_train_steps == -1 or config.num_train_steps >= 1,
         f"--config.num_train_steps must be -1 (from epochs) or >= 1, got "
         f"{config.num_train_steps}")
  _check(config.dtype in COMPUTE_DTYPES,
         f"--config.dtype={config.dtype!r} is not supported; use one of {sorted(COMPUTE_DTYPES)}")
  _check(config.image_size >= 1, f"--config.image_size must be >= 1, got {config.image_size}")
  _check(config.log_every_steps >= 1,
         f"--config.log_every_steps must be >= 1, got {config.log_every_steps}")
  skips_nonfinite(config)  # a bad on_nonfinite value fails here, before any data is read
  _check(config.get("bad_images", "skip") in ("skip", "stop"),
         f"--config.bad_images={config.get('bad_images')!r}: use 'skip' (warn with a count) or "
         "'stop' (refuse a folder with unreadable files)")
  _check(config.get("labels", "folders") in LABELS,
         f"--config.labels={config.get('labels')!r}: use one of {LABELS}")
  if config.get("labels") == "domains":
    _check(len(config.train_splits) == 2 and len(config.test_splits) == 2,
           "--config.train_splits and --config.test_splits each name the two domains, e.g. "
           "('trainA', 'trainB') and ('testA', 'testB')")
  if "held_out" in config:
    _check(config.held_out >= 0, f"--config.held_out must be >= 0, got {config.held_out}")
  for field in ("train_subset", "eval_subset"):
    if field in config:
      _check(config[field] == -1 or config[field] >= 1,
             f"--config.{field} must be -1 (all images) or >= 1, got {config[field]}")
  if "eval_batch_size" in config:
    _check(config.eval_batch_size >= 1,
           f"--config.eval_batch_size must be >= 1, got {config.eval_batch_size}")
  for field in ("eval_every_epochs", "checkpoint_every_epochs", "sample_every_steps"):
    if field in config:
      _check(config[field] >= 0, f"--config.{field} must be >= 0 (0: only at the end of "
             f"training), got {config[field]}")
  _check(config.keep_checkpoints >= 1,
         f"--config.keep_checkpoints must be >= 1, got {config.keep_checkpoints}")
  if "augment" in config:
    _check(0 <= config.augment.pad < config.image_size,
           f"--config.augment.pad must be in [0, image_size), got {config.augment.pad}")
    _check(config.augment.pad_mode in PAD_MODES,
           f"--config.augment.pad_mode must be one of {PAD_MODES}, got {config.augment.pad_mode!r}")
  if config.get("schedule") == "clr_beta":
    _check(len(config.clr_beta) == 4, "--config.clr_beta is (div, pct, mom_max, mom_min)")
  if config.get("schedule") == "clr":
    _check(len(config.clr) == 4, "--config.clr is (div, cut_div, mom_max, mom_min)")
  if config.get("schedule") == "triangle":
    _check(len(config.triangle) == 3, "--config.triangle is (start, peak %, end)")
  if config.get("task", "classifier") == "classifier":
    _check(config.learning_rate > 0,
           f"--config.learning_rate must be positive, got {config.learning_rate}")
    _check(config.weight_decay >= 0,
           f"--config.weight_decay must be >= 0, got {config.weight_decay}")
  for field in ("lr_g", "lr_d", "clip", "gp_weight"):
    if field in config:
      _check(config[field] > 0, f"--config.{field} must be positive, got {config[field]}")
  if "whiten_images" in config:
    _check(config.whiten_images >= 0,
           f"--config.whiten_images must be >= 0 (0: no whitening), got {config.whiten_images}")
  for field, minimum in _MODEL_COUNTS.items():
    if field in config.get("model", {}):
      _check_counts(f"model.{field}", config.model[field], minimum)


def build_task(config, devices, **kwargs):
  task = config.get("task", "classifier")
  if task == "classifier":
    from jaxgan.classifier import ClassifierTask
    return ClassifierTask(config, devices, **kwargs)
  if task == "wgan":
    from jaxgan.wgan import WGANTask
    return WGANTask(config, devices, **kwargs)
  if task == "cyclegan":
    from jaxgan.cyclegan import CycleGANTask
    return CycleGANTask(config, devices, **kwargs)
  raise ConfigError(f"--config.task={task!r} is unknown; use 'classifier', 'wgan' or 'cyclegan'")


def train_and_evaluate(config, workdir: str) -> dict:
  """Train the recipe `config` in `workdir`, resuming from its latest checkpoint.

  Returns {"step": int, "train": {...}, "eval": {...}} (last logged metrics).
  """
  parallel.use_xla_flags(config.get("xla_flags", ""))  # before JAX starts: XLA reads them once
  parallel.maybe_initialize_distributed(config.get("distributed", False))
  workdir = prepare_workdir(workdir)
  devices = parallel.local_devices(config.get("num_devices", -1))
  validate_config(config, len(devices) * jax.process_count())
  check_same_config_on_all_hosts(config)  # before the hosts' first collective can diverge
  parallel.use_compilation_cache(config.get("compilation_cache", ""))
  with WorkdirLock(workdir):
    task = build_task(config, devices)
    return run(task, config, workdir, devices)


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
TASKS = ("classifier", "wgan", "cyclegan")
# What evaluate.py writes into a workdir (the evaluate_workdir functions), by task.
_EVAL_OUTPUTS = {"classifier": ("eval.json",),
                 "wgan": ("samples.npz", "samples.png", "memorisation.png", "eval.json"),
                 "cyclegan": ("translations.npz", "eval.png", "eval.json")}
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
  """{field: {kinds}, field + "[]": {kinds of its items}} over jaxgan's recipes (configs/)
  of `task`, as train.py writes them to config.json: the schema a saved config is checked
  against. {} where the recipes cannot be imported (jaxgan used outside its repository)."""
  ours = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs")
  spec = importlib.util.find_spec("configs")  # not imported yet: it may be someone else's
  if spec is None or [os.path.abspath(p) for p in spec.submodule_search_locations or ()] != [
      ours]:
    return {}
  import configs
  kinds = collections.defaultdict(set)
  for module in pkgutil.iter_modules(configs.__path__):
    try:
      saved = json.loads(importlib.import_module(f"configs.{module.name}").get_config()
                         .to_json_best_effort())
    except Exception:  # not a recipe (configs/common.py), or one that needs an argument
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
  from jaxgan.loop import load_config
  saved = load_config(workdir)
  path = os.path.join(workdir, "config.json")
  task = saved.get("task", "classifier")
  if task not in TASKS:
    raise ConfigError(f"{path}: field 'task' is {task!r}; jaxgan's tasks are {', '.join(TASKS)}."
                      " The file was changed after training, or is not a jaxgan config; "
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


def _sample_bytes(num_samples: int, image_size: int) -> int:
  """Memory the WGAN evaluation of `num_samples` samples needs, roughly: their pairwise
  feature distances (n x n float64, and masks of them), and per sample its pixels as
  generated (float32, a few copies) and kept (uint8) and its features (up to 32x32x3
  float64, with their distance rows)."""
  return 10 * num_samples ** 2 + num_samples * (20 * image_size ** 2 * 3 + 100_000)


def _check_num_samples(num_samples: int, image_size: int) -> None:
  try:
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
  except (ValueError, OSError, AttributeError):  # not a POSIX system: assume 16 GiB
    memory = 16 * 2 ** 30
  need = _sample_bytes(num_samples, image_size)
  if need <= memory:
    return
  b = _sample_bytes(1, image_size) - 10  # the linear term's factor
  most = int((-b + math.sqrt(b * b + 40 * memory)) / 20)
  raise ConfigError(f"--num_samples={num_samples:,} needs about {need / 2 ** 30:,.0f} GiB of "
                    f"memory (the diversity metric compares every pair of samples, and each "
                    f"{image_size}x{image_size} sample is kept), more than this machine's "
                    f"{memory / 2 ** 30:.0f} GiB; use at most {most:,} here (the default is "
                    "1,000).")


def _check_can_write_results(workdir: str, task: str) -> None:
  """Before any work: evaluate.py's results can be saved in the workdir, and nothing there
  (a planted link, a folder) stands where they go."""
  from jaxgan.images import check_output_paths, check_writable
  names = _EVAL_OUTPUTS[task]
  check_writable(workdir, f"evaluate.py saves its results there ({', '.join(names)}). Make it "
                 f"writable, or evaluate a copy (cp -r {workdir} <a writable folder>).")
  check_output_paths(workdir, names)


def evaluate(workdir: str, dataset: str | None = None, num_devices: int = -1,
             eval_batch_size: int | None = None, num_samples: int = 1000,
             features: str | None = None, eval_subset: int = -1, xla_flags: str = "",
             compilation_cache: str = "", cache_dir: str | None = None) -> dict:
  """Evaluate the latest checkpoint of `workdir`; writes `<workdir>/eval.json`.

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
  if task == "wgan":
    _check_num_samples(num_samples, saved.image_size)
  _check_can_write_results(workdir, task)
  devices = parallel.local_devices(num_devices, "--num_devices")
  with _missing_fields_named(workdir, saved, task):
    if task == "classifier":
      from jaxgan.classifier import evaluate_workdir
      return evaluate_workdir(workdir, dataset=dataset, devices=devices,
                              eval_batch_size=eval_batch_size, eval_subset=eval_subset,
                              cache_dir=cache_dir)
    if task == "wgan":
      from jaxgan.wgan import evaluate_workdir
      return evaluate_workdir(workdir, num_samples=num_samples, devices=devices, dataset=dataset,
                              features=features, batch_size=eval_batch_size, cache_dir=cache_dir)
    from jaxgan.cyclegan import evaluate_workdir
    return evaluate_workdir(workdir, dataset=dataset, devices=devices, features=features,
                            batch_size=eval_batch_size, cache_dir=cache_dir)


def translate(input_path: str, output_dir: str, workdir: str | None = None,
              weights: str | None = None, direction: str | None = None, resize: int = 0,
              xla_flags: str = "", compilation_cache: str = "") -> dict:
  """Translate an image or a folder of images with a CycleGAN workdir's latest generators
  (`direction` AtoB or BtoA), or with a generator file saved by the reference repository.
  `xla_flags` and `compilation_cache` are this process's own, never the workdir's."""
  from jaxgan.cyclegan import translate_folder
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
