"""Feature spaces for the GAN metrics, computed batched, jitted and data parallel.

`--features` names one:
- `darknet:<workdir>`: a classifier this project trained (train.py with
  configs/darknet_cifar10.py, or any classifier config). Its globally pooled
  penultimate activations are the features and its predicted classes give
  the class histogram. Works offline; images are resized to the size it was
  trained at and normalised with its saved statistics. A domain classifier
  (configs/domain_classifier.py) also scores CycleGAN translations by the
  share it assigns to the target domain; an upright classifier
  (configs/upright_classifier.py) gives a feature space for faces.
- `inception:<file>`: the standard FID InceptionV3 (pool3, 2048-d; its 1008
  ImageNet-style classes give the class histogram), with weights read from a
  local file: pytorch-fid's `pt_inception-2015-12-05-6726825d.pth` (from
  https://github.com/mseitzer/pytorch-fid/releases, tag fid_weights; about 95 MB),
  or an .npz of the same state dict. Nothing is ever downloaded. These are
  the numbers comparable to published FIDs (computed on the same sample count).
- `pixels`: the images themselves (downsampled to at most 32x32, in [0, 1]),
  a baseline space with no learned features.
"""
import dataclasses
import json
import os
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from jaxgan import parallel
from jaxgan.errors import ConfigError, WorkdirError

INCEPTION_URL = ("https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/"
                 "pt_inception-2015-12-05-6726825d.pth")
SPACES_HELP = ("--features takes darknet:<workdir of a trained classifier> (train one offline "
               "with: python train.py --config configs/darknet_cifar10.py --workdir runs/features "
               "--config.dataset=<CIFAR-10 folder or archive>), inception:<weights file> "
               f"(pytorch-fid's FID weights, {INCEPTION_URL}) or pixels")


