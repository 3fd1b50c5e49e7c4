"""Data parallelism: the one place that knows about devices and collectives.

Steps are written per device and run under `jax.pmap` over the named axis
`AXIS`. Every cross-device reduction goes through `mean`/`sum` here, so a
`shard_map` wrapper would be a change to `pmap_step` alone (pmap is in
maintenance mode in current JAX).
"""
import contextlib
import hashlib
import logging
import os
import re
import sys
from typing import Any, Callable, Sequence

import jax
import numpy as np

from jaxgan.errors import ConfigError

AXIS = "batch"
PyTree = Any


def maybe_initialize_distributed(enabled: bool) -> None:
  """Start `jax.distributed` for a multi-host run.

  On TPU pods and SLURM/Open MPI clusters the coordinator is found from the
  environment; elsewhere set JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES and
  JAX_PROCESS_ID (see docs/multihost.md). JAX itself reads only
  the first of those three, so the other two are passed on here.
  """
  if not enabled or jax.distributed.is_initialized():
    return
  kwargs = {}
  for name, var in (("num_processes", "JAX_NUM_PROCESSES"), ("process_id", "JAX_PROCESS_ID")):
    value = os.environ.get(var, "").strip()
    if value:
      if not value.isdigit():
        raise ConfigError(f"{var}={value!r} is not a non-negative integer")
      kwargs[name] = int(value)
  try:
    jax.distributed.initialize(**kwargs)
  except (ValueError, TypeError, RuntimeError) as e:
    reason = str(e).rstrip(".")
    raise ConfigError(
        f"--config.distributed=True but JAX could not start a multi-host run: {reason}. Outside a "
        "TPU pod or a SLURM/Open MPI job, set JAX_COORDINATOR_ADDRESS=<host0>:<port>, "
        "JAX_NUM_PROCESSES and JAX_PROCESS_ID on every host; for one host, leave "
        "--config.distributed False.") from e


def use_xla_flags(flags: str, strict: bool = True, flag: str = "--config.xla_flags"
                  ) -> str | None:
  """Hand extra XLA flags (`flag`: where they came from, `--config.xla_flags` of train.py or
  `--xla_flags` of evaluate.py and translate.py) to XLA, after those in $XLA_FLAGS (a flag
  given twice: the later wins). Returns the XLA_FLAGS XLA will start with, or None when
  nothing changed.

  XLA reads its flags once, when JAX starts its first backend, so train_and_evaluate calls
  this before anything touches a device. Where JAX has already started in this process
  (a second run from Python) with other values, the flags cannot apply: an error when
  `strict` (training, whose saved config would claim them), else a warning.
  """
  tokens = flags.split()
  for token in tokens:
    if not re.fullmatch(r"--xla_\w+(=\S*)?", token):
      raise ConfigError(f"{flag}: {token!r} is not an XLA flag; give them as "
                        "'--xla_name=value', separated by spaces (e.g. "
                        "'--xla_gpu_graph_min_graph_size=1')")
  if xla_flags_in_effect(flags):
    return None
  current = os.environ.get("XLA_FLAGS", "")
  if _jax_started():
    program = "train.py" if flag.startswith("--config.") else "the command"
    message = (f"{flag}={flags!r}: JAX has already started in this process with "
               f"XLA_FLAGS={current!r}, and XLA reads its flags once; run {program} in a new "
               "process, or set XLA_FLAGS before JAX starts")
    if strict:
      raise ConfigError(message)
    logging.warning("%s. Going on with the flags XLA started with.", message)
    return None
  os.environ["XLA_FLAGS"] = " ".join([current, *tokens]).strip()
  return os.environ["XLA_FLAGS"]


def xla_flags_in_effect(flags: str) -> bool:
  """Whether $XLA_FLAGS already gives every flag of `flags` its value there."""
  in_effect = _flag_values(os.environ.get("XLA_FLAGS", ""))
  return all(in_effect.get(name) == value for name, value in _flag_values(flags).items())


def _flag_values(flags: str) -> dict:
  """{name: value} of a flags string, the later of a flag given twice winning, as in XLA."""
  return dict((t.split("=", 1) + [""])[:2] for t in flags.split())


def _jax_started() -> bool:
  try:
    from jax._src import xla_bridge
    return xla_bridge.backends_are_initialized()
  except (ImportError, AttributeError):  # a private API: without it, assume JAX has not started
    return False


# Room for a hundred or more train and eval programs (a GPU step's executable is some MB);
# JAX deletes the least recently used beyond it.
COMPILATION_CACHE_MAX_BYTES = 2 * 2 ** 30
_OFF = ("none", "off", "false")


