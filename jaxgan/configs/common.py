"""Fields every recipe shares: where the data comes from, seed, devices, periodic work,
checkpoints, failure policy."""


# The data fields and their defaults. The data layer (jaxgan.data.DataFields) reads a
# config through them, so a config without some of them (an older workdir's, or one built
# by hand) reads as these values.
DATA_DEFAULTS = {
    "tfds_data_dir": "",  # "" = TFDS's default (TFDS_DATA_DIR or ~/tensorflow_datasets)
    "download": True,  # let TFDS download a dataset that is not prepared yet
    "cache_dir": "",  # decoded image-folder cache; "" = ~/.cache/jaxgan, "none" = off
    "bad_images": "skip",  # unreadable files in a folder: "skip" (warn with a count) or "stop"
    # Set by the recipes that need other values:
    "train_split": "train", "eval_split": "test",
    "train_subset": -1, "eval_subset": -1,  # the first N of a fixed shuffle; -1 = all
    "held_out": 0,  # images of a folder without a test split kept out of training
    "labels": "folders",  # classifier classes: "folders", "domains" or "upright"
}


def add_data_fields(config, dataset: str):
  """Where the images come from: `dataset` is a TFDS name, an image folder or a tar archive
  of one (each family's recipe says which layouts it reads)."""
  config.dataset = dataset
  for field in ("tfds_data_dir", "download", "cache_dir", "bad_images"):
    config[field] = DATA_DEFAULTS[field]
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
