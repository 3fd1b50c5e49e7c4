"""A seconds-long Darknet for tests and smoke runs (CPU friendly).

    jaxgan-train --config tiny_darknet --workdir runs/tiny \
        --config.dataset=/path/to/cifar10-jpeg75.tar.xz

Expected: about 30 s on 2 CPU cores, about 35% test accuracy on CIFAR-10 (chance: 10%);
docs/results/README.md has the measurement.
"""
from jaxgan.configs import darknet_cifar10


def get_config():
  config = darknet_cifar10.get_config()
  config.model.num_blocks = (1, 1)
  config.model.nf = 16
  config.model.bn_momentum = 0.1  # running statistics must settle within a few hundred steps
  config.dtype = "float32"
  config.batch_size = 64
  config.eval_batch_size = 500
  config.num_epochs = 2
  config.learning_rate = 0.4
  config.train_subset = 5000
  config.eval_subset = 1000
  config.log_every_steps = 10
  return config
