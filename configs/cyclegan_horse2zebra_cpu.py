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

Expected (horse2zebra, one run, 2-core x86-64 CPU, 2026-12-02): 13,340
iterations at 4.0-4.3 a second, about 55 minutes; horses visibly striped
from epoch 2. Against a domain classifier of 90.4% test accuracy, 83% of the
translated test horses are taken for zebras (untranslated: 6%; real zebras:
87%) and 99% of the translated zebras for horses (untranslated: 13%; real
horses: 94%); docs/results/README.md has the whole table.
"""
from configs import cyclegan_horse2zebra


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
