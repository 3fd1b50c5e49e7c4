"""The GPU kernels of one train step, counted on a machine without a GPU.

    python -m benchmarks.gpu_kernels --preset cyclegan --batch_size 1
    python -m benchmarks.gpu_kernels --preset darknet --batch_size 512 --json k.json
    python -m benchmarks.gpu_kernels --preset cyclegan --batch_size 1 --hlo step.hlo.txt

XLA compiles the preset's real train step (the program `train.py` runs on
each device, RNG folding and the non-finite guard included) for an NVIDIA
H100 without one present ("deviceless" compilation: JAX's CUDA plugin with
a target description instead of a device). The printed table counts the
kernels that one step launches, by kind: cuDNN convolutions (forward,
backward-data, backward-filter), Triton/cuBLAS matrix products, reduction
and transpose fusions (XLA's kInput), elementwise fusions (kLoop),
device-to-device copies and the rest. Loop bodies count once per trip (the
WGAN's critic steps). "HBM traffic" adds the bytes each kernel reads and
writes; over the H100's 3.35 TB/s it bounds the memory time of a step from
below, were nothing cached in L2.

It also reads what the host launches per step from XLA's dump of the
executable's thunk sequence: CUDA graphs (command buffers, each holding a run
of kernels) and the kernels and cuDNN convolutions launched one by one.
`--xla_flags` compiles under other XLA flags, e.g. to see which flags put the
convolutions into the graphs.

Why count kernels: on an H100 many of these steps are short kernels, each
launched by the host. A step of 2,000 kernels that moves 16 GB in 5 ms of
memory time and does 5 ms of tensor-core work but takes 55 ms (CycleGAN)
spends its time between kernels, and fewer kernels is the lever. What this
script cannot tell: time. Without a GPU there is no autotuning (convolution
algorithms are chosen on the device) and no profile; measure with
train_throughput and profile_step on the GPU.

Needs JAX's CUDA plugin matching jax, which installs without a GPU or CUDA
(about 0.5 GB): `pip install -e ".[gpu-aot]"`, i.e. `jax[cuda12-local]`.

The target description is written here from the H100 SXM's data-sheet
figures (132 SMs, 80 GB HBM3 at 3.35 TB/s, compute capability 9.0, cuDNN 9).
"""
import collections
import glob
import importlib
import os
import platform
import re
import shutil
import sys
import tempfile

import jax
import numpy as np
from jax.experimental import topologies
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from benchmarks import common
from benchmarks.common import PRESETS
from jaxgan import parallel
from jaxgan.errors import UserError

H100_SXM = {  # GpuTargetConfigProto fields; values from NVIDIA's H100 SXM data sheet
    "threads_per_block_limit": 1024, "threads_per_warp": 32,
    "shared_memory_per_block": 48 * 1024, "shared_memory_per_core": 228 * 1024,
    "shared_memory_per_block_optin": 227 * 1024, "threads_per_core_limit": 2048,
    "core_count": 132, "fpus_per_core": 128,
    "block_dim_limit_x": 2 ** 31 - 1, "block_dim_limit_y": 65535, "block_dim_limit_z": 65535,
    "memory_bandwidth": 3_352_320_000_000, "l2_cache_size": 50 * 1024 * 1024,
    "clock_rate_ghz": 1.98, "device_memory_size": 84_942_979_072,
    "registers_per_core_limit": 65536, "registers_per_block_limit": 65536,
}
DEVICE_NAME = "NVIDIA H100 80GB HBM3"
CUDNN_VERSION = (9, 10)
# Without a CUDA runtime and driver version (>= 12.3) XLA leaves cuBLAS, cuDNN, custom calls
# and convolutions out of its CUDA graphs (command_buffer_conversion_pass.cc), which a GPU
# machine would not: its graphs would be misjudged.
VERSIONS = {"driver_version": "13.0.0", "runtime_version": "12.9.0"}
NOT_KERNELS = {"parameter", "get-tuple-element", "tuple", "constant", "bitcast", "while",
               "conditional", "call", "after-all", "partition-id", "replica-id",
               "opt-barrier"}
