"""Test set-up: 4 fake CPU devices, tiny configs, generated and shared data."""
import os

# Must precede the first jax import: multi-device tests need several CPU devices. Test
# programs are tiny, so compiling them dominates most tests: LLVM optimisation level 1
# compiles a third faster than the default and (unlike level 0) still runs the few
# long-training tests as fast. train.py processes started by tests inherit it.
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=4 "
                      "--xla_backend_optimization_level=1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
# Tests run on the CPU even where JAX's CUDA plugin is installed (benchmarks/gpu_kernels.py
# uses it to compile for a GPU without one).
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import numpy as np
import pytest


def pytest_configure(config):
  """Tests build the same small programs many times (each run, resume and device count
  compiles afresh, in this process and in the train.py processes tests start): a
  compilation cache for the whole test run keeps the suite fast."""
  import tempfile
  import jax
  cache = os.environ.get("JAXGAN_TEST_COMPILE_CACHE") or tempfile.mkdtemp(prefix="jaxgan-xla-")
  os.environ["JAXGAN_TEST_COMPILE_CACHE"] = cache  # pytest-xdist's workers inherit it
  settings = {"jax_compilation_cache_dir": cache, "jax_persistent_cache_min_compile_time_secs": 0.5,
              "jax_persistent_cache_min_entry_size_bytes": 0}
  for name, value in settings.items():
    jax.config.update(name, value)
    os.environ[name.upper()] = str(value)  # the CLIs the tests start share the cache


@pytest.fixture(autouse=True, scope="module")
def _free_compiled_programs():
  """Drop each test module's compiled programs when it ends. XLA's CPU JIT maps every
  executable's code into memory and keeps it while JAX caches the executable: the whole
  suite in one process reached Linux's default 65,530 mappings per process
  (vm.max_map_count), and the next compile crashed (LLVM could not map a section)."""
  yield
  import gc
  import jax
  jax.clear_caches()
  gc.collect()


SHARED_CIFAR = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data",
                            "cifar10-jpeg75.tar.xz")


def write_image_folder(root, classes=("a", "b", "c"), per_class=(12, 4), size=8, seed=0,
                       ext="png"):
  """train/<class>/*.png and test/<class>/*.png; class c's images are brighter by c."""
  from PIL import Image
  rng = np.random.default_rng(seed)
  for split, n in zip(("train", "test"), per_class):
    for ci, cls in enumerate(classes):
      d = os.path.join(root, split, cls)
      os.makedirs(d, exist_ok=True)
      for i in range(n):
        base = rng.integers(0, 120, (size, size, 3)) + 60 * ci
        Image.fromarray(base.clip(0, 255).astype(np.uint8)).save(os.path.join(d, f"{i:04d}.{ext}"))
  return str(root)


@pytest.fixture
def image_folder(tmp_path):
  return write_image_folder(tmp_path / "data")


@pytest.fixture
def image_folder16(tmp_path):
  return write_image_folder(tmp_path / "data16", size=16)


@pytest.fixture(scope="session")
def shared_cifar():
  path = os.path.abspath(SHARED_CIFAR)
  if not os.path.exists(path):
    pytest.skip(f"shared CIFAR-10 copy not found at {path} (only on project machines)")
  return path


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory):
  """One decoded-image cache for the whole test run, never the user's."""
  return str(tmp_path_factory.mktemp("jaxgan-cache"))


# tiny_config's recipe as train.py flags (add --config.dataset, --workdir and the rest).
TINY_CLI = ["--config", "configs/tiny_darknet.py", "--config.num_devices=1",
            "--config.image_size=8", "--config.augment.pad=2", "--config.model.num_blocks=(1,)",
            "--config.model.nf=4", "--config.eval_batch_size=8", "--config.train_subset=-1",
            "--config.eval_subset=-1", "--config.cache_dir=none", "--config.progress_bar=False"]


def tiny_config(dataset, cache_dir="none", **overrides):
  """The tiny Darknet recipe on `dataset`, 1 device, quiet; `a__b=v` sets config.a.b."""
  from jaxgan.configs import tiny_darknet
  config = tiny_darknet.get_config()
  config.dataset = dataset
  config.cache_dir = cache_dir
  config.num_devices = 1
  config.progress_bar = False
  config.train_subset = -1
  config.eval_subset = -1
  config.image_size = 8
  config.augment.pad = 2
  config.model.num_blocks = (1,)
  config.model.nf = 4
  config.batch_size = 8
  config.eval_batch_size = 8
  config.num_epochs = 2
  config.log_every_steps = 2
  return set_fields(config, overrides)


def tiny_fast_config(dataset, cache_dir="none", **overrides):
  """configs/cifar10_fast.py at toy size on `dataset`: 1 device, float32, quiet."""
  from jaxgan.configs import cifar10_fast
  config = cifar10_fast.get_config()
  config.dataset = dataset
  config.cache_dir = cache_dir
  config.num_devices = 1
  config.progress_bar = False
  config.image_size = 16  # FastNet pools three times after a 2x2 valid conv
  config.model.widths = (4, 8, 8)
  config.dtype = "float32"
  config.batch_size = 8
  config.eval_batch_size = 8
  config.num_epochs = 2.5
  config.log_every_steps = 2
  config.whiten_bias_epochs = 1
  config.ema.start_epochs = 1
  config.ema.every_n_steps = 2
  return set_fields(config, overrides)


def set_fields(config, overrides):
  """Set config fields from keyword overrides; `a__b=v` sets config.a.b."""
  for key, value in overrides.items():
    node = config
    *parents, leaf = key.replace("__", ".").split(".")
    for p in parents:
      node = node[p]
    node[leaf] = value
  return config


def tiny_wgan_config(dataset, **overrides):
  """A 16x16 WGAN with 8-channel nets, short critic schedule, 1 device, quiet."""
  from jaxgan.configs import wgan_cifar10
  config = wgan_cifar10.get_config()
  config.dataset = dataset
  config.cache_dir = "none"
  config.image_size = 16
  config.model.ngf = 8
  config.model.ndf = 8
  config.model.nz = 8
  config.batch_size = 8
  config.critic_iters = 2
  config.critic_iters_boost = 4
  config.critic_warmup_iters = 2
  config.critic_boost_every = 5
  config.iters_per_epoch = 4
  config.num_epochs = 2
  config.num_devices = 1
  config.progress_bar = False
  config.log_every_steps = 1
  config.sample_every_steps = 4
  config.num_grid_samples = 16
  return set_fields(config, overrides)


def tiny_cyclegan_config(dataset="fake", **overrides):
  """32x32 crops of 36x36 images, 8-channel nets with 1 block, 1 device, quiet."""
  from jaxgan.configs import cyclegan_horse2zebra
  config = cyclegan_horse2zebra.get_config()
  config.dataset = dataset
  config.cache_dir = "none"
  config.train_subset = 8
  config.load_size = 36
  config.image_size = 32
  config.model.ngf = 8
  config.model.ndf = 8
  config.model.n_blocks = 1
  config.pool_size = 4
  config.num_epochs = 2
  config.decay_epochs = 1
  config.num_devices = 1
  config.log_every_steps = 2
  config.sample_every_steps = 8
  config.num_grid_samples = 3
  config.progress_bar = False
  return set_fields(config, overrides)
