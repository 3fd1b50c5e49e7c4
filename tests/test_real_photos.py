"""Real-photo datasets: the archive layouts of horse2zebra and CelebA, held-out images of
flat folders, and the offline classifier scores of translations and faces."""
import io
import os
import tarfile

import jax
import numpy as np
import pytest

from conftest import set_fields, tiny_config, tiny_cyclegan_config, tiny_wgan_config
from jaxgan import experiment
from jaxgan.data import (domain_classes, hold_out, load_classification_data, load_domains,
                         load_gan_split)
from jaxgan.errors import ConfigError, DatasetError
from jaxgan.features import FeatureSpace
from jaxgan.gan_metrics import translation_report


def png_bytes(image, mode=None):
  from PIL import Image
  buf = io.BytesIO()
  Image.fromarray(image, mode).save(buf, format="PNG")
  return buf.getvalue()


def write_tar(path, files: dict):
  """A tar archive (compression from the suffix) holding {name: bytes}."""
  mode = "w:gz" if str(path).endswith(".gz") else "w"
  with tarfile.open(path, mode) as tar:
    for name, data in files.items():
      info = tarfile.TarInfo(name)
      info.size = len(data)
      tar.addfile(info, io.BytesIO(data))
  return str(path)


def numbered(n, size=8, offset=0):
  """n flat images, image i filled with the value offset + i: each can be told by its pixels."""
  return [np.full((size, size, 3), offset + i, np.uint8) for i in range(n)]


def ids(images):
  return sorted(int(x[0, 0, 0]) for x in images)


def test_horse2zebra_archive_with_a_top_folder_and_grayscale_zebras(tmp_path):
  rng = np.random.default_rng(0)
  img = lambda: rng.integers(0, 256, (12, 12, 3), dtype=np.uint8)
  files = {f"horse2zebra/trainA/n0238_{i}.jpg": png_bytes(img()) for i in range(3)}
  files.update({f"horse2zebra/trainB/n0239_{i}.jpg": png_bytes(img()) for i in range(2)})
  gray = rng.integers(0, 256, (12, 12), dtype=np.uint8)
  files["horse2zebra/trainB/n0239_9.jpg"] = png_bytes(gray, "L")  # as 7 of the real zebras
  files.update({f"horse2zebra/test{d}/{i}.jpg": png_bytes(img()) for d in "AB" for i in range(2)})
  archive = write_tar(tmp_path / "horse2zebra.tar", files)
  config = tiny_cyclegan_config(archive, train_subset=-1, load_size=12, image_size=8)
  a, b = load_domains(config, ("trainA", "trainB"))
  assert a.shape == (3, 12, 12, 3) and b.shape == (3, 12, 12, 3)
  np.testing.assert_array_equal(b[2], np.repeat(gray[:, :, None], 3, axis=2))
  ta, tb = load_domains(config, ("testA", "testB"))
  assert len(ta) == len(tb) == 2


def test_flat_archive_holds_out_the_same_images_for_every_recipe(tmp_path):
  archive = write_tar(tmp_path / "celeba.tar.gz", {f"images/{i:06d}.png": png_bytes(x)
                                                   for i, x in enumerate(numbered(40))})
  config = tiny_wgan_config(archive, image_size=8, held_out=4)
  train, train_which = load_gan_split(config)
  held, held_which = load_gan_split(config, "test")
  # The held-out images are the first 4 of a fixed shuffle, never among the training ones.
  _, want = hold_out(40, 4)
  assert ids(held) == sorted(want.tolist()) and len(train) == 36
  assert set(ids(train)).isdisjoint(ids(held)) and set(ids(train)) | set(ids(held)) == set(range(40))
  assert held_which.startswith("4 of the 40 images, held out") and "4 held out" in train_which
  # A tenth at most; a training subset comes from the training part only.
  assert len(load_gan_split(set_fields(config, {"held_out": 100}), "test")[0]) == 4
  subset = load_gan_split(set_fields(config, {"held_out": 4, "train_subset": 10}))[0]
  assert len(subset) == 10 and set(ids(subset)) <= set(ids(train))
  with pytest.raises(DatasetError, match="--config.held_out"):
    load_gan_split(set_fields(config, {"held_out": 0, "train_subset": -1}), "test")

  # The upright classifier on the same archive tests on exactly the WGAN's held-out faces.
  from jaxgan.configs import upright_classifier
  up = upright_classifier.get_config()
  set_fields(up, {"dataset": archive, "image_size": 8, "held_out": 4, "cache_dir": "none"})
  data = load_classification_data(up)
  images, labels = data.splits["test"]
  assert data.class_names == ["upright", "upside down"]
  assert labels.tolist() == [0] * 4 + [1] * 4
  assert ids(images[:4]) == ids(held)
  np.testing.assert_array_equal(images[4:], images[:4, ::-1, ::-1])
  assert len(data.splits["train"][0]) == 72 and set(ids(data.splits["train"][0])) == set(ids(train))


