"""translate.py --weights: generators saved by the reference CycleGAN repository.

The PyTorch twin (benchmarks/torch_reference.py) builds the reference's ResnetGenerator
layer for layer, so its `torch.save`d state dict has the reference's key layout; jaxgan
must read it (both file formats, without PyTorch) and compute the same function.
"""
import os
import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import jax  # noqa: E402

from benchmarks import torch_reference as tr  # noqa: E402
from jaxgan.cyclegan import _compiled_generator  # noqa: E402
from jaxgan.translation import load_pretrained_generator, translate_folder  # noqa: E402
from jaxgan.errors import ConfigError  # noqa: E402
from jaxgan.images import from_uint8  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The names in a resnet_9blocks generator file of pytorch-CycleGAN-and-pix2pix (e.g.
# horse2zebra_pretrained/latest_net_G.pth), written out rather than derived.
REFERENCE_9_BLOCK_CONVS = (["model.1", "model.4", "model.7"]
                           + [f"model.{i}.conv_block.{j}" for i in range(10, 19) for j in (1, 5)]
                           + ["model.19", "model.22", "model.26"])


def twin(ngf=8, n_blocks=3, seed=0):
  """The reference-layout torch generator with random weights and biases (the biases too,
  so that a wrong mapping of any tensor shows)."""
  torch.manual_seed(seed)
  g = tr.ResnetGenerator(ngf, n_blocks).eval()
  with torch.no_grad():
    for name, p in g.named_parameters():
      p.copy_(torch.randn_like(p) * (0.1 if name.endswith("bias") else 0.05))  # tanh unsaturated
  return g


def save(state_dict, path, legacy=False):
  torch.save(state_dict, path, _use_new_zipfile_serialization=not legacy)
  return str(path)


def torch_output(g, images_uint8):
  x = torch.from_numpy(np.asarray(from_uint8(images_uint8))).permute(0, 3, 1, 2)
  with torch.no_grad():
    return g(x).permute(0, 2, 3, 1).numpy()


def test_the_twin_saves_the_reference_key_layout():
  keys = set(tr.ResnetGenerator().state_dict())
  assert keys == {f"{c}.{k}" for c in REFERENCE_9_BLOCK_CONVS for k in ("weight", "bias")}


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
def test_weights_file_gives_the_twins_output(tmp_path, legacy):
  g = twin()
  generator, params = load_pretrained_generator(save(g.state_dict(), tmp_path / "G.pth", legacy))
  assert (generator.ngf, generator.n_blocks, generator.output_nc) == (8, 3, 3)
  images = np.random.default_rng(0).integers(0, 256, (2, 20, 28, 3), dtype=np.uint8)
  ours = np.asarray(generator.apply({"params": params}, from_uint8(images)))
  # Float32 rounding of two frameworks' convolutions (4e-6 here; the tolerance of
  # test_torch_reference); a wrong mapping of any tensor moves outputs by ~0.1 or more.
  np.testing.assert_allclose(ours, torch_output(g, images), atol=1e-4)


def test_older_files_dropout_and_dataparallel_prefixes_load(tmp_path):
  g = twin(n_blocks=2)
  sd = g.state_dict()
  ref_gen, ref_params = load_pretrained_generator(save(sd, tmp_path / "plain.pth"))
  # Files from PyTorch < 0.4 hold InstanceNorm running statistics, which the reference drops;
  # a generator trained with dropout has its second block conv at conv_block.6; DataParallel
  # prefixes "module.".
  odd = {}
  for k, v in sd.items():
    k = k.replace("conv_block.5", "conv_block.6")
    odd[f"module.{k}"] = v
  odd["module.model.2.running_mean"] = torch.zeros(8)
  odd["module.model.2.running_var"] = torch.ones(8)
  generator, params = load_pretrained_generator(save(odd, tmp_path / "odd.pth"))
  assert generator == ref_gen
  jax.tree_util.tree_map(np.testing.assert_array_equal, params, ref_params)


def test_files_that_are_not_resnet_generators_get_one_clear_line(tmp_path):
  sd = twin(n_blocks=3).state_dict()
  cases = {
      "discriminator": ({f"model.{i}.weight": torch.zeros(8, 3, 4, 4) for i in (0, 2, 5, 8, 11)},
                        "PatchGAN discriminator"),
      "unet": ({"model.model.0.weight": torch.zeros(8, 3, 4, 4)}, "U-Net generator"),
      "other": ({"fc.weight": torch.zeros(2, 2)}, "no ResNet generator: its 1 tensors are named"),
      # block 1 of 3 missing: two blocks are found, then layers that do not follow them
      "gap": ({k: v for k, v in sd.items() if not k.startswith("model.11.")},
              "found 1 residual blocks .* unexpected model.12"),
      "no_head": ({k: v for k, v in sd.items() if not k.startswith("model.20.")},
                  "found 3 residual blocks .* missing model.20.bias"),
      "wrong_width": ({**sd, "model.4.weight": torch.zeros(16, 7, 3, 3)},
                      r"model.4.weight has shape \(16, 7, 3, 3\)"),
      "grayscale": ({**sd, "model.1.weight": torch.zeros(8, 1, 7, 7)}, "1-channel inputs"),
  }
  for name, (state_dict, message) in cases.items():
    path = save(state_dict, tmp_path / f"{name}.pth")
    with pytest.raises(ConfigError, match=message):
      load_pretrained_generator(path)
  (tmp_path / "junk.pth").write_bytes(b"\x80\x02junk")
  with pytest.raises(ConfigError, match="not a readable PyTorch weights file"):
    load_pretrained_generator(str(tmp_path / "junk.pth"))
  with pytest.raises(ConfigError, match="no such file"):
    load_pretrained_generator(str(tmp_path / "missing.pth"))
  from PIL import Image
  Image.new("RGB", (8, 8)).save(tmp_path / "photo.png")
  out = subprocess.run([sys.executable, "translate.py", f"--weights={tmp_path}/unet.pth",
                        f"--input={tmp_path}/photo.png", f"--output={tmp_path}/o"], cwd=ROOT,
                       capture_output=True, text=True, timeout=120)
  assert out.returncode == 2
  errors = [line for line in out.stderr.splitlines() if line.startswith("error:")]
  assert len(errors) == 1 and "U-Net generator" in errors[0], out.stderr
  assert not os.path.exists(tmp_path / "o")


def test_translate_py_with_weights_one_image_or_a_folder_compiles_once_per_size(tmp_path):
  from PIL import Image
  g = twin()
  weights = save(g.state_dict(), tmp_path / "latest_net_G.pth")
  rng = np.random.default_rng(1)
  photos = tmp_path / "photos"
  photos.mkdir()
  for i in range(3):
    Image.fromarray(rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)).save(photos / f"{i}.png")

  # One image file, from the command line: the twin's output, rounded to uint8.
  out = subprocess.run([sys.executable, "translate.py", f"--weights={weights}",
                        f"--input={photos}/0.png", f"--output={tmp_path}/one"], cwd=ROOT,
                       capture_output=True, text=True, timeout=300)
  assert out.returncode == 0, out.stderr
  assert "1 translated" in out.stdout and os.listdir(tmp_path / "one") == ["0.png"]
  got = np.asarray(Image.open(tmp_path / "one" / "0.png"), np.float64)
  want = (torch_output(g, np.asarray(Image.open(photos / "0.png"))[None])[0] + 1) * 127.5
  assert np.abs(got - want).max() <= 1.0

  # A folder in-process: three images of one size compile the generator once; a fourth of
  # another size once more.
  generator, _ = load_pretrained_generator(weights)
  _compiled_generator.cache_clear()
  result = translate_folder(None, str(photos), str(tmp_path / "all"), weights=weights,
                            progress=False)
  assert result["written"] == 3 and result["direction"] is None
  assert _compiled_generator(generator)._cache_size() == 1
  Image.fromarray(rng.integers(0, 256, (13, 9, 3), dtype=np.uint8)).save(photos / "odd.png")
  translate_folder(None, str(photos), str(tmp_path / "all"), weights=weights, progress=False)
  assert _compiled_generator(generator)._cache_size() == 2
  assert np.asarray(Image.open(tmp_path / "all" / "odd.png")).shape == (13, 9, 3)

  # The input image itself is never the output; --weights and --workdir exclude each other.
  with pytest.raises(ConfigError, match="overwrite the input image"):
    translate_folder(None, str(photos / "1.png"), str(photos), weights=weights, progress=False)
  with pytest.raises(ConfigError, match="either --workdir"):
    translate_folder(str(tmp_path), str(photos), str(tmp_path / "x"), weights=weights)
