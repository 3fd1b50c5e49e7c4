"""benchmarks/gpu_kernels.py: kernel counting of an optimised XLA:GPU module, and the
deviceless H100 compile where JAX's CUDA plugin is installed."""
import importlib.util
import subprocess
import sys

import pytest

from benchmarks import gpu_kernels

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


def test_target_config_describes_an_h100():
  text = gpu_kernels.target_config()
  assert "core_count: 132" in text and "cuda_compute_capability { major: 9 minor: 0 }" in text
  assert 'device_description_str: "NVIDIA H100 80GB HBM3"' in text
  assert text.count("{") == text.count("}")


try:
  HAS_PLUGIN = importlib.util.find_spec("jax_plugins.xla_cuda12") is not None
except ImportError:  # no jax_plugins package at all
  HAS_PLUGIN = False


def _run(*args):
  return subprocess.run([sys.executable, "benchmarks/gpu_kernels.py", *args],
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
  # Classifiers do not donate their state: donated, each updated kernel costs a copy.
  assert counts["donate"] is False and counts["kinds"].get("copy", 0) <= 1
  result = _run("--preset", "small", "--batch_size", "8", "--donate", "yes", "--json",
                str(tmp_path / "donated.json"))
  donated = json.loads((tmp_path / "donated.json").read_text())
  assert donated["kinds"]["copy"] >= 7 and donated["kernels"] > counts["kernels"]


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