@dataclasses.dataclass
class FeatureSpace:
  """`name` says which space every number used; `describe` how it was made."""
  name: str
  describe: str
  apply: Callable  # (variables, uint8 images) -> (features, logits or zeros)
  variables: dict
  num_classes: int = 0
  class_names: tuple = ()
  domains: bool = False  # a domain classifier: its classes are the domains "A" and "B"
  _on_devices: dict = dataclasses.field(default_factory=dict, repr=False)

  def _replicated(self, devices: tuple):
    """The variables on `devices`, copied there once (Inception's are ~95 MB)."""
    if devices not in self._on_devices:
      self._on_devices[devices] = parallel.replicate(self.variables, devices)
    return self._on_devices[devices]

  def __call__(self, images: np.ndarray, batch_size: int = 250, devices=None
               ) -> tuple[np.ndarray, np.ndarray | None]:
    """(features (N, D) float32, predicted classes (N,) or None) of uint8 NHWC images.

    Batches are split over `devices`; the last batch is padded, never dropped.
    """
    devices = devices or parallel.local_devices()
    n_dev = len(devices)
    batch_size = max(n_dev, batch_size // n_dev * n_dev)
    fn = _compiled(self.apply, tuple(devices))
    variables = self._replicated(tuple(devices))
    feats, preds = [], []
    for i in range(0, len(images), batch_size):
      chunk = np.asarray(images[i:i + batch_size])
      pad = batch_size - len(chunk)
      if pad:
        chunk = np.concatenate([chunk, np.zeros((pad, *chunk.shape[1:]), chunk.dtype)])
      f, logits = fn(variables, parallel.shard(chunk, devices))
      f, logits = (np.asarray(x).reshape(batch_size, -1)[:len(chunk) - pad] for x in (f, logits))
      feats.append(f)
      preds.append(logits.argmax(-1))
    feats = np.concatenate(feats).astype(np.float32)
    return feats, (np.concatenate(preds) if self.num_classes else None)


_COMPILED = {}


def _compiled(apply, devices):
  key = (apply, devices)
  if key not in _COMPILED:
    _COMPILED[key] = parallel.pmap_step(apply, devices, donate_state=False)
  return _COMPILED[key]


def pixel_space() -> FeatureSpace:
  def apply(variables, images):
    x = images.astype(jnp.float32) / 255.0
    h = min(32, x.shape[1])
    if x.shape[1] != h:
      x = jax.image.resize(x, (x.shape[0], h, h, x.shape[3]), "linear", antialias=True)
    return x.reshape(x.shape[0], -1), jnp.zeros((x.shape[0], 1))

  return FeatureSpace("pixels", "raw pixels in [0, 1], downsampled to at most 32x32", apply, {})


def darknet_space(workdir: str) -> FeatureSpace:
  """The penultimate features and predictions of a classifier trained by train.py."""
  from jaxgan.checkpoint import Checkpointer
  from jaxgan.classifier import build_model
  from jaxgan.workdir import load_config
  workdir = os.path.abspath(os.path.expanduser(workdir))
  if not os.path.isdir(workdir):
    raise WorkdirError(f"--features=darknet:{workdir}: no such workdir. {SPACES_HELP}")
  config = load_config(workdir)
  if config.get("task", "classifier") != "classifier":
    raise ConfigError(f"--features=darknet:{workdir} is a {config.task!r} run, not a classifier. "
                      + SPACES_HELP)
  ckpt = Checkpointer(workdir, read_only=True)
  try:
    if ckpt.latest_step() is None:
      raise WorkdirError(f"--features=darknet:{workdir} has no checkpoint yet. {SPACES_HELP}")
    state, meta = ckpt.restore(None)
    step = ckpt.latest_step()
  finally:
    ckpt.close()
  class_names = tuple(meta["class_names"])
  model = build_model(config.model, len(class_names), jnp.float32)
  mean, std = (np.asarray(meta["data_stats"][k], np.float32) for k in ("mean", "std"))
  size = config.image_size

  def apply(variables, images):
    x = images.astype(jnp.float32) / 255.0
    if x.shape[1:3] != (size, size):
      x = jax.image.resize(x, (x.shape[0], size, size, x.shape[3]), "linear", antialias=True)
    x = (x - mean) / std
    f = model.apply(variables, x, train=False, method="features")
    logits = model.apply(variables, x, train=False)
    return f.astype(jnp.float32), logits.astype(jnp.float32)

  accuracy = "accuracy not measured yet (run evaluate.py on it)"
  eval_path = os.path.join(workdir, "eval.json")
  if os.path.exists(eval_path):
    with open(eval_path) as f:
      result = json.load(f)
    if "accuracy" in result:
      accuracy = f"test accuracy {result['accuracy']:.4f} at step {result['step']}"
  variables = {"params": state["params"], "batch_stats": state.get("batch_stats", {})}
  trained_on = {"domains": "domain classifier", "upright": "upright-vs-upside-down classifier"
                }.get(config.get("labels", "folders"), "classifier")
  return FeatureSpace(f"darknet:{workdir}",
                      f"{type(model).__name__} penultimate features ({config.model.name} "
                      f"{trained_on} on {config.dataset}, {size}x{size}, step {step}; "
                      f"{accuracy})", apply, variables, len(class_names), class_names,
                      domains=config.get("labels", "folders") == "domains")


def inception_space(path: str) -> FeatureSpace:
  """The FID InceptionV3 with weights from a local file (never downloaded)."""
  from jaxgan.models.inception import FIDInceptionV3, variables_from_state_dict
  from jaxgan.torch_weights import TorchFileError, load_state_dict
  path = os.path.abspath(os.path.expanduser(path))
  if not os.path.isfile(path):
    raise ConfigError(f"--features=inception:{path}: no such file. Download the FID Inception "
                      f"weights once from {INCEPTION_URL} (about 95 MB) and pass their path; jaxgan "
                      "never downloads them itself.")
  try:
    variables = variables_from_state_dict(load_state_dict(path))
  except (TorchFileError, ValueError) as e:
    raise ConfigError(f"--features=inception:{path} could not be used: {e}. The file should be "
                      f"pytorch-fid's pt_inception-2015-12-05-6726825d.pth ({INCEPTION_URL}), "
                      "complete (about 95 MB), or an .npz of the same state dict.") from e
  model = FIDInceptionV3()
  return FeatureSpace(f"inception:{path}", "FID InceptionV3 pool3 features (2048-d, 299x299 "
                      f"bilinear), weights {os.path.basename(path)}",
                      lambda v, images: model.apply(v, images), variables, 1008)


def feature_space(spec: str | None) -> FeatureSpace:
  if not spec:
    raise ConfigError("GAN metrics need a feature space. " + SPACES_HELP)
  if spec == "pixels":
    return pixel_space()
  kind, _, arg = spec.partition(":")
  if kind == "darknet" and arg:
    return darknet_space(arg)
  if kind == "inception" and arg:
    return inception_space(arg)
  raise ConfigError(f"--features={spec!r} is unknown. {SPACES_HELP}")
