"""CIFAR-10 to 94% as fast as we can: the airbench94 recipe from jaxgan's own blocks.

FastNet (1,971,640 parameters: a fixed 2x2 whitening conv from the data, three
conv-pool-BN-GELU groups 64/256/256, identity-initialised convs, frozen BN
scales), batch 1024, 9.9 epochs, Nesterov SGD on a triangular lr, label
smoothing 0.2, BatchNorm shifts at 64x the lr, whitening bias trained for 3
epochs, alternating flips + 2-pixel reflect translations, Lookahead weight
averaging from epoch 3, and flip + translate test-time augmentation. Data and
augmentation stay on the device; every trick is a field below.

    python train.py --config configs/cifar10_fast.py --workdir runs/fast
    python -m benchmarks.time_to_accuracy --config configs/cifar10_fast.py \
        --dataset /path/to/cifar10-jpeg75.tar.xz --target 0.94 --seeds 5

Expected: about 94% test accuracy (accuracy_translate_tta) on the original
CIFAR-10, as airbench94 (94.01% in 3.83 s on an A100), in about 2 s of training on
one H100 (compilation, about 30 s, apart; the aim is under 5 s), faster than the
recipe's PyTorch twin. A JPEG-75 copy of CIFAR-10 costs about 3.5 points (about
90.6%); only such a copy has been measured so far, so 94% on the original images
is still to be checked. Measured: docs/results/h100.md.

airbench's hyperparameters are "decoupled" (lr per 1024 examples on a summed
loss); jaxgan averages the loss, so lr = 11.5 / (1 + 1 / (1 - 0.85)) = 1.5 and
weight decay = 0.0153 / 11.5 give the same updates.
"""
import ml_collections

from jaxgan.configs import darknet_cifar10


def get_config():
  config = darknet_cifar10.get_config()
  config.model = ml_collections.ConfigDict()
  config.model.name = "fastnet"
  config.model.widths = (64, 256, 256)
  config.model.whiten_kernel_size = 2
  config.model.act = "gelu"
  config.model.bn_momentum = 0.4  # PyTorch convention (airbench: 0.6 decay)
  config.model.bn_eps = 1e-12
  config.model.logit_scale = 1 / 9
  config.whiten_images = 5000  # training images whose 2x2 patches set the whitening filters
  # (0: no whitening; the first conv is initialised at random and trained)

  config.dtype = "bfloat16"
  config.batch_size = 1024
  config.eval_batch_size = 2000
  del config.num_epochs  # an int in the Darknet recipe
  config.num_epochs = 9.9  # 476 steps: the schedule's length; a partial last epoch is fine

  momentum = 0.85
  config.schedule = "triangle"
  config.triangle = (0.2, 23, 0.07)  # (start, peak at this % of steps, end) x learning_rate
  config.learning_rate = 11.5 / (1 + 1 / (1 - momentum))
  config.momentum = momentum
  config.nesterov = True
  config.weight_decay = 0.0153 / 11.5
  config.bias_lr_scale = 64.0  # BatchNorm shifts: lr x 64, weight decay / 64
  config.whiten_bias_epochs = 3  # then the whitening layer is fixed entirely
  config.label_smoothing = 0.2

  config.ema = ml_collections.ConfigDict()
  config.ema.start_epochs = 3  # -1: no weight averaging
  config.ema.every_n_steps = 5
  config.ema.decay_base = 0.95
  config.ema.decay_pow = 3.0

  config.augment.pad = 2
  config.augment.pad_mode = "reflect"
  config.augment.flip = True
  config.augment.alternate_flip = True  # each image flipped in every other epoch
  config.tta_translate = True  # also report accuracy_translate_tta (airbench's TTA level 2)

  config.log_every_steps = 16
  config.eval_every_epochs = 1
  config.checkpoint_every_epochs = 10
  return config
