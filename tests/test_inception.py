"""The FID InceptionV3 and its weight files (written here in torch.save's zip format
without PyTorch; the reader was also checked against real torch.save files, both formats)."""
import collections
import io
import pickle
import sys
import types
import zipfile

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util

from jaxgan.errors import ConfigError
from jaxgan.features import feature_space
from jaxgan.models.inception import FIDInceptionV3, _torch_name
from jaxgan.models.layers import count_params


def torch_state_dict_shapes():
  template = jax.eval_shape(lambda: FIDInceptionV3().init(jax.random.PRNGKey(0),
                                                          jnp.zeros((1, 75, 75, 3))))
  shapes = {}
  for collection in ("params", "batch_stats"):
    for path, leaf in traverse_util.flatten_dict(template[collection]).items():
      key, perm = _torch_name(collection, path)
      shapes[key] = tuple(leaf.shape[perm.index(i)] for i in range(len(perm))) if perm \
          else leaf.shape
  return shapes


def write_torch_zip(path, state_dict):
  """torch.save's zip layout: archive/data.pkl referring to archive/data/<key> storages."""
  torch_mod, utils = types.ModuleType("torch"), types.ModuleType("torch._utils")

  class FloatStorage:
    pass

  def _rebuild_tensor_v2(*args):
    raise AssertionError("only pickled here")

  FloatStorage.__module__, FloatStorage.__qualname__ = "torch", "FloatStorage"
  _rebuild_tensor_v2.__module__, _rebuild_tensor_v2.__qualname__ = "torch._utils", \
      "_rebuild_tensor_v2"
  torch_mod.FloatStorage, utils._rebuild_tensor_v2, torch_mod._utils = \
      FloatStorage, _rebuild_tensor_v2, utils

  class Storage:
    def __init__(self, key, numel):
      self.key, self.numel = key, numel

  class Tensor:
    def __init__(self, key, array):
      self.key, self.array = key, array

    def __reduce__(self):
      a = self.array
      stride = tuple(s // a.itemsize for s in a.strides)
      return _rebuild_tensor_v2, (Storage(self.key, a.size), 0, a.shape, stride, False,
                                  collections.OrderedDict())

  class Pickler(pickle.Pickler):
    def persistent_id(self, obj):
      if isinstance(obj, Storage):
        return ("storage", FloatStorage, obj.key, "cpu", obj.numel)
      return None

  arrays = {k: np.ascontiguousarray(v, np.float32) for k, v in state_dict.items()}
  tensors = collections.OrderedDict((k, Tensor(str(i), a)) for i, (k, a) in
                                    enumerate(arrays.items()))
  saved = {name: sys.modules.get(name) for name in ("torch", "torch._utils")}
  sys.modules.update({"torch": torch_mod, "torch._utils": utils})
  try:
    buf = io.BytesIO()
    Pickler(buf, protocol=2).dump(tensors)
  finally:
    for name, module in saved.items():
      if module is None:
        sys.modules.pop(name, None)
      else:
        sys.modules[name] = module
  with zipfile.ZipFile(path, "w") as z:
    z.writestr("archive/data.pkl", buf.getvalue())
    z.writestr("archive/version", "3\n")
    for t in tensors.values():
      z.writestr(f"archive/data/{t.key}", t.array.tobytes())


def test_standard_architecture_parameter_count_and_shapes():
  model = FIDInceptionV3()
  variables = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), jnp.zeros((1, 75, 75, 3))))
  total = count_params(variables["params"])
  # torchvision's inception_v3 has 27,161,264 parameters; less the auxiliary head
  # (3,326,696) and its 1000-way classifier (2,049,000) leaves the FID feature network.
  assert total - count_params(variables["params"]["fc"]) == 27_161_264 - 3_326_696 - 2_049_000
  assert total == 21_785_568 + 2048 * 1008 + 1008
  f, logits = jax.eval_shape(model.apply, variables, jnp.zeros((2, 40, 56, 3), jnp.uint8))
  assert f.shape == (2, 2048) and logits.shape == (2, 1008)
  assert len(torch_state_dict_shapes()) == 472  # 94 x (conv + 4 BatchNorm arrays) + fc weight, bias


def test_weights_file_in_torch_zip_format_loads_onto_the_right_layers(tmp_path):
  rng = np.random.default_rng(0)
  sd = {k: rng.normal(size=s).astype(np.float32) * 0.05 for k, s in torch_state_dict_shapes().items()}
  for k in sd:
    if k.endswith("running_var"):
      sd[k] = np.abs(sd[k]) + 1.0
  path = str(tmp_path / "pt_inception.pth")
  write_torch_zip(path, sd)
  space = feature_space(f"inception:{path}")
  p, s = space.variables["params"], space.variables["batch_stats"]
  np.testing.assert_array_equal(p["Mixed_7c"]["branch3x3_2a"]["conv"]["kernel"],
                                sd["Mixed_7c.branch3x3_2a.conv.weight"].transpose(2, 3, 1, 0))
  np.testing.assert_array_equal(p["fc"]["kernel"], sd["fc.weight"].T)
  np.testing.assert_array_equal(p["Conv2d_1a_3x3"]["bn"]["scale"], sd["Conv2d_1a_3x3.bn.weight"])
  np.testing.assert_array_equal(s["Mixed_6e"]["branch7x7dbl_5"]["bn"]["var"],
                                sd["Mixed_6e.branch7x7dbl_5.bn.running_var"])
  images = rng.integers(0, 256, (3, 30, 20, 3), dtype=np.uint8)
  feats, classes = space(images, batch_size=2, devices=jax.local_devices()[:1])
  assert feats.shape == (3, 2048) and np.isfinite(feats).all() and classes.max() < 1008
  np.savez(tmp_path / "same.npz", **sd)  # the same state dict as .npz
  f2, _ = feature_space(f"inception:{tmp_path / 'same.npz'}")(images, 4, jax.local_devices()[:1])
  np.testing.assert_allclose(f2, feats, rtol=1e-5, atol=1e-6)


def test_missing_corrupt_or_wrong_weights_files_are_clear_errors(tmp_path):
  with pytest.raises(ConfigError, match="no such file.*pytorch-fid.*never downloads"):
    feature_space(f"inception:{tmp_path / 'nope.pth'}")
  (tmp_path / "garbage.pth").write_bytes(b"\x80\x02not really a pickle" * 10)
  with pytest.raises(ConfigError, match="could not be used"):
    feature_space(f"inception:{tmp_path / 'garbage.pth'}")
  shapes = torch_state_dict_shapes()
  good = str(tmp_path / "good.pth")
  write_torch_zip(good, {k: np.zeros(s, np.float32) for k, s in shapes.items()})
  data = open(good, "rb").read()
  (tmp_path / "truncated.pth").write_bytes(data[:len(data) // 2])
  with pytest.raises(ConfigError, match="could not be used"):
    feature_space(f"inception:{tmp_path / 'truncated.pth'}")
  other = {k: np.zeros(s, np.float32) for k, s in list(shapes.items())[:-5]}
  other["Conv2d_1a_3x3.conv.weight"] = np.zeros((32, 3, 5, 5), np.float32)
  write_torch_zip(str(tmp_path / "other.pth"), other)
  with pytest.raises(ConfigError, match="not the FID InceptionV3 weights.*missing"):
    feature_space(f"inception:{tmp_path / 'other.pth'}")
