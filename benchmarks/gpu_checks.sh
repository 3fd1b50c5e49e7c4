#!/usr/bin/env bash
# The GPU measurements of issue 6, prepared for a session lent a device machine (one H100 or
# H200, 15 minutes in all). That machine has JAX, Flax, Optax, Orbax, absl, tqdm, Pillow and
# PyTorch but no ml_collections, tensorboardX or TensorFlow, and no internet, so:
#
#   here, once:   bash benchmarks/gpu_checks.sh prepare      (wheels -> .whl/, CIFAR -> .data/)
#   device tool:  run(command="bash benchmarks/gpu_checks.sh fast",
#                     carry=[".whl", ".data"], timeout_s=420)
#   then, warm:   run(command="bash benchmarks/gpu_checks.sh throughput", carry=[...], ...)
#
# Parts (each writes JSON + a log under $OUT, at most 8 files per call come back):
#   fast        cifar10_fast time to 94% (3 seeds) on the JPEG copy, jaxgan then PyTorch  ~4 min
#   throughput  train-step table, jaxgan vs PyTorch (eager, channels_last, compile):
#               fastnet 1024, darknet 512, wrn22 512 in bfloat16                        ~5 min
#   gans        wgan64 batch 64 and cyclegan batch 1, bfloat16 and float32               ~4 min
#   darknet     the notebook Darknet recipe's time to 94% (1 seed, 30 epochs)             ~4 min
# EXTRA_FLAGS is appended to each benchmark's flags (a CPU dry run: small --config.* values).
set -uo pipefail
cd "$(dirname "$0")/.."
part=${1:-}
OUT=${OUT:-gpu_out}

setup_device() {
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 JAXGAN_CACHE_DIR=/tmp/jaxgan-cache
  export XLA_PYTHON_CLIENT_PREALLOCATE=false  # JAX and PyTorch share the GPU in one process
  mkdir -p "$OUT"
  { nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv \
      || echo "no nvidia-smi"; } | tee -a "$OUT/gpu_$part.log"
}

CIFAR=.data/cifar10-jpeg75.tar.xz
case "$part" in
  prepare)
    for p in /.whl/ /.data/; do
      grep -qxF "$p" .git/info/exclude || echo "$p" >> .git/info/exclude
    done
    mkdir -p .whl .data
    python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
      --implementation cp --platform manylinux_2_28_x86_64 -d .whl \
      ml_collections==1.1.0 tensorboardX==2.6.5
    cp ../shared/data/cifar10-jpeg75.tar.xz .data/
    ls -la .whl .data
    ;;
  fast)
    setup_device
    timeout 400 python3 benchmarks/time_to_accuracy.py --config configs/cifar10_fast.py \
      --dataset "$CIFAR" --target 0.94 --seeds 3 --framework both \
      --torch_variant channels_last --json "$OUT/tta_fast.json" ${EXTRA_FLAGS:-} 2>&1 | tee -a "$OUT/gpu_$part.log"
    ;;
  throughput)
    setup_device
    for preset in "fastnet 1024" "darknet 512" "wrn22 512"; do
      set -- $preset
      timeout 150 python3 benchmarks/train_throughput.py --preset "$1" --batch_sizes "$2" \
        --dtypes bfloat16 --steps 20 --json "$OUT/tp_$1.json" 2>&1 | tee -a "$OUT/gpu_$part.log"
    done
    ;;
  gans)
    setup_device
    timeout 120 python3 benchmarks/train_throughput.py --preset wgan64 --batch_sizes 64 \
      --dtypes bfloat16,float32 --steps 10 --json "$OUT/tp_wgan64.json" 2>&1 \
      | tee -a "$OUT/gpu_$part.log"
    timeout 120 python3 benchmarks/train_throughput.py --preset cyclegan --batch_sizes 1 \
      --dtypes bfloat16,float32 --steps 10 --json "$OUT/tp_cyclegan.json" 2>&1 \
      | tee -a "$OUT/gpu_$part.log"
    ;;
  darknet)
    setup_device
    timeout 560 python3 benchmarks/time_to_accuracy.py --config configs/darknet_cifar10.py \
      --dataset "$CIFAR" --target 0.94 --seeds 1 --metric accuracy_flip_tta \
      --json "$OUT/tta_darknet.json" ${EXTRA_FLAGS:-} 2>&1 | tee -a "$OUT/gpu_$part.log"
    ;;
  *)
    echo "usage: bash benchmarks/gpu_checks.sh prepare|fast|throughput|gans|darknet" >&2
    exit 2
    ;;
esac
