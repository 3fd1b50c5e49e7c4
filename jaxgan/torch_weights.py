"""Read PyTorch weight files (`torch.save` of a state dict) without PyTorch.

Both of torch's formats are read: the zip archive of torch >= 1.6
(`<name>/data.pkl` plus one raw file per storage) and the older sequence of
pickles followed by the raw storages. Only plain tensors, parameters and
(ordered) dicts are accepted: the unpickler resolves no other classes, so a
file cannot run code. `.npz` files holding the same names work too.

A weights file may come from anywhere, so nothing in it is trusted: every
tensor's size, stride and offset is checked against its storage before numpy
views it, and what a file can make the reader allocate (the bytes it unpacks,
the objects its pickle builds, the arrays returned) is capped at `MAX_BYTES`
(4 GiB; `load_state_dict(path, max_bytes=...)` for a larger file you trust).
Every problem is one `TorchFileError` naming the file, the problem and the fix.
"""
import collections
import io
import math
import os
import pickle
import struct
import zipfile

import numpy as np

from jaxgan.errors import UserError

MAX_BYTES = 4 << 30
"""The most memory a weights file may make `load_state_dict` take: the tensor data it
unpacks, the objects its pickle builds and the arrays returned, together."""

# A pickle byte can build a whole object (EMPTY_DICT: a 64-byte dict and its stack slot;
# measured 72 bytes of memory per byte at worst), so each byte unpickled counts this much.
_PICKLE_BYTE_COST = 80
_MAX_LINE = 1 << 16  # text opcodes (GLOBAL's names) are short; a longer line is damage
_MAX_INDEX = 1 << 63  # torch's sizes, strides and offsets are int64
_MAX_NDIM = 64  # numpy's limit
_DAMAGED = "the file is damaged, cut short or not written by torch.save; download or save it again"

_DTYPES = {
    "FloatStorage": np.float32, "DoubleStorage": np.float64, "HalfStorage": np.float16,
    "LongStorage": np.int64, "IntStorage": np.int32, "ShortStorage": np.int16,
    "CharStorage": np.int8, "ByteStorage": np.uint8, "BoolStorage": np.bool_,
}
_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_KEY_TYPES = (str, bytes, int, float, bool, type(None))  # hashing these cannot recurse


class TorchFileError(UserError, ValueError):
  """A weights file that cannot be read: damaged, crafted, too large or not a state dict."""


def _kind(x) -> str:
  name = type(x).__name__
  return f"{'an' if name[0] in 'AEIOUaeiou' else 'a'} {name}"


def _short(x, limit: int = 60) -> str:
  """A value from the file for a message: it may be huge, deeply nested or an int too long
  to print, so only scalars and short tuples of ints are shown, the rest by type."""
  def scalar(v):
    if type(v) in (str, bytes, float, bool, type(None)) or (type(v) is int and abs(v) < 1 << 64):
      return repr(v)
    return _kind(v)
  if type(x) in (tuple, list) and len(x) <= 8 and all(type(v) is int for v in x):
    text = repr(tuple(scalar(v) for v in x)).replace("'", "")
  else:
    text = scalar(x)
  return text if len(text) <= limit else text[:limit - 3] + "..."


def _size(nbytes: int) -> str:
  return f"{nbytes / 2**30:.3g} GiB" if nbytes >= 2**30 else f"{nbytes / 2**20:.3g} MiB"


class _Budget:
  """What one file may still make the reader allocate."""

  def __init__(self, limit: int):
    self.limit, self.left = limit, limit

  def take(self, nbytes: int, what: str):
    if nbytes > self.left:
      raise TorchFileError(
          f"{what} would take the reader past its limit of {_size(self.limit)} "
          f"(max_bytes, default jaxgan.torch_weights.MAX_BYTES), which guards against crafted "
          "files (a zip bomb); if you trust this file, pass a larger max_bytes= to "
          "load_state_dict")
    self.left -= nbytes