# JAX's monitoring events for the stages of compiling a program (jax._src.dispatch).
COMPILE_EVENTS = ("/jax/core/compile/jaxpr_trace_duration",
                  "/jax/core/compile/jaxpr_to_mlir_module_duration",
                  "/jax/core/compile/backend_compile_duration")


class CompileTime:
  """Seconds spent compiling (tracing, lowering, XLA) inside the `with` block: on a CPU it is
  most of a short job's time, so a command can say where its time went."""

  def __enter__(self):
    self.seconds = 0.0
    jax.monitoring.register_event_duration_secs_listener(self._record)
    return self

  def _record(self, event: str, duration: float, **unused) -> None:
    if event in COMPILE_EVENTS:
      self.seconds += duration

  def __exit__(self, *exc):
    jax.monitoring.unregister_event_duration_listener(self._record)


def use_compilation_cache(setting: str = "", strict: bool = True,
                          flag: str = "--config.compilation_cache") -> str | None:
  """Keep compiled programs on disk, so that a rerun or resume skips compilation.

  `setting` is `--config.compilation_cache`: "" for `<jaxgan cache>/xla`
  ($JAXGAN_CACHE_DIR/xla, else ~/.cache/jaxgan/xla under $XDG_CACHE_HOME's
  rules), "none" to compile afresh each run, or a folder. A cache JAX was
  already given (JAX_COMPILATION_CACHE_DIR, jax.config) is left as it is.
  Returns the folder in use, or None.

  A folder that cannot be written is an error when the user named it, `strict`
  (training) and the run has one host (a multi-host error on one host alone
  would leave the others waiting); otherwise a warning, and no cache. `flag` names the
  setting in messages (`--compilation_cache` for evaluate.py and translate.py).
  """
  current = jax.config.jax_compilation_cache_dir
  if current or setting.strip().lower() in _OFF:
    return current or None
  from jaxgan.data.folder import default_cache_dir
  path = os.path.abspath(os.path.expanduser(setting or os.path.join(default_cache_dir(), "xla")))
  try:
    os.makedirs(path, exist_ok=True)
    writable = os.access(path, os.W_OK | os.X_OK)
  except OSError as e:
    writable, reason = False, str(e)
  else:
    reason = "not writable"
  if not writable:
    message = (f"{flag}: cannot keep compiled programs in {path} ({reason}); "
               "give a writable folder, or 'none' to compile afresh each run")
    if setting and strict and jax.process_count() == 1:
      raise ConfigError(message)
    logging.warning("%s. Compiling without the cache.", message)
    return None
  try:
    import filelock
  except ImportError:  # no size cap then: JAX needs filelock to delete entries
    filelock = None
  if filelock is not None:
    _drop_partial_entries(path, filelock)
    jax.config.update("jax_compilation_cache_max_size", COMPILATION_CACHE_MAX_BYTES)
  jax.config.update("jax_compilation_cache_dir", path)
  return path


def _drop_partial_entries(path: str, filelock) -> None:
  """Delete the entries an interrupted write left (killed, disk full).

  JAX writes an entry's `<key>-cache` file, then its `<key>-atime`. Under a
  size cap every later write lists the folder and fails on a `-cache` file
  without its `-atime`, so one interrupted write would stop all caching.
  """
  try:
    with filelock.FileLock(os.path.join(path, ".lockfile"), timeout=10):  # JAX's own lock
      names = set(os.listdir(path))
      for name in names:
        key, _, suffix = name.rpartition("-")
        atime = f"{key}-atime"
        partial = (suffix == "cache" and (atime not in names
                                          or os.path.getsize(os.path.join(path, atime)) != 8))
        orphan = suffix == "atime" and f"{key}-cache" not in names
        if partial or orphan:
          for leftover in (name, atime) if partial else (name,):
            with contextlib.suppress(FileNotFoundError):
              os.remove(os.path.join(path, leftover))
  except (OSError, filelock.Timeout) as e:
    logging.warning("could not tidy the compilation cache %s (%s); JAX may warn about it", path, e)


# Device files that mean this machine has an accelerator JAX could use: NVIDIA's driver makes
# /dev/nvidiactl and /dev/nvidia<N>; a Cloud TPU VM has /dev/accel<N> (TPU v2-v4) or /dev/vfio/<N>
# (v5e and later; a device passed through with VFIO would show there too, hence only a warning).
ACCELERATOR_PROBES = (
    ("/dev/nvidiactl", "an NVIDIA GPU"),
    ("/dev/nvidia0", "an NVIDIA GPU"),
    ("/dev/accel0", "a TPU"),
    ("/dev/vfio/0", "a TPU"),
)
# What installs JAX's build for each (pyproject.toml's extras).
_ACCELERATOR_FIXES = {
    "an NVIDIA GPU": ('JAX\'s CUDA build: pip install -e ".[cuda12]", or ".[cuda13]" for CUDA 13 '
                      'drivers'),
    "a TPU": 'JAX\'s TPU build: pip install -e ".[tpu]"',
}
_accelerator_checked = False