KINDS = (  # (label, predicate on the op name) in table order; the first match wins
    ("conv forward", lambda op: (op.startswith("custom-call:__cudnn$conv") and "Forward" in op)
     or op == "fusion:conv_fprop"),
    ("conv backward-data", lambda op: op in ("custom-call:__cudnn$convBackwardInput",
                                             "fusion:conv_dgrad")),
    ("conv backward-filter", lambda op: op in ("custom-call:__cudnn$convBackwardFilter",
                                               "fusion:conv_wgrad")),
    ("matmul (cuBLAS)", lambda op: op.startswith("custom-call:__cublas")),
    ("other custom call", lambda op: op.startswith("custom-call")),
    ("Triton fusion (matmul, softmax)", lambda op: op == "fusion:kCustom"),
    ("reduction/transpose fusion", lambda op: op == "fusion:kInput"),
    ("elementwise fusion", lambda op: op == "fusion:kLoop"),
    ("copy", lambda op: op == "copy"),
    ("other", lambda op: True),
)
_BYTES = {"f64": 8, "s64": 8, "u64": 8, "f32": 4, "s32": 4, "u32": 4, "bf16": 2, "f16": 2,
          "s16": 2, "u16": 2, "s8": 1, "u8": 1, "pred": 1}
_INSTRUCTION = re.compile(r"^\s*(?:ROOT\s+)?%([\w.\-]+)\s*=\s*(\(.*?\)|\S+)\s+([a-z][\w\-]*)\((.*)$")
_COMPUTATION = re.compile(r"^(ENTRY\s+)?%([\w.\-]+)\s.*\{\s*$")


# Config fields set from this script's flags (its JSON records those), and the fix.
FLAG_FIELDS = {"batch_size": "use --batch_size", "dtype": "use --dtype",
               "num_devices": "the step is compiled for one device"}


class PluginMissing(RuntimeError):
  pass


def target_config(spec=H100_SXM, name=DEVICE_NAME, cudnn=CUDNN_VERSION) -> str:
  """The text-format GpuTargetConfigProto that XLA compiles against."""
  fields = "\n".join(f"  {k}: {v}" for k, v in spec.items())
  fields += "".join(f'\n  {k}: "{v}"' for k, v in VERSIONS.items())
  return (f"gpu_device_info {{\n{fields}\n  cuda_compute_capability {{ major: 9 minor: 0 }}\n}}\n"
          f'platform_name: "CUDA"\ndnn_version_info {{ major: {cudnn[0]} minor: {cudnn[1]} }}\n'
          f'device_description_str: "{name}"\n')


def h100_device():
  """An abstract H100 to compile for; the CPU must be JAX's only initialised backend."""
  try:  # the plugin is optional: only this script needs it
    importlib.import_module("jax_plugins.xla_cuda12")
  except ImportError:
    raise PluginMissing(
        "JAX's CUDA plugin is not installed; it installs without a GPU or CUDA:\n  "
        f'pip install "jax[cuda12-local]=={jax.__version__}"   (or pip install -e ".[gpu-aot]")'
    ) from None
  topology = topologies.get_topology_desc("h100", "cuda", target_config=target_config(),
                                          topology="1x1x1")
  return topology.devices[0]


def _shape_bytes(shape: str) -> int:
  total = 0
  for dtype, dims in re.findall(r"\b([a-z]+\d*)\[([\d,]*)\]", shape):
    if dtype in _BYTES:
      n = 1
      for d in filter(None, dims.split(",")):
        n *= int(d)
      total += n * _BYTES[dtype]
  return total


def _computations(hlo: str) -> dict:
  """{name: (is_entry, [instruction lines])} of an HLO module's text."""
  comps, name = {}, None
  for line in hlo.splitlines():
    m = _COMPUTATION.match(line)
    if m:
      name = m.group(2)
      comps[name] = (bool(m.group(1)), [])
    elif line.startswith("}"):
      name = None
    elif name is not None:
      comps[name][1].append(line)
  return comps


def _op_name(op: str, rest: str) -> str:
  if op == "custom-call":
    target = re.search(r'custom_call_target="([^"]+)"', rest)
    return f"custom-call:{target.group(1) if target else '?'}"
  if op == "fusion":
    kind = re.search(r"kind=(\w+)", rest)
    conv = re.search(r"calls=%(conv_(?:fprop|dgrad|wgrad))", rest)  # cuDNN conv fusions
    return f"fusion:{conv.group(1) if conv else kind.group(1) if kind else '?'}"
  return op