class _Source:
  """A file as the unpickler reads it: no read past the end of the file (a length in a
  pickle must not size a buffer), and, with a budget, each byte charged for the objects it
  may build."""

  def __init__(self, f, size: int, budget: _Budget | None = None):
    self.f, self.left, self.budget = f, size, budget

  def read(self, n: int) -> bytes:
    return self._charge(self.f.read(max(0, min(n, self.left))))

  def readline(self, limit: int = _MAX_LINE) -> bytes:
    return self._charge(self.f.readline(max(0, min(limit, self.left))))

  def _charge(self, data: bytes) -> bytes:
    self.left -= len(data)
    if self.budget is not None:
      self.budget.take(len(data) * _PICKLE_BYTE_COST, "the objects of the file's pickle")
    return data

  def charged(self, budget: _Budget) -> "_Source":
    return _Source(self, self.left, budget)


class _StorageType:
  def __init__(self, name):
    if name not in _DTYPES:
      raise TorchFileError(f"unsupported tensor storage {_short(name)}: jaxgan reads float, "
                           "int and bool tensors; convert the tensors to float32 and save again")
    self.dtype = np.dtype(_DTYPES[name])


class _Storage:
  """A storage the file's tensors view: its element type and count come from the pickle,
  its bytes from the file (the legacy format stores them after the pickle)."""

  def __init__(self, key: str, dtype: np.dtype, numel: int):
    self.key, self.dtype, self.numel, self.array = key, dtype, numel, None

  def set_bytes(self, raw: bytes):
    if len(raw) < self.numel * self.dtype.itemsize:
      raise TorchFileError(f"storage {_short(self.key)} holds {len(raw)} bytes, too few for its "
                           f"{self.numel} {self.dtype} elements; {_DAMAGED}")
    self.array = np.frombuffer(raw, self.dtype, count=self.numel)


def _storage_id(pid) -> tuple[np.dtype, str, int]:
  """(element type, key, element count) from a persistent id
  ('storage', type, key, location, numel[, view])."""
  if not (type(pid) is tuple and len(pid) in (5, 6) and pid[0] == "storage"):
    raise TorchFileError(f"unexpected persistent id {_short(pid)}; {_DAMAGED}")
  _, storage_type, key, _, numel, *view = pid
  if view and view[0] is not None:
    raise TorchFileError("storage views are not supported; save the state dict with torch >= 1.6")
  if not (isinstance(storage_type, _StorageType) and type(key) is str and _is_index(numel)):
    raise TorchFileError(f"a storage of {_kind(storage_type)}, key {_short(key)} and "
                         f"{_short(numel)} elements; {_DAMAGED}")
  return storage_type.dtype, key, numel


def _is_index(x) -> bool:
  return type(x) is int and 0 <= x < _MAX_INDEX


class _Tensor:
  """A tensor's view of its storage, checked against it; built once the bytes are read."""

  def __init__(self, storage: _Storage, offset, size, stride):
    if not (_is_index(offset) and type(size) in (tuple, list) and type(stride) in (tuple, list)
            and len(size) == len(stride) <= _MAX_NDIM and all(map(_is_index, size))
            and all(map(_is_index, stride))):
      raise TorchFileError(f"a tensor with offset {_short(offset)}, size {_short(size)} and "
                           f"stride {_short(stride)} (non-negative integers, one stride per "
                           f"dimension, at most {_MAX_NDIM} dimensions, expected); {_DAMAGED}")
    # numpy's as_strided reads wherever the strides point: a view past its storage would
    # read (or crash on) memory outside the file's data.
    last = offset + sum((n - 1) * s for n, s in zip(size, stride))
    if 0 not in size and last >= storage.numel:
      raise TorchFileError(f"a tensor of size {_short(size)}, stride {_short(stride)} and offset "
                           f"{offset} reaches element {last} of storage {_short(storage.key)}, "
                           f"which has {storage.numel}; {_DAMAGED}")
    self.storage, self.offset, self.shape = storage, offset, tuple(size)
    self.stride = tuple(s if n > 1 else 0 for n, s in zip(size, stride))  # unused strides

  def build(self, budget: _Budget) -> np.ndarray:
    dtype = self.storage.dtype
    budget.take(math.prod(self.shape) * dtype.itemsize, f"a tensor of shape {_short(self.shape)}")
    if 0 in self.shape:
      return np.zeros(self.shape, dtype)
    if self.storage.array is None:
      raise TorchFileError(f"storage {_short(self.storage.key)} has no data in the file; "
                           f"{_DAMAGED}")
    view = np.lib.stride_tricks.as_strided(self.storage.array[self.offset:], self.shape,
                                           tuple(s * dtype.itemsize for s in self.stride))
    return np.array(view)


