"""Config validation: the checks every recipe's shared fields get, and the helpers each
model family uses for its own fields (`validate(config)` in its module).

Every message names the field, the allowed values and what was given.
"""
from jaxgan.data import LABELS, DataFields
from jaxgan.errors import ConfigError
from jaxgan.loop import skips_nonfinite
from jaxgan.models.layers import COMPUTE_DTYPES

INF = float("inf")
INT32_MAX = 2**31 - 1


def check(ok: bool, message: str) -> None:
  if not ok:
    raise ConfigError(message)


def _lookup(config, dotted: str):
  node = config
  for part in dotted.split("."):
    if not hasattr(node, "keys") or part not in node:
      return None
    node = node[part]
  return node


def check_ranges(config, ranges) -> None:
  """`ranges`: (field, lowest, highest, whether the lowest is allowed); a field the config
  lacks is not checked. Upper bounds are where a value stops making sense or overflows."""
  for field, low, high, low_ok in ranges:
    value = _lookup(config, field)
    if value is None:
      continue
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    inside = number and (value >= low if low_ok else value > low) and value <= high
    if high != INF:
      bound = f"in {'[' if low_ok else '('}{low}, {high:,}]"
    else:
      bound = f">= {low}" if low_ok else "positive" if low == 0 else f"> {low}"
    check(inside and value == value, f"--config.{field} must be {bound}, got {value!r}")


def check_counts(config, minimums: dict) -> None:
  """`config.model` fields that are whole numbers (or tuples of them) of at least a minimum:
  widths >= 1, numbers of blocks or extra layers >= 0."""
  model = config.get("model", {})
  for field, minimum in minimums.items():
    if field not in model:
      continue
    value = model[field]
    values = value if isinstance(value, (tuple, list)) else (value,)
    ok = all(isinstance(v, int) and not isinstance(v, bool) and v >= minimum for v in values)
    kind = "whole numbers" if isinstance(value, (tuple, list)) else "a whole number"
    check(ok and len(values) > 0,
          f"--config.model.{field} must be {kind} >= {minimum}, got {value!r}")


# The fields every recipe shares (configs/common.py and the data fields).
_RUN_RANGES = (
    ("seed", 0, INT32_MAX - 1, True), ("image_size", 1, 8192, True),
    ("num_epochs", 0, INF, False), ("log_every_steps", 1, INF, True),
    ("keep_checkpoints", 1, INF, True), ("held_out", 0, INF, True),
    ("eval_batch_size", 1, INF, True), ("num_grid_samples", 1, 4096, True),
)


def validate_run_fields(config, num_devices_total: int) -> None:
  """Reject shared values that cannot work, naming the field and the fix."""
  check_ranges(config, _RUN_RANGES)
  check(config.batch_size > 0, f"--config.batch_size must be positive, got {config.batch_size}")
  check(config.batch_size % num_devices_total == 0,
        f"--config.batch_size={config.batch_size} does not split evenly over "
        f"{num_devices_total} devices; use a multiple of {num_devices_total} "
        "(or choose devices with --config.num_devices)")
  check(config.num_train_steps == -1 or config.num_train_steps >= 1,
        f"--config.num_train_steps must be -1 (from epochs) or >= 1, got "
        f"{config.num_train_steps}")
  check(config.dtype in COMPUTE_DTYPES,
        f"--config.dtype={config.dtype!r} is not supported; use one of {sorted(COMPUTE_DTYPES)}")
  skips_nonfinite(config)  # a bad on_nonfinite value fails here, before any data is read
  data = DataFields.of(config)
  check(data.bad_images in ("skip", "stop"),
        f"--config.bad_images={data.bad_images!r}: use 'skip' (warn with a count) or "
        "'stop' (refuse a folder with unreadable files)")
  check(data.labels in LABELS, f"--config.labels={data.labels!r}: use one of {LABELS}")
  if data.labels == "domains":
    check(len(config.train_splits) == 2 and len(config.test_splits) == 2,
          "--config.train_splits and --config.test_splits each name the two domains, e.g. "
          "('trainA', 'trainB') and ('testA', 'testB')")
  for field in ("eval_every_epochs", "checkpoint_every_epochs", "sample_every_steps"):
    if field in config:
      check(config[field] >= 0, f"--config.{field} must be >= 0 (0: only at the end of "
            f"training), got {config[field]}")
  for field in ("train_subset", "eval_subset"):
    if field in config:
      check(config[field] == -1 or config[field] >= 1,
            f"--config.{field} must be -1 (all images) or >= 1, got {config[field]}")
