"""A face-orientation classifier (upright or upside down?): an offline feature space for
GANs of faces.

    python train.py --config configs/upright_classifier.py --workdir runs/faces_upright \
        --config.dataset=/path/to/celeba-images     # the WGAN run's dataset and held_out
    python evaluate.py --workdir runs/wgan_celeba --features=darknet:runs/faces_upright

No face-recognition weights can be downloaded here, and a CIFAR-10 classifier
knows nothing of faces. Telling an upright face from an upside-down one needs
its layout (hair above the eyes, eyes above the mouth, chin above the
shoulders), so the penultimate features of a small Darknet trained at it
describe what a face generator must get right. Each image is shown as it is
and turned 180 degrees (both survive the flip augmentation). The splits are
the WGAN's: a flat folder keeps the same `held_out` images (the first of a
fixed shuffle) out of training, so the GAN metrics' held-out faces are new
to this network too; its own test accuracy is measured on them.

Expected on 10,000 CelebA faces: about 99% on the 1,000 held-out faces and
their turned copies, about half an hour on 2 CPU cores. Measured:
docs/results/README.md (WGAN on CelebA faces).
"""
from jaxgan.configs import domain_classifier


def get_config():
  config = domain_classifier.get_config()
  del config["train_splits"], config["test_splits"]
  config.labels = "upright"
  config.dataset = "celeb_a"
  config.train_split = "train"  # a folder without this subfolder holds out `held_out` images
  config.eval_split = "test"
  config.held_out = 1000  # as configs/wgan_cifar10.py (and so wgan_celeba.py)
  config.num_epochs = 4
  config.eval_every_epochs = 1
  return config