def _rebuild_tensor_v2(storage, offset, size, stride, *unused):
  if not isinstance(storage, _Storage):
    raise TorchFileError(f"a tensor whose storage is {_kind(storage)}; {_DAMAGED}")
  return _Tensor(storage, offset, size, stride)


def _rebuild_parameter(data, *unused):
  return data


def _ordered_dict(*args):
  """An OrderedDict as pickled: no arguments (Python 3) or one list of key-value pairs
  (Python 2), whose keys must be safe to hash."""
  if len(args) > 1:
    raise TorchFileError(f"an OrderedDict built from {len(args)} arguments; {_DAMAGED}")
  d = collections.OrderedDict()
  _set_items(d, [x for pair in (args[0] if args else ()) for x in _pair(pair)])
  return d


def _pair(pair):
  if type(pair) not in (tuple, list) or len(pair) != 2:
    raise TorchFileError(f"an OrderedDict item {_short(pair)}; {_DAMAGED}")
  return pair


def _set_items(d, items):
  """d[k] = v for the flat k, v, k, v... a pickle's SETITEMS gives. Only scalar keys: a key
  nested a million tuples deep overflows the C stack when hashed, crashing the process."""
  if not isinstance(d, dict) or len(items) % 2:
    raise TorchFileError(f"dict items set on {_short(d)}; {_DAMAGED}")
  for key, value in zip(items[::2], items[1::2]):
    if type(key) not in _KEY_TYPES:
      raise TorchFileError(f"a dict key of type {type(key).__name__}; {_DAMAGED}")
    d[key] = value


class _Dispatch(dict):
  def __missing__(self, code):
    raise TorchFileError(f"pickle opcode {bytes([code])!r}, which a state dict does not use; "
                         f"{_DAMAGED}")


_PLAIN_OPCODES = """PROTO FRAME STOP MARK POP POP_MARK DUP NONE NEWTRUE NEWFALSE INT BININT BININT1
    BININT2 LONG LONG1 LONG4 FLOAT BINFLOAT STRING BINSTRING SHORT_BINSTRING UNICODE BINUNICODE
    SHORT_BINUNICODE BINUNICODE8 BINBYTES SHORT_BINBYTES BINBYTES8 EMPTY_TUPLE TUPLE TUPLE1
    TUPLE2 TUPLE3 EMPTY_LIST LIST APPEND APPENDS EMPTY_DICT GET BINGET LONG_BINGET PUT BINPUT
    LONG_BINPUT MEMOIZE GLOBAL STACK_GLOBAL REDUCE PERSID BINPERSID""".split()


