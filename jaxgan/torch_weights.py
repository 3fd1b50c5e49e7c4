"""Read PyTorch weight files (`torch.save` of a state dict) without PyTorch.

Both of torch's formats are read: the zip archive of torch >= 1.6
(`<name>/data.pkl` plus one raw file per storage) and the older sequence of
pickles followed by the raw storages. Only plain tensors, parameters and
(ordered) dicts are accepted: the unpickler resolves no other classes, so a
file cannot run code. `.npz` files holding the same names work too.
"""
import collections
import io
import pickle
import struct
import zipfile

import numpy as np

_DTYPES = {
    "FloatStorage": np.float32, "DoubleStorage": np.float64, "HalfStorage": np.float16,
    "LongStorage": np.int64, "IntStorage": np.int32, "ShortStorage": np.int16,
    "CharStorage": np.int8, "ByteStorage": np.uint8, "BoolStorage": np.bool_,
}
_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C


class TorchFileError(ValueError):
  pass


class _StorageType:
  def __init__(self, name):
    if name not in _DTYPES:
      raise TorchFileError(f"unsupported tensor storage {name}")
    self.dtype = np.dtype(_DTYPES[name])


def _tensor_from_storage(storage, offset, size, stride, *unused):
  storage = np.asarray(storage)
  if not size:
    return storage[offset:offset + 1].reshape(()).copy()
  item = storage.itemsize
  view = np.lib.stride_tricks.as_strided(storage[offset:], tuple(size),
                                         tuple(s * item for s in stride))
  return np.array(view)


def _rebuild_parameter(data, *unused):
  return data


class _Unpickler(pickle.Unpickler):
  def __init__(self, file, load_storage):
    super().__init__(file)
    self._load_storage = load_storage

  def find_class(self, module, name):
    if module == "collections" and name == "OrderedDict":
      return collections.OrderedDict
    if module == "torch._utils" and name == "_rebuild_tensor_v2":
      return _rebuild_tensor_v2
    if module == "torch._utils" and name == "_rebuild_parameter":
      return _rebuild_parameter
    if module == "torch" and name.endswith("Storage"):
      return _StorageType(name)
    raise TorchFileError(f"the file refers to {module}.{name}, which a weights file should not")

  def persistent_load(self, pid):
    if not (isinstance(pid, tuple) and pid and pid[0] == "storage"):
      raise TorchFileError(f"unexpected persistent id {pid!r}")
    return self._load_storage(pid)


def _load_zip(path: str) -> dict:
  with zipfile.ZipFile(path) as z:
    names = z.namelist()
    pkl = next((n for n in names if n.endswith("/data.pkl") or n == "data.pkl"), None)
    if pkl is None:
      raise TorchFileError("a zip file without data.pkl is not a torch.save file")
    prefix = pkl[:-len("data.pkl")]

    def load_storage(pid):
      _, storage_type, key, _, numel = pid[:5]
      raw = z.read(f"{prefix}data/{key}")
      return np.frombuffer(raw, storage_type.dtype, count=numel)

    with z.open(pkl) as f:
      return _Unpickler(io.BytesIO(f.read()), load_storage).load()


def _load_legacy(path: str) -> dict:
  with open(path, "rb") as f:
    unpickle = lambda loader=None: _Unpickler(f, loader or (lambda pid: None)).load()
    if unpickle() != _LEGACY_MAGIC:
      raise TorchFileError("not a PyTorch file (no magic number)")
    unpickle()  # protocol version
    unpickle()  # system info
    storages = {}

    def load_storage(pid):
      _, storage_type, key, _, numel, view = (tuple(pid) + (None,))[:6]
      if view is not None:
        raise TorchFileError("storage views are not supported")
      storages.setdefault(key, [storage_type.dtype, numel, None])
      return _Lazy(storages, key)

    result = unpickle(load_storage)
    keys = unpickle()
    for key in keys:
      (numel,) = struct.unpack("<q", f.read(8))
      dtype = storages[key][0]
      data = f.read(numel * dtype.itemsize)
      if len(data) != numel * dtype.itemsize:
        raise TorchFileError("the file ends early (truncated download?)")
      storages[key][2] = np.frombuffer(data, dtype)
  return _resolve(result)


class _Lazy:
  """A legacy storage, whose bytes come after the pickle that refers to it."""

  def __init__(self, storages, key):
    self.storages, self.key = storages, key


def _resolve(obj):
  if isinstance(obj, _LazyTensor):
    return obj.build()
  if isinstance(obj, dict):
    return collections.OrderedDict((k, _resolve(v)) for k, v in obj.items())
  return obj


class _LazyTensor:
  def __init__(self, storage, args):
    self.storage, self.args = storage, args

  def build(self):
    return _tensor_from_storage(self.storage.storages[self.storage.key][2], *self.args)


def _rebuild_tensor_v2(storage, *args):
  if isinstance(storage, _Lazy):  # legacy files: the bytes are read after the pickle
    return _LazyTensor(storage, args)
  return _tensor_from_storage(storage, *args)


def load_state_dict(path: str) -> dict:
  """{name: numpy array} from a torch.save file (either format) or an .npz."""
  try:
    if path.endswith(".npz"):
      with np.load(path) as z:
        return {k: z[k] for k in z.files}
    sd = _load_zip(path) if zipfile.is_zipfile(path) else _load_legacy(path)
  except TorchFileError:
    raise
  except Exception as e:  # truncated, garbage, not a pickle
    raise TorchFileError(f"{type(e).__name__}: {e}") from e
  if isinstance(sd, dict) and "state_dict" in sd and isinstance(sd["state_dict"], dict):
    sd = sd["state_dict"]
  if not isinstance(sd, dict):
    raise TorchFileError(f"expected a state dict, found {type(sd).__name__}")
  return {k: np.asarray(v) for k, v in _resolve(sd).items()}
