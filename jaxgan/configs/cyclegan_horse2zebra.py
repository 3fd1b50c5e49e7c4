"""CycleGAN horse <-> zebra, the reference recipe (Zhu et al. 2017; the lesson's notebook).

    python train.py --config configs/cyclegan_horse2zebra.py --workdir runs/h2z
    # any TFDS pair:   --config.dataset=cycle_gan/monet2photo
    # a folder with trainA/ trainB/ (testA/ testB/): --config.dataset=/path/to/horse2zebra
    # two folders, domain A then B: --config.dataset=/path/to/horses,/path/to/zebras
    python evaluate.py --workdir runs/h2z     # test-set cycle/identity L1, translations.npz
    python translate.py --workdir runs/h2z --input my_horses/ --output out/ --direction AtoB

ResNet generator (9 blocks, 11,378,179 params) and 70x70 PatchGAN
(2,764,737) per direction, instance norm, LSGAN, cycle weight 10 each way,
identity weight 0.5 * 10, image pools of 50, Adam(2e-4, 0.5, 0.999), batch
1; images resized to 286, randomly cropped to 256 and flipped; lr constant
for 100 epochs then linearly to 0 over 100 more (an epoch = max(|A|, |B|) =
1334 iterations).

Expected: zebra stripes on horses within ~10 epochs; published horse->zebra
FID about 62 with the identity loss, 77 without. The reference takes ~0.4 s per
iteration on a GTX 1080 Ti, 1-2 days in all; jaxgan's iteration takes about
55 ms on one H100 in bfloat16 (--config.dtype=bfloat16), about 4 hours for the
200 epochs (estimated from the step's speed: the whole recipe has not yet run
on a GPU). Measured: docs/results/h100.md.
"""
import ml_collections

from jaxgan.configs.common import add_data_fields, add_run_fields


def get_config():
  config = ml_collections.ConfigDict()
  config.task = "cyclegan"
  # TFDS name, folder with trainA/trainB, or "<A>,<B>"
  add_data_fields(config, "cycle_gan/horse2zebra")
  config.train_splits = ("trainA", "trainB")  # TFDS splits, or subfolders of a folder
  config.test_splits = ("testA", "testB")
  config.train_subset = -1  # images per domain (-1: all)

  config.load_size = 286  # images are decoded once at this size ...
  config.image_size = 256  # ... and randomly cropped to this one every step
  config.flip = True

  config.model = ml_collections.ConfigDict()
  config.model.ngf = 64
  config.model.ndf = 64
  config.model.n_blocks = 9
  config.model.n_layers_d = 3

  config.gan_mode = "lsgan"  # or "vanilla" (binary cross-entropy)
  config.lambda_a = 10.0  # cycle A -> B -> A
  config.lambda_b = 10.0  # cycle B -> A -> B
  config.lambda_identity = 0.5  # identity weight, as a fraction of lambda_a / lambda_b
  config.pool_size = 50  # fakes kept per direction (0: no pool)
  config.lr = 2e-4
  config.beta1 = 0.5
  config.beta2 = 0.999

  config.dtype = "float32"  # or bfloat16 (instance-norm statistics stay float32)
  # G_A and G_B (and D_A and D_B) as one vmapped call on stacked parameters: grouped
  # convolutions, half the kernel launches a step (1,071 -> 462 on an H100, compiled without
  # one). Not yet timed on a GPU (benchmarks/gpu_checks.sh stack); much slower on CPUs.
  config.stack_networks = False
  config.batch_size = 1  # global; instance norm makes any size (and data parallelism) valid
  config.num_epochs = 200  # in all ...
  config.decay_epochs = 100  # ... the last of which decay the lr linearly to 0
  config.num_train_steps = -1

  # evaluate.py translates the test sets; no epoch-end evaluation.
  add_run_fields(config, log_every_steps=100, eval_every_epochs=0, sample_every_steps=1000,
                 num_grid_samples=4)
  return config
