"""CycleGAN horse <-> zebra sized for a laptop: 64x64, about an hour on 2 CPU cores.

    python train.py --config configs/cyclegan_horse2zebra_cpu.py --workdir runs/h2z_cpu \
        --config.dataset=/path/to/horse2zebra      # folder or .tar with trainA/ trainB/ ...
    python evaluate.py --workdir runs/h2z_cpu --features=darknet:runs/h2z_domains

The reference recipe (configs/cyclegan_horse2zebra.py) scaled down: images
loaded at 72 and randomly cropped to 64, a ResNet generator of width 32 with
6 blocks (1,965,059 parameters), a PatchGAN with n_layers_d=2 (34x34
patches, 662,977 parameters: the 70x70 one would see the whole 64x64 image), 10 epochs of 1,334 iterations
(5 at lr 2e-4, 5 decaying to 0). Every loss, weight, pool and schedule rule
is the reference's. The second command scores it with a horse/zebra classifier
trained by configs/domain_classifier.py (see there).

Expected on horse2zebra: about an hour on an otherwise idle 2-core x86-64 CPU;
horses visibly striped within the first few epochs. Against the domain
classifier (about 90% test accuracy), most translated test horses are taken for
zebras (about 80%, against a few percent untranslated) and nearly all translated
zebras for horses. Measured: docs/results/README.md (horse2zebra at 64x64).
"""
from jaxgan.configs import cyclegan_horse2zebra


def get_config():
  config = cyclegan_horse2zebra.get_config()
  config.load_size = 72
  config.image_size = 64
  config.model.ngf = 32
  config.model.n_blocks = 6
  config.model.n_layers_d = 2
  config.num_epochs = 10
  config.decay_epochs = 5
  config.sample_every_steps = 1334  # a grid per epoch
  config.num_grid_samples = 6
  return config
