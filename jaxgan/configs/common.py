"""Fields every recipe shares: where the data comes from, seed, devices, periodic work,
checkpoints, failure policy."""


def add_data_fields(config, dataset: str):
  """Where the images come from: `dataset` is a TFDS name, an image folder or a tar archive
  of one (each family's recipe says which layouts it reads)."""
  config.dataset = dataset
  config.tfds_data_dir = ""  # "" = TFDS's default (TFDS_DATA_DIR or ~/tensorflow_datasets)
  config.download = True  # let TFDS download a dataset that is not prepared yet
  config.cache_dir = ""  # decoded image-folder cache; "" = ~/.cache/jaxgan, "none" = off
  config.bad_images = "skip"  # unreadable files in a folder: "skip" (warn with a count) or "stop"
  return config


def add_run_fields(config, log_every_steps: int, eval_every_epochs: int,
                   sample_every_steps: int | None = None, num_grid_samples: int | None = None):
  config.seed = 0  # one seed for init, data order, augmentation and noise
  config.num_devices = -1  # local devices to use; -1 = all
  config.distributed = False  # call jax.distributed.initialize() (multi-host runs)
  config.log_every_steps = log_every_steps
  if sample_every_steps is not None:  # GANs: PNG grids to <workdir>/samples/ and TensorBoard
    config.sample_every_steps = sample_every_steps
    config.num_grid_samples = num_grid_samples
  config.eval_every_epochs = eval_every_epochs
  config.checkpoint_every_epochs = 1
  config.keep_checkpoints = 3
  config.on_nonfinite = "stop"  # "stop" at the first NaN/Inf, or "skip" that update and count it
  config.progress_bar = True
  # Compiled programs kept across runs, so a rerun or resume starts at once: "" =
  # ~/.cache/jaxgan/xla ($JAXGAN_CACHE_DIR/xla), "none" = compile afresh, or a folder.
  config.compilation_cache = ""
  # Extra XLA flags for this run, after $XLA_FLAGS, e.g. "--xla_gpu_graph_min_graph_size=1";
  # train.py applies them before JAX starts (XLA reads its flags once per process).
  config.xla_flags = ""
  return config
