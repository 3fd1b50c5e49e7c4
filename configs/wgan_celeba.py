"""The lesson's WGAN on CelebA faces at 64x64.

    python train.py --config configs/wgan_celeba.py --workdir runs/wgan_celeba

TFDS `celeb_a` (162,770 training faces of 218x178), shorter side resized to
64 and centre cropped (2.0 GB as uint8). Expected: face-like samples within a
few thousand generator iterations; published clipping-WGAN FID on CelebA is
about 41 (Lucic et al. 2018).
"""
from configs import wgan_cifar10


def get_config():
  config = wgan_cifar10.get_config()
  config.dataset = "celeb_a"
  config.image_size = 64
  return config