class _Unpickler(pickle._Unpickler):
  """Python's pure-Python unpickler with only the opcodes a state dict needs. Not the C one:
  it sizes its memo from an index in the file (ten bytes can ask for 32 GiB) and hashes dict
  keys of any depth (a deeply nested key overflows the C stack)."""

  def __init__(self, source: _Source, load_storage):
    super().__init__(source)
    self._load_storage = load_storage

  def find_class(self, module, name):
    if module == "collections" and name == "OrderedDict":
      return _ordered_dict
    if module == "torch._utils" and name == "_rebuild_tensor_v2":
      return _rebuild_tensor_v2
    if module == "torch._utils" and name == "_rebuild_parameter":
      return _rebuild_parameter
    if module == "torch" and name.endswith("Storage"):
      return _StorageType(name)
    raise TorchFileError(f"the file refers to {_short(f'{module}.{name}', 80)}, which a weights "
                         "file should not (jaxgan runs no code from weights files); save "
                         "model.state_dict() alone")

  def persistent_load(self, pid):
    return self._load_storage(*_storage_id(pid))

  def _load_setitem(self):
    value, key = self.stack.pop(), self.stack.pop()
    _set_items(self.stack[-1], [key, value])

  def _load_setitems(self):
    items = self.pop_mark()
    _set_items(self.stack[-1], items)

  def _load_dict(self):
    d = {}
    _set_items(d, self.pop_mark())
    self.append(d)

  def _load_build(self):
    self.stack.pop()  # an OrderedDict's state: torch's _metadata, which no array needs
    if not isinstance(self.stack[-1], dict):
      raise TorchFileError(f"object state set on {_short(self.stack[-1])}; {_DAMAGED}")

  dispatch = _Dispatch({code: pickle._Unpickler.dispatch[code]
                        for code in (getattr(pickle, name)[0] for name in _PLAIN_OPCODES)})
  dispatch.update({pickle.SETITEM[0]: _load_setitem, pickle.SETITEMS[0]: _load_setitems,
                   pickle.DICT[0]: _load_dict, pickle.BUILD[0]: _load_build})


def _cached_storage(storages: dict, dtype, key, numel, read=None) -> _Storage:
  """The storage of this key, read once however many tensors view it."""
  storage = storages.get(key)
  if storage is None:
    storage = storages[key] = _Storage(key, dtype, numel)
    if read is not None:
      storage.set_bytes(read(key))
  elif (storage.dtype, storage.numel) != (dtype, numel):
    raise TorchFileError(f"storage {_short(key)} is described both as {storage.numel} "
                         f"{storage.dtype} and as {numel} {dtype} elements; {_DAMAGED}")
  return storage


def _read_member(z: zipfile.ZipFile, name: str, budget: _Budget) -> bytes:
  try:
    info = z.getinfo(name)
  except KeyError:
    raise TorchFileError(f"the archive has no {_short(name, 100)}; {_DAMAGED}") from None
  budget.take(info.file_size, f"{_short(name, 100)} ({info.file_size} bytes unpacked)")
  with z.open(info) as f:
    data = f.read(info.file_size + 1)  # bounded whatever zipfile makes of a lying header
  if len(data) != info.file_size:
    raise TorchFileError(f"{_short(name, 100)} unpacks to more or fewer bytes than the "
                         f"{info.file_size} its header says; {_DAMAGED}")
  return data


def _load_zip(path: str, budget: _Budget):
  with zipfile.ZipFile(path) as z:
    names = z.namelist()
    pkl = next((n for n in names if n.endswith("/data.pkl") or n == "data.pkl"), None)
    if pkl is None:
      raise TorchFileError("a zip file without data.pkl is not a torch.save file")
    prefix = pkl[:-len("data.pkl")]
    storages = {}
    read = lambda key: _read_member(z, f"{prefix}data/{key}", budget)
    data = _read_member(z, pkl, budget)
    source = _Source(io.BytesIO(data), len(data), budget)
    return _Unpickler(source, lambda *a: _cached_storage(storages, *a, read=read)).load()


