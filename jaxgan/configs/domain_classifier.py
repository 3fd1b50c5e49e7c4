"""A domain classifier (is this image from domain A or B?) that scores CycleGAN offline.

    python train.py --config configs/domain_classifier.py --workdir runs/h2z_domains \
        --config.dataset=/path/to/horse2zebra     # the CycleGAN run's dataset, any form
    python evaluate.py --workdir runs/h2z_domains                  # its own test accuracy
    python evaluate.py --workdir runs/h2z_cpu --features=darknet:runs/h2z_domains

The CycleGAN paper scores translations by how often a classifier trained on
the target domain recognises them ("FCN score"). This is that idea with no
download: a small Darknet learns A vs B from the training domains of any
two-domain dataset (a TFDS pair, a folder or tar with trainA/ trainB/
testA/ testB/, or two folders <A>,<B>, from which `held_out` images per
domain are kept for its test) and is tested on the test domains. For a
CycleGAN workdir, evaluate.py then reports per direction the share of
translated test images it assigns to the target domain, beside the
untranslated images (doing nothing) and the real target images (its own
accuracy there: the score is only as good as the classifier), and the
Frechet distance / KID in its feature space. Images of any size are resized
to its `image_size`: train it at the translations' resolution or below.

Expected on horse2zebra: about 90% test accuracy (horses recognised more
often than zebras), about half an hour on 2 CPU cores. Measured:
docs/results/README.md (horse2zebra at 64x64).
"""
from jaxgan.configs import darknet_cifar10


def get_config():
  config = darknet_cifar10.get_config()
  config.labels = "domains"  # class A = domain A, class B = domain B
  config.dataset = "cycle_gan/horse2zebra"
  config.train_splits = ("trainA", "trainB")
  config.test_splits = ("testA", "testB")
  config.held_out = 100  # per domain, for datasets without test domains (at most a tenth)
  config.image_size = 64

  config.model.num_blocks = (1, 1, 1, 1)
  config.model.nf = 16
  config.model.bn_momentum = 0.1  # the run is short: running statistics must keep up
  config.augment.pad = 8
  config.dtype = "float32"
  config.batch_size = 64
  config.eval_batch_size = 200
  config.num_epochs = 30
  config.learning_rate = 0.4
  config.log_every_steps = 20
  config.eval_every_epochs = 5
  return config