def warn_if_accelerator_unused() -> str | None:
  """Print one line to stderr, once per process, when this machine has an accelerator (a file
  of ACCELERATOR_PROBES exists) but JAX runs on the CPU: JAX's CPU-only build, the default of
  `pip install -e .`. Returns the line, or None. Silent where JAX_PLATFORMS (jax_platforms)
  chooses the platforms: the CPU was asked for.
  """
  global _accelerator_checked
  if _accelerator_checked:
    return None
  _accelerator_checked = True
  if jax.config.jax_platforms or jax.default_backend() != "cpu":
    return None
  for path, what in ACCELERATOR_PROBES:
    if os.path.exists(path):
      line = (f"warning: this machine has {what} ({path}) but JAX sees only the CPU, so it runs "
              f"on the CPU. Install {_ACCELERATOR_FIXES[what]} (see README, Install).")
      print(line, file=sys.stderr, flush=True)
      return line
  return None


def local_devices(num_devices: int = -1, flag: str = "--config.num_devices") -> list:
  """The first `num_devices` local devices (-1: all of them); a ConfigError naming `flag`,
  where the count came from, if there are not that many. The first call warns when an
  accelerator goes unused (warn_if_accelerator_unused)."""
  warn_if_accelerator_unused()
  devices = jax.local_devices()
  if num_devices == -1:
    return devices
  if not 1 <= num_devices <= len(devices):
    raise ConfigError(f"{flag}: num_devices={num_devices} but this process has {len(devices)} "
                      f"local device(s) ({devices[0].platform}); use -1 for all of them")
  if num_devices != len(devices) and jax.process_count() > 1:
    raise ConfigError(f"{flag}: num_devices must be -1 (all local devices) in a multi-host run")
  return devices[:num_devices]


def pmap_step(fn: Callable, devices: Sequence, donate_state: bool = True, **kwargs) -> Callable:
  """Compile a per-device function `fn(state, ...)` data-parallel over `devices`.

  In a multi-host run the step spans every process's devices (pmap's default);
  `pmap(devices=<this host's devices>)` would silently make each collective
  host-local, and the hosts would train apart.
  """
  if jax.process_count() > 1:
    if len(devices) != jax.local_device_count():
      raise ValueError("a multi-host step must use all local devices")
    devices = None
  return jax.pmap(fn, axis_name=AXIS, devices=devices,
                  donate_argnums=(0,) if donate_state else (), **kwargs)


def mean(tree: PyTree) -> PyTree:
  """Average over all devices (inside a pmapped step)."""
  return jax.lax.pmean(tree, AXIS)


def sum(tree: PyTree) -> PyTree:  # noqa: A001 - mirrors lax.psum
  return jax.lax.psum(tree, AXIS)


def gather(tree: PyTree) -> PyTree:
  """Every device's rows, concatenated in device order (inside a pmapped step)."""
  return jax.lax.all_gather(tree, AXIS, tiled=True)


def index() -> jax.Array:
  """This device's position on the data-parallel axis (inside a pmapped step)."""
  return jax.lax.axis_index(AXIS)


def device_rng(rng: jax.Array) -> jax.Array:
  """A key of this device's own: no two devices draw the same noise."""
  return jax.random.fold_in(rng, index())


@contextlib.contextmanager
def on_host():
  """Run the JAX computations inside on the host CPU: where a fresh state is built.

  Drawing a model's initial parameters is one program of hundreds of small random-number
  ops, slow to compile for a GPU (CycleGAN's initialisation took 90 s on an H100, against
  5 s on a 2-core CPU), and `replicate` copies the state through the host anyway.
  It sets the default device, so inputs already committed to another device keep their
  computations there. Where JAX runs without its CPU backend (JAX_PLATFORMS without cpu)
  nothing changes.
  """
  try:
    cpu = jax.local_devices(backend="cpu")[0]  # this process's own: jax.devices() spans hosts
  except RuntimeError:
    cpu = None  # jax.default_device(None): the platform's own default
  with jax.default_device(cpu):
    yield


def _leading_axis_sharding(devices: Sequence) -> jax.sharding.NamedSharding:
  mesh = jax.sharding.Mesh(np.asarray(list(devices)), (AXIS,))
  return jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(AXIS))


