"""benchmarks.gpu_kernels: kernel counting of an optimised XLA:GPU module, and the
deviceless H100 compile where JAX's CUDA plugin is installed."""
import importlib.util
import os
import subprocess
import sys

import pytest

from benchmarks import gpu_kernels

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# The shape of XLA:GPU's optimised HLO text: a fused computation, a loop body with one
# kernel that runs 5 times, a conditional with branches of 1 and 2 kernels, and an entry.
MODULE = """HloModule jit_step, entry_computation_layout={(f32[8]{0})->f32[8]{0}}

%fused_add (param_0: f32[8]) -> f32[8] {
  %param_0 = f32[8]{0} parameter(0)
  ROOT %add.1 = f32[8]{0} add(%param_0, %param_0)
}

%body.1 (p: (s32[], f32[8])) -> (s32[], f32[8]) {
  %p = (s32[], f32[8]{0}) parameter(0)
  %gte.0 = s32[] get-tuple-element(%p), index=0
  %gte.1 = f32[8]{0} get-tuple-element(%p), index=1
  %loop_add_fusion.2 = f32[8]{0} fusion(%gte.1), kind=kLoop, calls=%fused_add
  ROOT %tuple.1 = (s32[], f32[8]{0}) tuple(%gte.0, %loop_add_fusion.2)
}

%cond.1 (p: (s32[], f32[8])) -> pred[] {
  %p = (s32[], f32[8]{0}) parameter(0)
  ROOT %c = pred[] constant(true)
}

%small (a: f32[8]) -> f32[8] {
  %a = f32[8]{0} parameter(0)
  ROOT %copy.9 = f32[8]{0} copy(%a)
}

%large (a: f32[8]) -> f32[8] {
  %a = f32[8]{0} parameter(0)
  %copy.7 = f32[8]{0} copy(%a)
  ROOT %copy.8 = f32[8]{0} copy(%copy.7)
}

ENTRY %main.3 (x: f32[8]) -> f32[8] {
  %x = f32[8]{0} parameter(0)
  %input_reduce_fusion = f32[2]{0} fusion(%x), kind=kInput, calls=%fused_add
  %cudnn-conv.1 = (bf16[4,4]{1,0}, u8[0]{0}) custom-call(%x, %x), window={size=3x3}, custom_call_target="__cudnn$convForward"
  %cudnn-conv-bw-filter.1 = (bf16[4,4]{1,0}, u8[0]{0}) custom-call(%x, %x), window={size=3x3}, custom_call_target="__cudnn$convBackwardFilter"
  %zero = s32[] constant(0)
  %init = (s32[], f32[8]{0}) tuple(%zero, %x)
  %while.1 = (s32[], f32[8]{0}) while(%init), condition=%cond.1, body=%body.1, backend_config={"known_trip_count":{"n":"5"}}
  %flag = s32[] constant(1)
  %conditional.1 = f32[8]{0} conditional(%flag, %x, %x), branch_computations={%small, %large}
  %bitcast.1 = f32[2,4]{1,0} bitcast(%x)
  ROOT %copy.1 = f32[8]{0} copy(%conditional.1)
}
"""


def test_counts_kernels_loop_trips_the_largest_branch_and_bytes():
  counts = gpu_kernels.count_kernels(MODULE)
  assert counts["ops"] == {"fusion:kLoop": 5, "fusion:kInput": 1, "copy": 3,
                           "custom-call:__cudnn$convForward": 1,
                           "custom-call:__cudnn$convBackwardFilter": 1}
  assert counts["kernels"] == 11
  assert counts["kinds"] == {"conv forward": 1, "conv backward-filter": 1,
                             "reduction/transpose fusion": 1, "elementwise fusion": 5, "copy": 3}
  # Each kernel's output plus its operands: the loop's add reads and writes 32 bytes,
  # the reduction 32 + 8, each conv 2 * 32 + 32 (tuple output), each copy 32 + 32.
  assert counts["hbm_bytes"] == 5 * 64 + 40 + 2 * 96 + 3 * 64