def test_domain_classes_from_test_domains_or_held_out_of_two_folders(tmp_path):
  from jaxgan.configs import domain_classifier
  files = {f"h2z/{split}/{i}.png": png_bytes(x) for split, n, off in
           (("trainA", 20, 0), ("trainB", 30, 100), ("testA", 3, 200), ("testB", 5, 220))
           for i, x in enumerate(numbered(n, offset=off))}
  archive = write_tar(tmp_path / "h2z.tar", files)
  config = domain_classifier.get_config()
  set_fields(config, {"dataset": archive, "image_size": 8, "cache_dir": "none", "held_out": 2})
  data = load_classification_data(config)
  assert data.class_names == ["A", "B"] and "tested on testA/testB" in data.source
  (train, train_labels), (test, test_labels) = data.splits["train"], data.splits["test"]
  assert train_labels.tolist() == [0] * 20 + [1] * 30
  assert ids(test) == list(range(200, 203)) + list(range(220, 225))
  assert test_labels.tolist() == [0] * 3 + [1] * 5

  # Two folders have no test domains: each domain holds out its own images (a tenth at most).
  with tarfile.open(archive) as tar:
    tar.extractall(tmp_path / "x", filter="data")
  two = f"{tmp_path / 'x/h2z/trainA'},{tmp_path / 'x/h2z/trainB'}"
  data = domain_classes(set_fields(config, {"dataset": two}), ["train", "test"])
  (train, train_labels), (test, test_labels) = data.splits["train"], data.splits["test"]
  assert test_labels.tolist() == [0, 0, 1, 1] and train_labels.tolist() == [0] * 18 + [1] * 28
  assert set(ids(train)).isdisjoint(ids(test))
  assert set(ids(train)) | set(ids(test)) == set(range(20)) | set(range(100, 130))
  with pytest.raises(ConfigError, match="--config.labels='domain'"):
    load_classification_data(set_fields(config, {"labels": "domain"}))


def colour_space():
  """A domain classifier whose answer is known: blue-heavy images are B, others A."""
  def apply(variables, images):
    x = images.astype(np.float32).mean((1, 2)) / 255.0  # mean colour: the features
    score = x[:, 2] - x[:, 0]
    return x, jax.numpy.stack([-score, score], -1)
  return FeatureSpace("colours", "mean colour", apply, {}, 2, ("A", "B"), domains=True)


def coloured(n_red, n_blue, size=8):
  red = np.zeros((size, size, 3), np.uint8)
  red[..., 0] = 200
  blue = red[..., ::-1].copy()
  return np.stack([red] * n_red + [blue] * n_blue)


def test_translation_score_on_images_whose_answer_is_known():
  devices = jax.local_devices()[:1]
  space = colour_space()
  real_a, real_b = coloured(9, 1), coloured(2, 8)  # one bluish horse, two reddish zebras
  fake_b = coloured(3, 7)  # 7 of 10 translations look like zebras
  r = translation_report(space, fake_b, real_b, real_a, "B", devices=devices)
  assert r["target_class"] == "B" and "target domain" in r["target_class_rule"]
  assert r["target_class_share"] == {"translated": 0.7, "untranslated": 0.1, "real_target": 0.8}
  assert "real_baseline_frechet_distance" not in r
  # The real-vs-real floor: other real images of the target domain against its test images.
  floor = translation_report(space, fake_b, real_b, real_a, "B", devices=devices,
                             target_train=np.concatenate([real_b, real_b[::-1]]))
  assert floor["real_baseline_frechet_distance"] == pytest.approx(0, abs=1e-3)  # n-1 vs 2n-1
  assert floor["real_baseline_frechet_distance"] < r["frechet_distance"]
  # The other direction's target is A, whatever the majority of its real images.
  r = translation_report(space, coloured(0, 10), coloured(4, 6), real_b, "A", devices=devices)
  assert r["target_class"] == "A"
  assert r["target_class_share"] == {"translated": 0.0, "untranslated": 0.2, "real_target": 0.4}
  # A classifier of other classes scores against the real target images' commonest class.
  other = FeatureSpace("c", "c", space.apply, {}, 2, ("red", "blue"))
  r = translation_report(other, coloured(4, 6), coloured(4, 6), real_a, "A", devices=devices)
  assert r["target_class"] == "blue" and r["target_class_share"]["real_target"] == 0.6


def write_two_domains(root, rng, size=16):
  """trainA/testA reddish, trainB/testB bluish, overlapping enough to make a classifier err."""
  from PIL import Image
  for split, n in (("train", 24), ("test", 10)):
    for d, channel in (("A", 0), ("B", 2)):
      os.makedirs(root / f"{split}{d}")
      for i in range(n):
        img = rng.integers(0, 160, (size, size, 3))
        img[..., channel] += rng.integers(0, 60)
        Image.fromarray(img.astype(np.uint8)).save(root / f"{split}{d}" / f"{i}.png")
  return str(root)