def count_kernels(hlo: str) -> dict:
  """Kernels launched by one run of an optimised (scheduled) XLA:GPU module.

  Returns {"ops": {op: launches}, "kinds": {label: launches}, "kernels": total,
  "hbm_bytes": bytes read and written by the kernels}. The top-level
  instructions of the entry computation count; a while loop's condition and
  body count once per trip when XLA knows the trip count (once otherwise), a
  conditional as its largest branch; a fusion is one kernel.
  """
  comps = _computations(hlo)

  def launches(name):
    ops, nbytes, shapes = collections.Counter(), 0, {}
    for line in comps.get(name, (False, []))[1]:
      m = _INSTRUCTION.match(line)
      if not m:
        continue
      var, shape, op, rest = m.groups()
      shapes[var] = shape
      if op == "while":
        trips = re.search(r"known_trip_count[^0-9]*(\d+)", rest)
        n = int(trips.group(1)) if trips else 1
        for part in ("condition", "body"):  # the condition is a kernel per trip too
          part_ops, part_bytes = launches(re.search(part + r"=%([\w.\-]+)", rest).group(1))
          ops.update({k: v * n for k, v in part_ops.items()})
          nbytes += part_bytes * n
      elif op == "conditional":
        branches = re.findall(r"(?:branch_computations=\{|true_computation=|false_computation=|, )"
                              r"%([\w.\-]+)", rest)
        taken = [launches(b) for b in branches if b in comps]
        if taken:
          best = max(taken, key=lambda t: sum(t[0].values()))
          ops.update(best[0])
          nbytes += best[1]
      elif op not in NOT_KERNELS:
        ops[_op_name(op, rest)] += 1
        operands = rest.split("), kind=")[0] if op == "fusion" else rest.split(")")[0]
        nbytes += _shape_bytes(shape) + sum(_shape_bytes(shapes.get(a, ""))
                                            for a in re.findall(r"%([\w.\-]+)", operands))
    return ops, nbytes

  entry = next(name for name, (is_entry, _) in comps.items() if is_entry)
  ops, nbytes = launches(entry)
  kinds = collections.Counter()
  for op, n in ops.items():
    kinds[next(label for label, match in KINDS if match(op))] += n
  return {"ops": dict(ops.most_common()),
          "kinds": {label: kinds[label] for label, _ in KINDS if kinds[label]},
          "kernels": sum(ops.values()), "hbm_bytes": nbytes}


def loop_trip_counts(hlo: str) -> list:
  """The known trip counts of the while loops of an optimised module, in schedule order."""
  return [int(n) for n in re.findall(r" while\(.*?known_trip_count[^0-9]*(\d+)", hlo)]


def host_launches(thunk_sequence: str, trips=()) -> dict:
  """What the host launches per step, from XLA's dump of the executable's thunk sequence.

  Top-level thunks are launched one by one from the host: a command buffer (a CUDA graph
  holding the kernels listed under it), a cuDNN convolution, a single kernel, a copy. The
  thunks of a while loop's condition and body run once per trip (`trips`: each loop's
  count, in order; once when not given).
  """
  top, in_graphs, trips = collections.Counter(), 0, list(trips)
  graph, loops = None, []  # indent of the enclosing command buffer; (indent, trips) of loops
  for line in thunk_sequence.splitlines():
    m = re.match(r"^(\s*)\d+: (k\w+)", line)
    if not m:
      continue
    indent, kind = len(m.group(1)), m.group(2)
    if graph is not None and indent <= graph:
      graph = None
    while loops and indent <= loops[-1][0]:
      loops.pop()
    times = 1
    for _, n in loops:
      times *= n
    if graph is not None:
      in_graphs += times
    elif kind == "kWhile":
      loops.append((indent, trips.pop(0) if trips else 1))
    else:
      top[kind] += times
      if kind == "kCommandBuffer":
        graph = indent
  return {"host_launches": sum(top.values()), "command_buffers": top["kCommandBuffer"],
          "kernels_in_command_buffers": in_graphs, "top_level": dict(top.most_common())}


def step_hlo(preset: str, batch_size: int, dtype: str, donate: bool | None = None,
             overrides=()) -> tuple[str, bool]:
  """(optimised H100 HLO of the preset's per-device train step, whether the state was
  donated: as the task's training loop does, unless `donate` says otherwise)."""
  gpu = h100_device()  # first: without the plugin, fail before building anything
  # JAX runs on the CPU here (main sets it), so the preset's task and state live there.
  task, _, state, _ = common.build_preset(preset, batch_size, dtype, 1, overrides=overrides)
  start = PRESETS[preset][2]  # e.g. past the WGAN's 100-critic-step warm-up
  batch = jax.tree_util.tree_map(lambda x: x[0], task.train_batch(start))
  mesh = Mesh(np.asarray([gpu]), (parallel.AXIS,))
  spec = lambda tree: jax.tree_util.tree_map(
      lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=NamedSharding(mesh,
                                                                             PartitionSpec())),
      tree)
  # The program train.py pmaps; a mesh of one device stands in for pmap's axis.
  replicated = (PartitionSpec(), PartitionSpec())
  program = jax.shard_map(task.step_function(), mesh=mesh, in_specs=replicated,
                          out_specs=replicated, check_vma=False)
  donate = task.donate_state if donate is None else donate
  compiled = jax.jit(program, donate_argnums=(0,) if donate else ()).lower(
      spec(state), spec(batch)).compile()
  return compiled.as_text(), donate


