"""fast.ai's DAWNBench 2018 CIFAR-10 entry: wrn_22 with a one-cycle `use_clr`.

The submission ran 8 V100s x 128 images (global batch 1024), lr 1.3, wd 2e-4,
`use_clr 50,15,0.95,0.85`, 50 epochs, half precision; it first reached 94% at
epoch 42, about 194 s after the start. Here the same global batch runs on
however many devices there are (BatchNorm statistics span the whole batch,
where the original kept them per GPU), in bfloat16.

    python train.py --config configs/wrn22_cifar10.py --workdir runs/wrn22

Expected: >= 94% test accuracy on the original CIFAR-10 around epoch 42; on
one H100 about a minute of training steps for the 50 epochs (estimated from the
bfloat16 step's speed at batch 512, `python -m benchmarks.train_throughput
--preset wrn22`; the recipe itself, at batch 1024, has not been timed yet).
Measured: docs/results/h100.md.
"""
import ml_collections

from jaxgan.configs import darknet_cifar10


def get_config():
  config = darknet_cifar10.get_config()
  config.model = ml_collections.ConfigDict()  # a different model: replace, not amend
  config.model.name = "wrn"
  config.model.stem = 16
  config.model.widths = (96, 192, 384)  # 16 * k * (1, 2, 4) with k = 6
  config.model.strides = (1, 2, 2)
  config.model.blocks_per_group = 3
  config.model.bottleneck = 1.0
  config.model.kernel_sizes = (3, 3)
  config.model.act = "relu"
  config.model.bn_momentum = 0.1  # PyTorch's default, as in fastai's WideResNet
  config.batch_size = 1024
  config.learning_rate = 1.3
  config.weight_decay = 2e-4
  config.num_epochs = 50
  config.schedule = "clr"
  config.clr = (50, 15, 0.95, 0.85)
  return config
