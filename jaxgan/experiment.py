"""Library entry points behind train.py and evaluate.py."""
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


def validate_config(config, num_devices_total: int) -> None:
  """Reject values that cannot work, naming the field and the fix."""
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


def _saved_task(workdir: str) -> str:
  """The task a trained workdir holds; its programs load from the cache its run used."""
  from jaxgan.loop import load_config
  saved = load_config(workdir)
  # The run's XLA flags are part of its programs' cache keys, and may be what this machine
  # needs to compile at all.
  parallel.use_xla_flags(saved.get("xla_flags", ""), strict=False)
  parallel.use_compilation_cache(saved.get("compilation_cache", ""), strict=False)
  return saved.get("task", "classifier")


def evaluate(workdir: str, dataset: str | None = None, num_devices: int = -1,
             eval_batch_size: int | None = None, num_samples: int = 1000,
             features: str | None = None, eval_subset: int = -1) -> dict:
  """Evaluate the latest checkpoint of `workdir`; writes `<workdir>/eval.json`.

  Classifier: test accuracy (plain, flip TTA), loss, per class, on the first
  `eval_subset` test images (-1: all, whatever the training run used);
  `dataset`, `eval_batch_size` override the saved config. WGAN: `num_samples`
  samples (samples.npz, samples.png) and the GAN metrics in the feature space
  `features` against the held-out images of `dataset`. CycleGAN: the test
  domains translated both ways (cycle / identity L1, Frechet distance and KID
  per direction, translations.npz, eval.png).
  """
  _check(eval_batch_size is None or eval_batch_size >= 1,
         f"--batch_size must be >= 1, got {eval_batch_size}")
  _check(num_samples >= 2, f"--num_samples must be >= 2 (KID compares pairs), got {num_samples}")
  _check(eval_subset == -1 or eval_subset >= 1,
         f"--eval_subset must be -1 (every test image) or >= 1, got {eval_subset}")
  task = _saved_task(workdir)
  devices = parallel.local_devices(num_devices, "--num_devices")
  if task == "classifier":
    from jaxgan.classifier import evaluate_workdir
    return evaluate_workdir(workdir, dataset=dataset, devices=devices,
                            eval_batch_size=eval_batch_size, eval_subset=eval_subset)
  if task == "wgan":
    from jaxgan.wgan import evaluate_workdir
    return evaluate_workdir(workdir, num_samples=num_samples, devices=devices, dataset=dataset,
                            features=features, batch_size=eval_batch_size)
  if task == "cyclegan":
    from jaxgan.cyclegan import evaluate_workdir
    return evaluate_workdir(workdir, dataset=dataset, devices=devices, features=features,
                            batch_size=eval_batch_size)
  raise ConfigError(f"workdir {workdir} holds a {task!r} run, which evaluate.py does not know")


def translate(input_path: str, output_dir: str, workdir: str | None = None,
              weights: str | None = None, direction: str | None = None, resize: int = 0) -> dict:
  """Translate an image or a folder of images with a CycleGAN workdir's latest generators
  (`direction` AtoB or BtoA), or with a generator file saved by the reference repository."""
  from jaxgan.cyclegan import translate_folder
  if weights is not None and direction is not None:
    raise ConfigError("--direction applies to --workdir runs, which hold both generators; a "
                      "--weights file holds one (translate with latest_net_G_B.pth for the "
                      "other direction)")
  if workdir is not None and weights is None:
    task = _saved_task(workdir)
    if task != "cyclegan":
      raise ConfigError(f"workdir {workdir} holds a {task!r} run; translate.py needs a CycleGAN "
                        "one (trained with configs/cyclegan_*.py)")
  # translate_folder refuses both or neither of workdir and weights
  return translate_folder(workdir, input_path, output_dir, direction or "AtoB", resize,
                          weights=weights)