def report(counts: dict) -> str:
  lines = [f"{'kernels per step':<34}{counts['kernels']:>8,}"]
  lines += [f"  {label:<32}{n:>8,}" for label, n in counts["kinds"].items()]
  gb = counts["hbm_bytes"] / 1e9
  lines.append(f"{'HBM traffic':<34}{gb:>8.2f} GB = {gb / 3.35:.1f} ms at 3.35 TB/s")
  if "thunks" in counts:
    t = counts["thunks"]
    graphs = t["command_buffers"]
    lines.append(f"{'host launches per step':<34}{t['host_launches']:>8,} "
                 f"({graphs:,} CUDA graph{'' if graphs == 1 else 's'} holding "
                 f"{t['kernels_in_command_buffers']:,} kernels, the rest launched one by one)")
  return "\n".join(lines)


def main(argv=None) -> int:
  parser = common.ArgumentParser(prog="python -m benchmarks.gpu_kernels",
                                  description=__doc__.split("\n")[0])
  parser.add_argument("--preset", choices=sorted(PRESETS), default="cyclegan")
  parser.add_argument("--batch_size", type=int, default=None,
                      help="default: 1 for cyclegan, 64 for the WGANs, 512 for classifiers")
  parser.add_argument("--dtype", choices=("bfloat16", "float32"), default="bfloat16")
  parser.add_argument("--donate", choices=("task", "yes", "no"), default="task",
                      help="donate the old state's memory to the new one: as train.py does "
                      "for the preset (task), or always, or never")
  parser.add_argument("--set", action="append", default=[], metavar="KEY=JSON",
                      help="override a config field, e.g. --set model.n_blocks=6")
  parser.add_argument("--xla_flags", default="",
                      help="XLA flags for this compile, e.g. --xla_gpu_graph_min_graph_size=1")
  parser.add_argument("--hlo", default="", help="write the optimised HLO text here")
  parser.add_argument("--json", default="", help="write the counts here")
  args = parser.parse_args(argv)
  problem = common.override_problem(args.set, args.preset, FLAG_FIELDS,
                                    "give them with --xla_flags")
  if problem:
    parser.error(problem)
  # Before any backend starts (importing JAX starts none): the CUDA plugin must not look for
  # a GPU, and XLA reads its flags once, when the first backend starts. The dump holds the
  # executable's thunk sequence (what the host launches).
  os.environ["JAX_PLATFORMS"] = "cpu"
  dump = tempfile.mkdtemp(prefix="gpu_kernels_")
  os.environ["XLA_FLAGS"] = " ".join([os.environ.get("XLA_FLAGS", ""), args.xla_flags,
                                      f"--xla_dump_to={dump}",
                                      "--xla_dump_hlo_module_re=.*step_fn.*"])
  jax.config.update("jax_platforms", "cpu")
  batch = args.batch_size or (1 if args.preset == "cyclegan" else
                              64 if args.preset.startswith("wgan") else 512)
  try:
    donate = {"task": None, "yes": True, "no": False}[args.donate]
    hlo, donated = step_hlo(args.preset, batch, args.dtype, donate, args.set)
  except PluginMissing as e:
    print(e, file=sys.stderr)
    return 2
  except UserError as e:  # a --set value the task refuses
    print(f"{e.prefix}: {e}", file=sys.stderr)
    return e.exit_code
  counts = count_kernels(hlo)
  sequences = sorted(glob.glob(os.path.join(dump, "*thunk_sequence_after_thunk_passes.txt")))
  if sequences:
    with open(sequences[-1]) as f:
      counts["thunks"] = host_launches(f.read(), loop_trip_counts(hlo))
  shutil.rmtree(dump, ignore_errors=True)
  print(f"{args.preset}, batch {batch}, {args.dtype}, state {'' if donated else 'not '}donated: "
        f"one train step compiled for an {DEVICE_NAME} (deviceless; no autotuning)")
  print(report(counts))
  if args.hlo:
    with open(args.hlo, "w") as f:
      f.write(hlo)
  if args.json:
    common.write_json(args.json, {
        "preset": args.preset, "batch_size": batch, "dtype": args.dtype, "donate": donated,
        "overrides": args.set, "xla_flags": args.xla_flags,
        "target": DEVICE_NAME + " (deviceless compile)", "jax": jax.__version__,
        "python": platform.python_version(), **counts})
  return 0


if __name__ == "__main__":
  sys.exit(main())
