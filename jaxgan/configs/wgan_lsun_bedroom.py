"""The lesson's WGAN on LSUN bedrooms at 64x64 (the wgan notebook's data).

    python train.py --config configs/wgan_lsun_bedroom.py --workdir runs/wgan

TFDS `lsun/bedroom`, each image's shorter side resized to 64 and centre
cropped. The notebook trained on a sample of the 3 million bedrooms; the
default here is the first 10% of the train split (303,000 images, 3.7 GB as
uint8 on each device and in the decode cache). Use
--config.train_split=train for all of it if your devices hold 37 GB.

Expected: blurry but recognisable bedrooms after about 2,000 generator
iterations, as in the notebook.
"""
from jaxgan.configs import wgan_cifar10


def get_config():
  config = wgan_cifar10.get_config()
  config.dataset = "lsun/bedroom"
  config.train_split = "train[:10%]"
  config.image_size = 64
  return config
