"""The CelebA WGAN sized for a laptop: about an hour on 2 CPU cores.

    python train.py --config configs/wgan_celeba_cpu.py --workdir runs/wgan_celeba_cpu \
        --config.dataset=/path/to/celeba-images.tar.gz  # a folder or archive of faces
    python train.py --config configs/upright_classifier.py --workdir runs/faces_upright \
        --config.dataset=/path/to/celeba-images.tar.gz
    python evaluate.py --workdir runs/wgan_celeba_cpu --features=darknet:runs/faces_upright

configs/wgan_celeba.py (64x64 faces, batch 64, RMSProp 1e-4, clipping at
0.01, the reference's critic schedule, `held_out` faces kept for the
metrics) with half-width networks and no extra layers: DCGAN generator and
critic with ngf = ndf = 32 (1,100,224 and 694,656 parameters), for 1,500 generator
iterations.

Expected on 10,000 aligned CelebA faces: about an hour on an otherwise idle
2-core x86-64 CPU; faces by iteration 500. Against the held-out faces, a
Frechet distance far below an untrained generator's, both in the upright
classifier's features and in pixels, and no collapse or copying flagged.
Measured: docs/results/README.md (WGAN on CelebA faces).
"""
from jaxgan.configs import wgan_celeba


def get_config():
  config = wgan_celeba.get_config()
  config.model.ngf = 32
  config.model.ndf = 32
  config.model.n_extra_layers = 0
  config.iters_per_epoch = 250  # a checkpoint and a sample grid every 250 generator iterations
  config.num_epochs = 6
  return config
