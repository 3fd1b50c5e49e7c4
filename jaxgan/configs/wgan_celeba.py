"""The lesson's WGAN on CelebA faces at 64x64.

    python train.py --config configs/wgan_celeba.py --workdir runs/wgan_celeba
    # a local copy, e.g. a folder or archive of aligned faces (any layout, no classes):
    #   --config.dataset=/path/to/celeba-images.tar.gz

TFDS `celeb_a` (162,770 training faces of 218x178, its test split held
out), or any folder or tar archive of face images: each image's shorter side
resized to 64 and centre cropped (a centre square crop, then the resize).
A folder with no train/ subfolder holds out `held_out` (1,000) faces, the
first of a fixed shuffle, which training never sees; evaluate.py measures on
them and names them in eval.json. For metrics in a feature space that knows
faces, train configs/upright_classifier.py on the same data and pass
--features=darknet:<its workdir>.

Expected: face-like samples within a few thousand generator iterations;
published clipping-WGAN FID on CelebA is about 41 (Lucic et al. 2018, with
Inception features). configs/wgan_celeba_cpu.py is the laptop-sized version.
"""
from jaxgan.configs import wgan_cifar10


def get_config():
  config = wgan_cifar10.get_config()
  config.dataset = "celeb_a"
  config.image_size = 64
  return config