# XLA's dump of an executable's thunks: a command buffer (CUDA graph) of two kernels, a
# convolution and a kernel launched on their own, then a graph of one kernel.
THUNKS = """000: kCommandBuffer [source        | next=003 (1) ]
    001: kCustomKernel [source       | next=002 (1)] loop_add_fusion grid: [1, 1, 1] threads: [1, 1, 1]  shared_memory: 0 bytes
    002: kCustomKernel [prev=001 (1) | sink        ] input_reduce_fusion grid: [64, 1, 1] threads: [128, 1, 1]  shared_memory: 0 bytes
003: kConvolution   [prev=000 (1)  | next=004 (1) ] kConvolution
004: kCustomKernel  [prev=003 (1)  | next=005 (1) ] loop_select_fusion grid: [512, 1, 1] threads: [128, 1, 1]  shared_memory: 0 bytes
005: kCommandBuffer [prev=004 (1)  | sink ]
    006: kCustomKernel [source       | sink        ] loop_convert_fusion grid: [8, 1, 1] threads: [128, 1, 1]  shared_memory: 0 bytes
"""


# A loop of 3 trips after one kernel: each trip checks the condition (a kernel), then runs a
# graph of two kernels and a convolution.
LOOP = """000: kCustomKernel  [source | next=001 (1) ] loop_add_fusion grid: [1, 1, 1] threads: [1, 1, 1]  shared_memory: 0 bytes
001: kWhile         [prev=000 (1) | sink ]
condition:
    002: kCustomKernel [source | sink] loop_compare_fusion grid: [1, 1, 1] threads: [1, 1, 1]  shared_memory: 0 bytes
  body:
    000: kCommandBuffer [source       | next=005 (1) ]
        003: kCustomKernel [source       | next=004 (1)] loop_add_fusion_16 grid: [1, 1, 1] threads: [1, 1, 1]  shared_memory: 0 bytes
        004: kCustomKernel [prev=003 (1) | sink        ] loop_convert_fusion grid: [24, 1, 1] threads: [128, 1, 1]  shared_memory: 0 bytes
    005: kConvolution   [prev=000 (1)  | sink ] kConvolution
"""


def test_host_launches_from_the_thunk_sequence():
  assert gpu_kernels.host_launches(THUNKS) == {
      "host_launches": 4, "command_buffers": 2, "kernels_in_command_buffers": 3,
      "top_level": {"kCommandBuffer": 2, "kConvolution": 1, "kCustomKernel": 1}}
  assert gpu_kernels.host_launches(LOOP, [3]) == {
      "host_launches": 1 + 3 * 3, "command_buffers": 3, "kernels_in_command_buffers": 6,
      "top_level": {"kCustomKernel": 4, "kCommandBuffer": 3, "kConvolution": 3}}
  assert gpu_kernels.loop_trip_counts(
      '  %while.1 = (s32[]) while(%t), condition=%c, body=%b, '
      'backend_config={"known_trip_count":{"n":"5"}}') == [5]


def test_target_config_describes_an_h100():
  text = gpu_kernels.target_config()
  assert "core_count: 132" in text and "cuda_compute_capability { major: 9 minor: 0 }" in text
  assert 'device_description_str: "NVIDIA H100 80GB HBM3"' in text
  # A CUDA version: below 12.3 (or none) XLA keeps cuBLAS, cuDNN and convolutions out of graphs.
  assert 'runtime_version: "12.' in text and 'driver_version: "13.' in text
  assert text.count("{") == text.count("}")


try:
  HAS_PLUGIN = importlib.util.find_spec("jax_plugins.xla_cuda12") is not None
except ImportError:  # no jax_plugins package at all
  HAS_PLUGIN = False


def _run(*args):
  return subprocess.run([sys.executable, "-m", "benchmarks.gpu_kernels", *args], cwd=ROOT,
                        capture_output=True, text=True, timeout=600)


@pytest.mark.skipif(HAS_PLUGIN, reason="JAX's CUDA plugin is installed here")
def test_without_the_cuda_plugin_it_says_what_to_install():
  result = _run("--preset", "small", "--batch_size", "8")
  assert result.returncode == 2
  assert 'pip install "jax[cuda12-local]==' in result.stderr


