"""The lesson's WGAN (DCGAN generator, clipped critic) on CIFAR-10 at 32x32.

    python train.py --config configs/wgan_cifar10.py --workdir runs/wgan_cifar10
    # offline: --config.dataset=/path/to/cifar10-jpeg75.tar.xz (its train/ part is read)

RMSProp lr 1e-4 (the seed's; 5e-5 in the paper) for both nets, batch 64,
weights clipped to [-0.01, 0.01] before every critic step, 100 critic steps
for the first 25 generator iterations and every 500th, else 5. A sample grid
from fixed noise goes to <workdir>/samples/ every 500 generator iterations.
An "epoch" in this config is 500 generator iterations.

Expected: recognisable colour blobs and object-like shapes after a few
thousand generator iterations; FID about 55 is the published figure for
clipping WGANs on CIFAR-10 (Lucic et al. 2018), which evaluate.py measures with
--features=inception:<weights file>. On 2 CPU cores, 2,000 generator
iterations take under an hour. Measured: docs/results/README.md (WGAN on
CIFAR-10).
"""
import ml_collections

from jaxgan.configs.common import add_data_fields, add_run_fields


def get_config():
  config = ml_collections.ConfigDict()
  config.task = "wgan"
  # TFDS name, or a folder / archive of images in any layout
  add_data_fields(config, "cifar10")
  config.train_split = "train"  # TFDS split, or the subfolder of a folder that has one
  config.eval_split = "test"  # the held-out images of evaluate.py's metrics
  # A folder with no train/ subfolder (e.g. a flat folder of faces) holds this many images
  # (at most a tenth) out of training for the metrics: the first of a fixed shuffle.
  config.held_out = 1000
  config.train_subset = -1
  config.image_size = 32  # a power of two from 16

  config.model = ml_collections.ConfigDict()
  config.model.nz = 100
  config.model.ngf = 64
  config.model.ndf = 64
  config.model.n_extra_layers = 1
  config.model.upsample = "deconv"  # or "resize": nearest 2x + 3x3 conv (no checkerboard)

  config.loss = "wgan"  # or "wgan_gp": gradient penalty, Adam(0, 0.9), no clip, no critic BN
  config.clip = 0.01
  config.gp_weight = 10.0
  config.lr_g = 1e-4
  config.lr_d = 1e-4
  config.critic_iters = 5
  config.critic_iters_boost = 100
  config.critic_warmup_iters = 25
  config.critic_boost_every = 500
  # auto: the critic steps of a generator iteration run as one lax.scan program on GPU/TPU,
  # as separately dispatched compiled steps on CPU (XLA:CPU is slow at convs inside loops).
  config.critic_loop = "auto"  # auto | scan | dispatch

  config.dtype = "float32"
  config.batch_size = 64  # global
  config.iters_per_epoch = 500  # generator iterations per "epoch" (logging / checkpoints)
  config.num_epochs = 20
  config.num_train_steps = -1  # cap in generator iterations

  # GAN metrics come from evaluate.py, not from epoch-end evaluation.
  add_run_fields(config, log_every_steps=25, eval_every_epochs=0, sample_every_steps=500,
                 num_grid_samples=64)
  return config
