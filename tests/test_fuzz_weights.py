"""The PyTorch weights reader under hostile files: crafted views, bombs, random, cut and
mutated bytes. It either returns the file's tensors or raises one TorchFileError naming the
file, never another exception, never a crash, never more than a modest amount of memory.

The .pth files are built here byte by byte (a pickle assembler plus zipfile), so every field
can be set to a hostile value and the tests need no PyTorch; where torch is installed it
checks that the builder writes files torch itself reads."""
import io
import math
import os
import pickle
import struct
import subprocess
import sys
import tracemalloc
import zipfile

import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings, strategies as st  # noqa: E402

from jaxgan import torch_weights  # noqa: E402
from jaxgan.torch_weights import TorchFileError, load_state_dict  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(torch_weights.__file__)))
FUZZ_LIMIT = 64 << 20  # max_bytes for fuzzed files: no example may take more memory than this
FUZZ = dict(deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                  HealthCheck.too_slow])

# --- a .pth builder: pickle opcodes written out, so any field may be hostile -------------


def _u(s: str) -> bytes:
  b = s.encode()
  return b"X" + struct.pack("<I", len(b)) + b  # BINUNICODE


def _i(n: int) -> bytes:
  b = n.to_bytes((n.bit_length() + 8) // 8, "little", signed=True)
  return b"\x8a" + bytes([len(b)]) + b  # LONG1: any size or sign


def _t(items) -> bytes:
  return b"(" + b"".join(items) + b"t"  # MARK ... TUPLE


ODICT = b"ccollections\nOrderedDict\n)R"
REBUILD = b"ctorch._utils\n_rebuild_tensor_v2\n"
DTYPES = {"FloatStorage": np.float32, "LongStorage": np.int64, "BoolStorage": np.bool_,
          "HalfStorage": np.float16, "DoubleStorage": np.float64}


def tensor(name, stype, key, numel, offset, size, stride, legacy=False) -> bytes:
  """name, then _rebuild_tensor_v2(storage, offset, size, stride, False, OrderedDict())."""
  pid = _t([_u("storage"), f"ctorch\n{stype}\n".encode(), _u(key), _u("cpu"), _i(numel)]
           + ([b"N"] if legacy else []))
  args = _t([pid + b"Q", _i(offset), _t(map(_i, size)), _t(map(_i, stride)), b"\x89", ODICT])
  return _u(name) + REBUILD + args + b"R"


def state_dict_pickle(items: list[bytes]) -> bytes:
  return b"\x80\x02" + ODICT + b"(" + b"".join(items) + b"u."  # OrderedDict, SETITEMS


def write_zip(path, pkl: bytes, storages: dict, compression=zipfile.ZIP_STORED):
  """torch.save's zip layout: archive/data.pkl, and each storage's bytes as archive/data/<key>."""
  with zipfile.ZipFile(path, "w", compression) as z:
    z.writestr("archive/data.pkl", pkl)
    for key, array in storages.items():
      z.writestr(f"archive/data/{key}", array.tobytes())
    z.writestr("archive/version", "3\n")
  return str(path)


def write_legacy(path, pkl: bytes, storages: dict, numels: dict | None = None):
  """The pre-1.6 format: magic, protocol, system info, the pickle, its storage keys, then
  each storage as an int64 element count (numels: a false one) and its bytes."""
  info = {"protocol_version": 1001, "little_endian": True,
          "type_sizes": {"short": 2, "int": 4, "long": 4}}
  parts = [pickle.dumps(v, 2) for v in (0x1950A86A20F9469CFC6C, 1001, info)]
  parts += [pkl, pickle.dumps(list(storages), 2)]
  for key, array in storages.items():
    parts.append(struct.pack("<q", (numels or {}).get(key, array.size)) + array.tobytes())
  with open(path, "wb") as f:
    f.write(b"".join(parts))
  return str(path)


# A small state dict of views: non-contiguous, offset, shared, scalar, empty, broadcast.
STORAGES = {"0": np.arange(24, dtype=np.float32), "1": np.array([7, -8, 9], np.int64),
            "2": np.zeros(0, np.float64), "3": np.array([1, 0, 1, 1, 0], np.bool_),
            "4": np.array([1.5, -2, 3], np.float16)}
VIEWS = [("w", "FloatStorage", "0", 2, (2, 3, 2), (6, 2, 1)),
         ("t", "FloatStorage", "0", 0, (4, 3), (1, 4)),
         ("s", "LongStorage", "1", 2, (), ()),
         ("e", "DoubleStorage", "2", 0, (0, 4), (4, 1)),
         ("b", "BoolStorage", "3", 0, (5,), (1,)),
         ("x", "HalfStorage", "4", 0, (4, 3), (0, 1))]


W = tensor("w", "FloatStorage", "0", 4, 0, (4,), (1,))  # a float32 (4,) of storage "0"


def expected_view(storage: np.ndarray, offset, size, stride) -> np.ndarray:
  index = offset + sum(i * s for i, s in zip(np.indices(size), stride))
  return np.asarray(storage[index])


def valid_file(tmp_path, legacy: bool) -> str:
  items = [tensor(name, st_, key, STORAGES[key].size, off, size, stride, legacy)
           for name, st_, key, off, size, stride in VIEWS]
  write = write_legacy if legacy else write_zip
  return write(tmp_path / ("legacy.pth" if legacy else "zip.pth"), state_dict_pickle(items),
               STORAGES)


def check_error(e: TorchFileError, path):
  message = str(e)
  assert message.startswith(f"{path}: ") and "\n" not in message and len(message) < 1000, message


def load_or_error(path, max_bytes=FUZZ_LIMIT):
  """The reader's only outcomes: a {name: numeric array} dict, or one TorchFileError line."""
  try:
    out = load_state_dict(str(path), max_bytes=max_bytes)
  except TorchFileError as e:
    check_error(e, path)
    hypothesis.event("TorchFileError")
    return None
  hypothesis.event("loaded")
  assert isinstance(out, dict)
  for key, value in out.items():
    assert type(key) is str and isinstance(value, np.ndarray) and value.dtype.kind in "biufc"
  return out


# --- what valid files give ------------------------------------------------------------


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
def test_hand_built_files_read_as_their_views(tmp_path, legacy):
  out = load_state_dict(valid_file(tmp_path, legacy))
  assert list(out) == [v[0] for v in VIEWS]
  for name, _, key, offset, size, stride in VIEWS:
    want = expected_view(STORAGES[key], offset, size, stride)
    assert out[name].dtype == want.dtype and out[name].shape == tuple(size)
    np.testing.assert_array_equal(out[name], want)
    assert out[name].flags.writeable and out[name].flags.owndata  # copies, not file views


def test_the_builder_writes_files_torch_reads_and_torch_files_read_the_same(tmp_path):
  torch = pytest.importorskip("torch")
  for legacy in (False, True):
    path = valid_file(tmp_path, legacy)
    ours, theirs = load_state_dict(path), torch.load(path, weights_only=True)
    assert list(ours) == list(theirs)
    for k in ours:
      np.testing.assert_array_equal(ours[k], theirs[k].numpy())
    x = torch.arange(30.).reshape(5, 6)
    sd = {"t": x.t(), "v": x[1:4, ::2], "n": torch.tensor(3), "h": torch.ones(2, dtype=torch.half)}
    real = str(tmp_path / f"real{legacy}.pth")
    torch.save(sd, real, _use_new_zipfile_serialization=not legacy)
    out = load_state_dict(real)
    for k, v in sd.items():
      np.testing.assert_array_equal(out[k], v.numpy())
      assert out[k].dtype == v.numpy().dtype


# --- views that reach outside their storage ----------------------------------------------

BIG = [2**31, 2**40, 2**62, 2**63, 2**64, -1, -(2**63)]
index = st.one_of(st.integers(-1, 6), st.sampled_from(BIG))


def fits(numel, offset, size, stride) -> bool:
  """The spec: non-negative int64s, one stride per dimension, every element in the storage."""
  ok = lambda x: 0 <= x < 2**63
  if not (ok(offset) and len(size) == len(stride) and all(map(ok, list(size) + list(stride)))):
    return False
  return 0 in size or offset + sum((n - 1) * s for n, s in zip(size, stride)) < numel


@settings(max_examples=250, **FUZZ)
@given(numel=st.integers(0, 12), offset=st.one_of(index, st.integers(0, 14)),
       size=st.lists(index, max_size=3), stride=st.lists(index, max_size=3),
       same_rank=st.booleans(), stype=st.sampled_from(["FloatStorage", "LongStorage"]),
       legacy=st.booleans())
def test_views_outside_their_storage_are_refused(tmp_path_factory, numel, offset, size, stride,
                                                 same_rank, stype, legacy):
  if same_rank:
    stride = (stride + [1] * len(size))[:len(size)]
  storage = np.arange(numel).astype(DTYPES[stype])
  pkl = state_dict_pickle([tensor("a", stype, "v", numel, offset, size, stride, legacy)])
  path = os.path.join(str(tmp_path_factory.mktemp("views")), "v.pth")
  (write_legacy if legacy else write_zip)(path, pkl, {"v": storage})
  out = load_or_error(path, max_bytes=1 << 20)
  if not fits(numel, offset, size, stride):
    assert out is None, (numel, offset, size, stride)  # the old reader returned foreign memory
  elif out is not None:
    assert out["a"].shape == tuple(size)
    if max(size, default=0) <= 10_000:  # np.indices would allocate each dimension's range
      np.testing.assert_array_equal(out["a"], expected_view(storage, offset, size, stride))
  else:  # only a tensor too large for max_bytes, or one numpy cannot shape, is refused
    nonzero = math.prod(n for n in size if n) * storage.itemsize
    assert math.prod(size) * storage.itemsize > 1 << 19 or nonzero >= 2**63


HOSTILE_VIEWS = {
    "past the end": (4, 0, (1000,), (1,), "reaches element 999 of storage 'v', which has 4"),
    "offset past the end": (4, 4, (), (), "reaches element 4"),
    "scalar of an empty storage": (0, 0, (), (), "reaches element 0"),
    "negative size": (4, 0, (-1,), (1,), "non-negative integers"),
    "negative stride": (4, 3, (2,), (-1,), "non-negative integers"),
    "negative offset": (4, -1, (2,), (1,), "non-negative integers"),
    "a stride short": (4, 0, (2, 2), (1,), "one stride per dimension"),
    "stride past int64": (4, 0, (2,), (2**64,), "non-negative integers"),
}


@pytest.mark.parametrize("case", HOSTILE_VIEWS, ids=list(HOSTILE_VIEWS))
def test_hostile_views_name_the_problem(tmp_path, case):
  numel, offset, size, stride, message = HOSTILE_VIEWS[case]
  pkl = state_dict_pickle([tensor("w", "FloatStorage", "v", numel, offset, size, stride)])
  path = write_zip(tmp_path / "v.pth", pkl, {"v": np.zeros(numel, np.float32)})
  with pytest.raises(TorchFileError, match=message) as e:
    load_state_dict(path)
  check_error(e.value, path)


def run_child(path) -> subprocess.CompletedProcess:
  """load_state_dict in a fresh process with 3 GiB of address space: a crash or a bomb
  of an older reader kills or fails only the child."""
  code = ("import resource, sys\n"
          "resource.setrlimit(resource.RLIMIT_AS, (3 << 30, 3 << 30))\n"
          "from jaxgan.torch_weights import TorchFileError, load_state_dict\n"
          "try:\n"
          "  load_state_dict(sys.argv[1])\n"
          "except TorchFileError as e:\n"
          "  print('TorchFileError:', e)\n"
          "  sys.exit(2)\n")
  return subprocess.run([sys.executable, "-c", code, str(path)], cwd=ROOT, capture_output=True,
                        text=True, timeout=60)


def test_a_view_far_outside_its_storage_does_not_crash_the_process(tmp_path):
  # The old reader handed these strides to numpy's as_strided: SIGSEGV (exit -11).
  pkl = state_dict_pickle([tensor("w", "FloatStorage", "v", 4, 1, (2, 2), (2**40, 1))])
  path = write_zip(tmp_path / "oob.pth", pkl, {"v": np.zeros(4, np.float32)})
  out = run_child(path)
  assert out.returncode == 2 and "reaches element" in out.stdout, (out.returncode, out.stderr)


# --- what a file may make the reader allocate ---------------------------------------


def raises_within(path, memory: int, match=None, **kwargs) -> TorchFileError:
  """The TorchFileError load_state_dict(path) raises, having allocated under `memory` bytes
  (Python objects and numpy arrays, as tracemalloc sees them)."""
  tracemalloc.start()
  try:
    with pytest.raises(TorchFileError, match=match) as e:
      load_state_dict(str(path), **kwargs)
    peak = tracemalloc.get_traced_memory()[1]
  finally:
    tracemalloc.stop()
  check_error(e.value, path)
  assert peak < memory, f"{peak} bytes allocated"
  return e.value


@pytest.mark.parametrize("kind", ["pth", "npz"])
def test_a_zip_bomb_is_refused_before_it_is_unpacked(tmp_path, monkeypatch, kind):
  # 64 MiB of zeros deflate to 64 KiB; the old reader unpacked them whole (and copied them).
  zeros = np.zeros(16 << 20, np.float32)
  if kind == "pth":
    pkl = state_dict_pickle([tensor("w", "FloatStorage", "0", zeros.size, 0, zeros.shape, (1,))])
    path = write_zip(tmp_path / "bomb.pth", pkl, {"0": zeros}, zipfile.ZIP_DEFLATED)
  else:
    path = str(tmp_path / "bomb.npz")
    np.savez_compressed(path, w=zeros)
  assert os.path.getsize(path) < 256 << 10
  monkeypatch.setattr(torch_weights, "MAX_BYTES", 16 << 20, raising=False)
  raises_within(path, 1 << 20, r"limit of 16 MiB \(max_bytes, .*pass a larger max_bytes=")
  out = load_state_dict(path, max_bytes=160 << 20)  # a trusted large file: raise the limit
  assert out["w"].shape == zeros.shape and not out["w"].any()


def test_zip_headers_that_lie_about_sizes_are_refused(tmp_path):
  pkl = state_dict_pickle([W])
  data = open(write_zip(tmp_path / "good.pth", pkl, {"0": np.ones(4, np.float32)}), "rb").read()
  start = data.index(b"archive/data/0", data.index(b"PK\x01\x02")) - 46  # its directory entry
  assert data[start:start + 4] == b"PK\x01\x02"
  for declared in (0xFFFFFFF0, 4, 0):
    bad = bytearray(data)
    bad[start + 24:start + 28] = struct.pack("<I", declared)  # the unpacked size
    path = tmp_path / f"lie{declared}.pth"
    path.write_bytes(bytes(bad))
    raises_within(path, 1 << 20)


def test_a_legacy_storage_longer_than_the_file_is_refused_unread(tmp_path):
  numel = 2**40  # 4 TiB of float32 claimed by a 1 KiB file
  pkl = state_dict_pickle([tensor("w", "FloatStorage", "0", numel, 0, (4,), (1,), True)])
  storages = {"0": np.ones(4, np.float32)}
  path = write_legacy(tmp_path / "long.pth", pkl, storages, numels={"0": numel})
  raises_within(path, 1 << 20, "claims 1099511627776 float32 elements .* of the file are left")
  path = write_legacy(tmp_path / "neg.pth", pkl.replace(_i(numel), _i(4)), storages,
                      numels={"0": -4})
  raises_within(path, 1 << 20, "claims -4 float32 elements where its tensors expect 4")


# --- pickles that are not state dicts ------------------------------------------------


def nested_key(depth: int) -> bytes:
  """{((...(None,)...),): None}: the C unpickler hashed the key recursively, and a key a
  million deep overflowed the C stack (SIGSEGV, exit -11)."""
  return b"\x80\x02}N" + b"\x85" * depth + b"Ns."


HOSTILE_PICKLES = {
    "deeply nested key": (nested_key(100_000), "a dict key of type tuple"),
    # the C unpickler sized its memo from this index: 32 GiB for a 9-byte pickle
    "memo index 2**31": (b"\x80\x02Nr\xff\xff\xff\x7f.", "expected a state dict, found NoneType"),
    "deeply nested value": (b"\x80\x02}" + _u("w") + b"]" * 50_000 + b"a" * 49_999 + b"s.",
                            "'w' holds a list where a tensor belongs"),
    "a code global": (b"\x80\x02cos\nsystem\n" + _u("ls") + b"\x85R.", "refers to 'os.system'"),
    "a set": (b"\x80\x04\x8f.", r"opcode b'\\x8f'"),
    "a nested state dict": (state_dict_pickle([_u("m") + state_dict_pickle([W])[2:-1]]),
                            "'m' holds an OrderedDict"),
    "a number for a tensor": (state_dict_pickle([_u("w") + b"K\x05"]), "'w' holds 5"),
    "a list of tensors": (b"\x80\x02]" + b"(" + W[len(_u("w")):] + b"e.", "found list"),
    "a tensor of a list": (state_dict_pickle([_u("w") + REBUILD + _t([b"]", _i(0), _t([_i(1)]),
                                                                     _t([_i(1)])]) + b"R"]),
                           "storage is a list"),
    "a storage of two types": (state_dict_pickle([W, tensor("v", "LongStorage", "0", 4, 0, (2,),
                                                            (1,))]), "described both as"),
    "a storage bigger than its data": (state_dict_pickle([tensor("w", "FloatStorage", "0", 8, 0,
                                                                 (8,), (1,))]), "too few"),
    "a missing storage": (state_dict_pickle([tensor("w", "FloatStorage", "9", 4, 0, (4,), (1,))]),
                          "has no 'archive/data/9'"),
    "a huge frame": (b"\x80\x04\x95" + struct.pack("<Q", 2**40) + b"N.", None),
    "huge bytes": (b"\x80\x04\x8e" + struct.pack("<Q", 2**40) + b"x.", None),
    "an int too long to print": (state_dict_pickle([_u("w") + b"\x8b" + struct.pack("<i", 5000)
                                                    + b"\x01" * 5000]), "'w' holds an int"),
    "no STOP": (b"\x80\x02}", "EOFError: the data ends early"),
}


@pytest.mark.parametrize("case", HOSTILE_PICKLES, ids=list(HOSTILE_PICKLES))
def test_hostile_pickles_are_one_error_in_modest_memory(tmp_path, case):
  pkl, message = HOSTILE_PICKLES[case]
  raises_within(write_zip(tmp_path / "p.pth", pkl, {"0": np.ones(4, np.float32)}), 64 << 20,
                message)


@pytest.mark.parametrize("case", ["deeply nested key", "memo index 2**31"])
def test_hostile_pickles_do_not_crash_the_process(tmp_path, case):
  pkl = nested_key(1_000_000) if case == "deeply nested key" else HOSTILE_PICKLES[case][0]
  path = write_zip(tmp_path / "p.pth", pkl, {})
  out = run_child(path)
  assert out.returncode == 2 and "TorchFileError" in out.stdout, (out.returncode, out.stderr)


def test_a_pickle_that_builds_many_objects_counts_against_the_limit(tmp_path):
  # 2 bytes a dict: 64K empty dicts take 4 MiB, and count 80 bytes a pickle byte (10 MiB)
  path = write_zip(tmp_path / "dicts.pth", b"\x80\x02]" + b"}a" * (1 << 16) + b".", {})
  raises_within(path, 2 << 20, "the objects of the file's pickle .* limit of 4 MiB",
                max_bytes=4 << 20)
  raises_within(path, 16 << 20, "found list", max_bytes=16 << 20)


# --- fuzzing -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def valid_files(tmp_path_factory):
  """The bytes of valid files to cut and mutate: hand-built (both formats) and, where torch
  is installed, torch.save's own."""
  root = tmp_path_factory.mktemp("valid")
  files = {f"hand-{k}": open(valid_file(root, k == "legacy"), "rb").read()
           for k in ("zip", "legacy")}
  try:
    import torch
  except ImportError:
    return files
  sd = {"conv.weight": torch.randn(2, 3, 3, 3), "bn.num_batches_tracked": torch.tensor(5),
        "t": torch.arange(6.).reshape(2, 3).t()}
  for legacy in (False, True):
    buf = io.BytesIO()
    torch.save(sd, buf, _use_new_zipfile_serialization=not legacy)
    files[f"torch-{'legacy' if legacy else 'zip'}"] = buf.getvalue()
  return files


def _write(tmp_path_factory, data: bytes, name="f.pth") -> str:
  path = os.path.join(str(tmp_path_factory.mktemp("fuzz")), name)
  with open(path, "wb") as f:
    f.write(data)
  return path


@settings(max_examples=150, **FUZZ)
@given(blob=st.binary(max_size=600),
       prefix=st.sampled_from([b"", b"\x80\x02", b"\x80\x04\x95", b"PK\x03\x04",
                               b"\x80\x02\x8a\x0a"]),  # raw, pickles, a zip, legacy's magic
       name=st.sampled_from(["f.pth", "f.npz"]))
def test_random_bytes_are_a_torch_file_error(tmp_path_factory, blob, prefix, name):
  assert load_or_error(_write(tmp_path_factory, prefix + blob, name)) is None


@settings(max_examples=120, **FUZZ)
@given(which=st.sampled_from(["hand-zip", "hand-legacy", "torch-zip", "torch-legacy"]),
       cut=st.floats(0, 1, exclude_max=True))
def test_cut_files_are_a_torch_file_error(tmp_path_factory, valid_files, which, cut):
  data = valid_files.get(which) or valid_files["hand-" + which.split("-")[1]]
  assert load_or_error(_write(tmp_path_factory, data[:int(len(data) * cut)])) is None


@settings(max_examples=200, **FUZZ)
@given(which=st.sampled_from(["hand-zip", "hand-legacy", "torch-zip", "torch-legacy"]),
       edits=st.lists(st.tuples(st.floats(0, 1, exclude_max=True), st.binary(min_size=1,
                                                                               max_size=9)),
                      min_size=1, max_size=4),
       inside_pickle=st.booleans())
def test_mutated_files_load_or_are_a_torch_file_error(tmp_path_factory, valid_files, which, edits,
                                                      inside_pickle):
  data = valid_files.get(which) or valid_files["hand-" + which.split("-")[1]]
  zipped = which.endswith("zip")
  if zipped and inside_pickle:  # past the zip's CRCs: a valid archive of a mutated pickle
    with zipfile.ZipFile(io.BytesIO(data)) as z:
      members = {n: z.read(n) for n in z.namelist()}
    pkl = next(n for n in members if n.endswith("data.pkl"))
    members[pkl] = _mutate(members[pkl], edits)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
      for n, raw in members.items():
        z.writestr(n, raw)
    data = buf.getvalue()
  else:
    data = _mutate(data, edits)
  load_or_error(_write(tmp_path_factory, data))


def _mutate(data: bytes, edits) -> bytes:
  for where, new in edits:
    at = int(len(data) * where)
    data = data[:at] + new + data[at + len(new):]
  return data


FRAGMENTS = [
    b"}", b"]", b")", b"(", b"t", b"u", b"s", b"a", b"e", b"R", b"Q", b"b", b"0", b"1", b"2",
    b"\x85", b"\x86", b"\x87", b"N", b"\x88", b"\x89", b"K\x05", b"J\xff\xff\xff\xff",
    b"\x8a\x01\x07", b"\x8a\x09" + b"\xff" * 9, b"h\x00", b"h\x01", b"q\x00", b"q\x01", b"\x94",
    b"r\xff\xff\xff\x7f", b"j\xff\xff\xff\x7f", b"d", b"l", b"\x93", b"\x8c\x05torch",
    b"\x8c\x0cFloatStorage", b"\x95\x00\x00\x00\x00\x01\x00\x00\x00",
    b"B\xff\xff\xff\x7f", b"\x8f", b"\x90", b"\x91", b"i", b"o", b"\x81", b"\x92", b"c", b"\x98",
    _u("storage"), _u("0"), _u("cpu"), _u("w"), _u("state_dict"), ODICT, REBUILD,
    b"ctorch\nFloatStorage\n", b"ctorch._utils\n_rebuild_parameter\n", b"cos\nsystem\n",
    _t([_u("storage"), b"ctorch\nFloatStorage\n", _u("0"), _u("cpu"), _i(4)]) + b"Q",
    _t([_i(0), _t([_i(4)]), _t([_i(1)])]), W, W[len(_u("w")):],
]


@settings(max_examples=250, **FUZZ)
@given(ops=st.lists(st.sampled_from(FRAGMENTS), max_size=40), legacy=st.booleans(),
       stop=st.booleans())
def test_opcode_soup_loads_or_is_a_torch_file_error(tmp_path_factory, ops, legacy, stop):
  pkl = b"\x80\x02" + b"".join(ops) + (b"." if stop else b"")
  path = os.path.join(str(tmp_path_factory.mktemp("soup")), "s.pth")
  (write_legacy if legacy else write_zip)(path, pkl, {"0": np.ones(4, np.float32)})
  load_or_error(path)