def test_cyclegan_evaluate_reports_the_domain_classifiers_own_test_accuracy(tmp_path):
  """The score's ceiling, computed from the CycleGAN report's predictions on the real test
  images, equals the classifier's accuracy from its own evaluation (another code path)."""
  dataset = write_two_domains(tmp_path / "data", np.random.default_rng(0))
  from jaxgan.configs import domain_classifier
  clf = set_fields(domain_classifier.get_config(), {
      "dataset": dataset, "image_size": 16, "cache_dir": "none", "num_devices": 1,
      "progress_bar": False, "model__num_blocks": (1,), "model__nf": 4, "augment__pad": 2,
      "batch_size": 8, "num_epochs": 1, "num_train_steps": 3, "eval_every_epochs": 0})
  experiment.train_and_evaluate(clf, str(tmp_path / "clf"))
  own = experiment.evaluate(str(tmp_path / "clf"), num_devices=1)
  assert own["num_examples"] == 20 and set(own["per_class_accuracy"]) == {"A", "B"}

  gan = tiny_cyclegan_config(dataset, train_subset=-1, load_size=16, image_size=16,
                             model__n_layers_d=1, num_train_steps=2)
  experiment.train_and_evaluate(gan, str(tmp_path / "gan"))
  r = experiment.evaluate(str(tmp_path / "gan"), num_devices=1,
                          features=f"darknet:{tmp_path / 'clf'}")
  assert r["classifier_accuracy"] == pytest.approx(own["accuracy"], abs=1e-6)
  assert r["AtoB"]["target_class"] == "B" and r["BtoA"]["target_class"] == "A"
  per_class = own["per_class_accuracy"]
  assert r["AtoB"]["target_class_share"]["real_target"] == pytest.approx(per_class["B"])
  assert r["AtoB"]["target_class_share"]["untranslated"] == pytest.approx(1 - per_class["A"])
  assert "domain classifier on" in r["feature_space_description"]
  assert r["AtoB"]["real_baseline_frechet_distance"] >= 0  # trainB against testB
  # Two folders given to evaluate have no training images apart from them: no floor.
  two = f"{dataset}/testA,{dataset}/testB"
  r = experiment.evaluate(str(tmp_path / "gan"), dataset=two, num_devices=1,
                          features=f"darknet:{tmp_path / 'clf'}")
  assert r["num_a"] == r["num_b"] == 10 and "real_baseline_kid" not in r["BtoA"]
  assert r["classifier_accuracy"] == pytest.approx(own["accuracy"], abs=1e-6)
  # A copy of the test folders alone: scored, without the floor.
  import shutil
  for d in ("testA", "testB"):
    shutil.copytree(f"{dataset}/{d}", tmp_path / "tests_only" / d)
  r = experiment.evaluate(str(tmp_path / "gan"), dataset=str(tmp_path / "tests_only"),
                          num_devices=1, features=f"darknet:{tmp_path / 'clf'}")
  assert r["split"] == "testA/testB" and "real_baseline_kid" not in r["AtoB"]
  assert r["classifier_accuracy"] == pytest.approx(own["accuracy"], abs=1e-6)


def test_wgan_on_a_flat_archive_trains_without_and_is_measured_on_its_held_out_images(tmp_path):
  rng = np.random.default_rng(0)
  faces = [rng.integers(0, 256, (21, 17, 3), dtype=np.uint8) for _ in range(40)]  # not square
  archive = write_tar(tmp_path / "faces.tar.gz",
                      {f"images/{i:06d}.jpg": png_bytes(x) for i, x in enumerate(faces)})
  config = tiny_wgan_config(archive, held_out=4, num_train_steps=2, batch_size=4)
  workdir = str(tmp_path / "run")
  experiment.train_and_evaluate(config, workdir)
  out = experiment.evaluate(workdir, num_samples=8, num_devices=1)
  assert out["num_held_out"] == 4 and out["num_train"] == 36
  assert out["held_out_images"].startswith("4 of the 40 images, held out of training")
  assert out["reference"] == "held-out real images" and "memorisation" in out
  assert np.isfinite(out["real_baseline_frechet_distance"])  # (its meaning: test_gan_metrics)
  from jaxgan.wgan import WGANTask
  assert WGANTask.build(config, jax.local_devices()[:1]).num_images == 36


def test_labels_and_held_out_are_checked(tmp_path):
  from jaxgan.experiment import validate_config
  with pytest.raises(ConfigError, match="labels"):
    validate_config(tiny_config("x", labels="rotations"), 1)
  with pytest.raises(ConfigError, match="held_out must be >= 0"):
    validate_config(tiny_config("x", held_out=-1), 1)