@pytest.mark.skipif(not HAS_PLUGIN, reason="needs JAX's CUDA plugin (pip install -e "
                    "'.[gpu-aot]', no GPU needed)")
def test_compiles_a_train_step_for_an_h100_without_one(tmp_path):
  import json
  result = _run("--preset", "small", "--batch_size", "8", "--json", str(tmp_path / "k.json"))
  assert result.returncode == 0, result.stderr
  counts = json.loads((tmp_path / "k.json").read_text())
  # Darknet((1, 1), nf=16): a stem conv and two groups of a strided conv + a residual
  # layer of two convs: 7 convs, 7 filter gradients, and 6 data gradients (none for the
  # image), some of which (1x1) cuDNN runs as forward convs.
  kinds = counts["kinds"]
  assert kinds["conv backward-filter"] == 7
  assert kinds["conv forward"] + kinds["conv backward-data"] == 7 + 6
  # The state is donated, and the conv kernels, stored as cuDNN writes their gradients,
  # are updated in place: no copy per kernel (flax's layout had 7 or more here).
  assert counts["donate"] is True and counts["kinds"].get("copy", 0) <= 2
  result = _run("--preset", "small", "--batch_size", "8", "--donate", "no", "--json",
                str(tmp_path / "kept.json"))
  kept = json.loads((tmp_path / "kept.json").read_text())
  assert kept["donate"] is False and counts["kernels"] - kept["kernels"] <= 1
  # What the host launches: the convolutions split the step's CUDA graphs by default.
  thunks = counts["thunks"]
  assert thunks["top_level"]["kConvolution"] == 20
  assert thunks["host_launches"] == sum(thunks["top_level"].values()) > thunks["command_buffers"]
  assert thunks["kernels_in_command_buffers"] + thunks["host_launches"] - thunks[
      "command_buffers"] == counts["kernels"]
  # Convolutions captured too (CONVOLUTION, off by default) and no minimum graph size: the
  # whole step is one CUDA graph (the GPU checks time it).
  result = _run("--preset", "small", "--batch_size", "8", "--json", str(tmp_path / "f.json"),
                "--xla_flags=--xla_gpu_enable_command_buffer=+CONVOLUTION "
                "--xla_gpu_graph_min_graph_size=1")
  one = json.loads((tmp_path / "f.json").read_text())["thunks"]
  assert one["host_launches"] == one["command_buffers"] == 1
  assert one["kernels_in_command_buffers"] == counts["kernels"]


@pytest.mark.skipif(not HAS_PLUGIN, reason="needs JAX's CUDA plugin (pip install -e "
                    "'.[gpu-aot]', no GPU needed)")
def test_cyclegan_gradients_map_onto_cudnn_kernels(tmp_path):
  """Each conv's weight gradient is cuDNN's filter-gradient kernel: no forward conv with a
  window the size of the image (autodiff of an input-dilated ConvTranspose gave XLA one)."""
  import re
  small = ["--set", "model.ngf=8", "--set", "model.ndf=8", "--set", "model.n_blocks=1",
           "--set", "image_size=32", "--set", "load_size=36"]
  result = _run("--preset", "cyclegan", *small, "--hlo", str(tmp_path / "step.hlo"),
                "--json", str(tmp_path / "k.json"))
  assert result.returncode == 0, result.stderr
  hlo = (tmp_path / "step.hlo").read_text()
  windows = [tuple(map(int, w)) for line in hlo.splitlines() if "__cudnn$conv" in line
             for w in re.findall(r"window=\{size=(\d+)x(\d+)", line)]
  assert windows and max(max(w) for w in windows) <= 7, sorted(set(windows))
  # Per generator: 1 + 2 + 2 (one block) + 2 + 1 = 8 convs; per discriminator 5. Every one
  # has a filter gradient, and one step differentiates each network once.
  kinds = __import__("json").loads((tmp_path / "k.json").read_text())["kinds"]
  assert kinds["conv backward-filter"] >= 2 * 8 + 2 * 5
