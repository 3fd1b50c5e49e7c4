"""A small Darknet learns real CIFAR-10 (the shared JPEG copy; skipped when absent)."""
from jaxgan import experiment
from jaxgan.data import folder


def test_small_darknet_learns_real_cifar10(shared_cifar, cache_dir, tmp_path):
  data = folder.read_image_folder(shared_cifar, 32, cache_dir=cache_dir)
  assert data["train"][0].shape == (50000, 32, 32, 3)
  assert data["test"][0].shape == (10000, 32, 32, 3)
  assert data["class_names"][:3] == ["airplane", "automobile", "bird"]

  from jaxgan.configs import tiny_darknet
  config = tiny_darknet.get_config()  # 5,000 train / 1,000 test images, small Darknet
  config.dataset = shared_cifar
  config.cache_dir = cache_dir
  config.num_devices = 1
  config.num_epochs = 3
  config.progress_bar = False
  result = experiment.train_and_evaluate(config, str(tmp_path / "run"))
  # Chance is 10%; this run reaches ~38% on 2 CPU cores in ~15 s.
  assert result["eval"]["accuracy"] > 0.30
  assert result["train"]["loss"] < 2.0