def _load_legacy(path: str, budget: _Budget):
  with open(path, "rb") as raw:
    f = _Source(raw, os.fstat(raw.fileno()).st_size)
    unpickle = lambda load_storage=None: _Unpickler(f.charged(budget), load_storage).load()
    if unpickle() != _LEGACY_MAGIC:
      raise TorchFileError("not a PyTorch file (no magic number); save it with torch.save")
    unpickle()  # protocol version
    unpickle()  # system info
    storages = {}
    result = unpickle(lambda *a: _cached_storage(storages, *a))
    keys = unpickle()
    if (type(keys) is not list or any(type(key) is not str for key in keys)
        or any(key not in storages for key in keys)):
      raise TorchFileError(f"the list of storages does not match the tensors; {_DAMAGED}")
    for key in keys:
      _read_legacy_storage(f, storages[key], budget)
  return result


def _read_legacy_storage(f: _Source, storage: _Storage, budget: _Budget):
  header = f.read(8)
  if len(header) != 8:
    raise TorchFileError("the file ends early (truncated download?); download it again")
  (numel,) = struct.unpack("<q", header)
  nbytes = numel * storage.dtype.itemsize
  if numel != storage.numel or nbytes > f.left:
    raise TorchFileError(f"storage {_short(storage.key)} claims {numel} {storage.dtype} elements "
                         f"where its tensors expect {storage.numel} and {f.left} bytes of the "
                         f"file are left; {_DAMAGED}")
  budget.take(nbytes, f"storage {_short(storage.key)} ({nbytes} bytes)")
  storage.set_bytes(f.read(nbytes))


def _load_npz(path: str, budget: _Budget) -> dict:
  with zipfile.ZipFile(path) as z:
    for info in z.infolist():  # np.load unpacks each member whole
      budget.take(info.file_size, f"{_short(info.filename, 100)} ({info.file_size} bytes)")
  with np.load(path) as z:  # allow_pickle stays False: no object arrays, no code
    out = {k: z[k] for k in z.files}
  for key, value in out.items():
    if value.dtype.kind not in "biufc":
      raise TorchFileError(f"{_short(key)} holds {value.dtype} data where a tensor belongs; "
                           "save numeric arrays only")
  return out


def _arrays(obj, budget: _Budget) -> dict:
  """{name: array} of an unpickled state dict (or a checkpoint holding one as "state_dict")."""
  if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
    obj = obj["state_dict"]
  if not isinstance(obj, dict):
    raise TorchFileError(f"expected a state dict, found {type(obj).__name__}; save "
                         "model.state_dict()")
  out = {}
  for key, value in obj.items():
    if type(key) is not str:
      raise TorchFileError(f"a state dict key {_short(key)} is not a name; save "
                           "model.state_dict()")
    if not isinstance(value, _Tensor):
      raise TorchFileError(f"{_short(key)} holds {_short(value)} where a tensor belongs; save "
                           "model.state_dict(), whose values are all tensors")
    out[key] = value.build(budget)
  return out


def _describe(e: Exception) -> str:
  text = " ".join(str(e).split())[:200]  # one line, whatever the library put in it
  if not text:
    text = "the data ends early" if isinstance(e, EOFError) else "no details"
  return f"{type(e).__name__}: {text}"


def load_state_dict(path: str | os.PathLike, *, max_bytes: int | None = None) -> dict:
  """{name: numpy array} from a torch.save file (either format) or an .npz.

  max_bytes caps what the file may make this take (default `MAX_BYTES`, 4 GiB): raise it
  only for a larger file you trust. Anything wrong is one TorchFileError naming the file.
  """
  budget = _Budget(MAX_BYTES if max_bytes is None else max_bytes)
  path = os.fspath(path)
  try:
    if path.endswith(".npz"):
      return _load_npz(path, budget)
    load = _load_zip if zipfile.is_zipfile(path) else _load_legacy
    return _arrays(load(path, budget), budget)
  except TorchFileError as e:
    raise TorchFileError(f"{path}: {e}") from None
  except Exception as e:  # noqa: BLE001 - truncated, garbage, not a pickle, out of memory
    raise TorchFileError(f"{path}: {_describe(e)}; {_DAMAGED}") from e