def replicate(tree: PyTree, devices: Sequence) -> PyTree:
  """Copy host values onto every device (leading axis = device), as pmap expects."""
  sharding = _leading_axis_sharding(devices)
  n = len(devices)

  def put(x):
    x = np.asarray(x)
    return jax.device_put(np.broadcast_to(x, (n,) + x.shape), sharding)

  return jax.tree_util.tree_map(put, jax.device_get(tree))


def unreplicate(tree: PyTree) -> PyTree:
  """The first device's copy, fetched to the host as numpy.

  Reads the first shard's buffer rather than indexing `x[0]`: indexing is a
  compiled program per leaf shape, and in a multi-host run an extra program
  between collectives can stall the hosts.
  """
  def first(x):
    if isinstance(x, jax.Array):
      shard = min(x.addressable_shards, key=lambda s: s.index[0].start or 0)
      return np.asarray(shard.data)[0]
    return np.asarray(x)[0]

  return jax.tree_util.tree_map(first, tree)


def shard(tree: PyTree, devices: Sequence) -> PyTree:
  """Split host arrays' leading axis over devices: (n*k, ...) -> (n, k, ...) on device."""
  n = len(devices)

  def split(x):
    x = np.asarray(x)
    if x.shape[0] % n:
      raise ValueError(f"leading dimension {x.shape[0]} does not split over {n} devices")
    return x.reshape((n, x.shape[0] // n) + x.shape[1:])

  return put_per_device(jax.tree_util.tree_map(split, tree), devices)


def put_per_device(tree: PyTree, devices: Sequence) -> PyTree:
  """Host arrays whose leading axis is already the device axis, (n, ...), onto the devices."""
  sharding = _leading_axis_sharding(devices)
  return jax.tree_util.tree_map(lambda x: jax.device_put(np.asarray(x), sharding), tree)


def process_allgather_sum(x: np.ndarray) -> np.ndarray:
  """Sum a host array over all processes (identity on one host)."""
  if jax.process_count() == 1:
    return np.asarray(x)
  from jax.experimental import multihost_utils
  return np.asarray(multihost_utils.process_allgather(np.asarray(x))).sum(axis=0)


def process_max(x: int) -> int:
  """The largest of an integer over all processes (identity on one host)."""
  if jax.process_count() == 1:
    return int(x)
  from jax.experimental import multihost_utils
  return int(np.max(multihost_utils.process_allgather(np.asarray(x))))


def process_min(x: int) -> int:
  """The smallest of an integer over all processes (identity on one host)."""
  return -process_max(-x)


def differing_processes(value: str) -> list[int]:
  """The processes whose `value` differs from process 0's ([] on one host)."""
  if jax.process_count() == 1:
    return []
  from jax.experimental import multihost_utils
  digest = np.frombuffer(hashlib.sha256(value.encode()).digest()[:8], np.uint32)
  digests = np.asarray(multihost_utils.process_allgather(digest))
  return [i for i in range(len(digests)) if not np.array_equal(digests[i], digests[0])]


class BatchLayout:
  """Who holds which examples of a step: this process's devices, the global, per-process
  and per-device batch sizes, and the device-major layout of an index array."""

  def __init__(self, devices: Sequence, global_batch: int):
    self.devices = list(devices)
    self.num_local = len(self.devices)
    self.num_global = self.num_local * jax.process_count()
    self.global_batch = global_batch
    self.local_batch = global_batch // jax.process_count()
    self.device_batch = self.local_batch // self.num_local

  def steps_per_epoch(self, count: int, what: str, agree: bool = True) -> int:
    """Full local batches in `count` examples of this process. With `agree`, every process
    gets the same number (each step is a collective, and shares can differ by an image):
    the smallest share decides."""
    fewest = process_min(count) if agree else count
    steps = fewest // self.local_batch
    if steps == 0:
      if jax.process_count() == 1:
        where = f"is larger than the {fewest} {what} this process has"
      else:
        where = (f"({self.local_batch} per host) is larger than the {fewest} {what} of the "
                 "smallest host's share")
      raise ConfigError(f"--config.batch_size={self.global_batch} {where}; lower it.")
    return steps

  def per_device(self, index: np.ndarray) -> jax.Array:
    """Host indices whose last axis is the local batch, (..., local), split over the local
    devices as (devices, ..., per-device batch) and placed on them."""
    split = index.reshape(*index.shape[:-1], self.num_local, self.device_batch)
    return put_per_device(np.moveaxis(split, -2, 0), self.devices)
