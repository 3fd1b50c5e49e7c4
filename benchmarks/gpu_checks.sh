#!/usr/bin/env bash
# The GPU measurements, prepared for a lent device machine (one H100 or
# H200, 15 minutes in all). That machine has JAX, Flax, Optax, Orbax, absl, tqdm, Pillow and
# PyTorch but no ml_collections, tensorboardX or TensorFlow, and no internet, so:
#
#   here, once:   bash benchmarks/gpu_checks.sh prepare      (wheels -> .whl/, CIFAR -> .data/,
#                 the code of commit 7b88581 -> .baseline/)
#   device tool:  run(command="DEADLINE=560 bash benchmarks/gpu_checks.sh flags stack conv_fusion",
#                     carry=[".whl", ".data", ".baseline"], timeout_s=580)
#   then, warm:   "ab rerun", then "profile_cyclegan" (under the winning XLA_FLAGS), each
#                 with DEADLINE = device time left (status) - 60
#
# Parts run in the order given, into one log ($OUT/gpu.log); each writes JSON under $OUT. At
# most 8 files come back per call, so more than 7 JSON files are packed into results.tar.gz
# at the end (a call killed before its end keeps them loose: keep DEADLINE under timeout_s).
# DEADLINE (seconds, default 540) caps the whole command: each benchmark's timeout is cut to
# the time left, and one that would get under 60 s is skipped, so the parts that ran still
# come back (set it under the call's timeout_s and under the device time left). Device
# time is 15 minutes per loan including the machine's start (1-2 min).
#   fast        cifar10_fast on the JPEG copy, 3 seeds: the PyTorch twin first, then jaxgan
#               timed to the twin's mean final accuracy                         (~1.5 min)
#   throughput  train-step table, jaxgan vs PyTorch (eager, channels_last, compile):
#               fastnet batch 1024 and darknet batch 512, bfloat16            (~3 min)
#   wrn22       wrn22 batch 512 bfloat16                                         (~1.5 min)
#   wgan        wgan64 batch 64 bfloat16 + float32 (torch.compile failed on 2026-11-27; the
#               twin's generator input now has NHWC strides)                    (~2 min)
#   cyclegan    cyclegan batch 1 bfloat16 (2026-11-27: initialisation 90 s, now on the host
#               CPU; torch.compile ran out of time, the eager rows were lost) (~3-5 min)
#   more        wrn22 wgan cyclegan
#   darknet     the notebook Darknet recipe on the JPEG copy, 1 seed: the PyTorch twin, then
#               jaxgan timed to the twin's final accuracy                       (~4 min)
#   darknet_compile   the Darknet recipe's PyTorch twin under torch.compile (the eager twin
#               ran 4.6 s an epoch at batch 256, jaxgan 1.4 s)                  (~3 min)
#   profile     where the step's time goes (benchmarks.profile_step): darknet at batch 256
#               (2026-11-27: 78 command buffers a step, profiled before the steps settled) (~1.5 min)
#   profile_cyclegan   the same for cyclegan at batch 1                        (~3 min)
#   ab          jaxgan's step at commit 7b88581 (.baseline/) and now, on the same
#               machine: darknet 512 and cyclegan 1, bfloat16, no PyTorch. Later commits cut the
#               kernels per step by 28% and 44% but raised the host launches (graphs split;
#               benchmarks.gpu_kernels) and stored conv kernels (out, kh, kw, in)
#               and donates every state again: this measures what all that moved (~5 min)
#   flags       jaxgan's darknet 256 and cyclegan 1 steps under two XLA_FLAGS settings:
#               default; convolutions captured in command buffers (CONVOLUTION, off by
#               default) with no minimum graph size                            (~4 min)
#               Compiled without a GPU, the second makes each step one CUDA graph
#               (1 host launch instead of 335 for darknet 512, 1,071 for cyclegan)
#   stack       cyclegan 1 with stack_networks=true (G_A with G_B, D_A with D_B, as one
#               vmapped call each: 462 host launches, grouped convolutions), under the same
#               two settings                                                   (~2.5 min)
#   conv_fusion the flags part's steps under a third setting: that + cuDNN conv fusions
#               (also one graph; experimental, float32 convolution outputs)    (~2 min)
#   rerun       train.py's compilation cache: the notebook Darknet recipe, 2 steps, twice; the
#               second run's compile_s is a load from the cache                  (~2 min)
#   h2z         the full-size horse2zebra recipe (256x256, 9 blocks, bfloat16) for the time
#               left: as many epochs as fit at ~60 ms an iteration, the last half of them
#               decaying the lr to 0; then evaluate.py with the domain classifier trained on
#               the CPU (carried in .h2z/) and the grids. prepare puts a JPEG-75 copy of
#               horse2zebra (~42 MiB: a call carries 64) and that classifier's last
#               checkpoint in .h2z/:
#               run(command="DEADLINE=560 bash benchmarks/gpu_checks.sh h2z",
#                   carry=[".whl", ".h2z"], timeout_s=590)                   (all the time left)
# Measured on an H100 on 2026-11-27 (benchmarks/results/h100_2026-11-27*/): fast, throughput,
# wrn22, wgan, darknet, profile, cyclegan's jaxgan row. Still to run: cyclegan's PyTorch rows,
# profile_cyclegan, flags, stack, conv_fusion, ab, rerun, darknet_compile.
# time_to_accuracy runs each framework in its own process; train_throughput runs both in one
# (the pre-flight checks that they coexist).
# EXTRA_FLAGS is appended to time_to_accuracy's and rerun's flags (a CPU dry run: small
# --config.* values).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-gpu_out}
DEADLINE=${DEADLINE:-540}
LOG="$OUT/gpu.log"

setup_device() {
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 JAXGAN_CACHE_DIR=/tmp/jaxgan-cache
  export XLA_PYTHON_CLIENT_PREALLOCATE=false
  mkdir -p "$OUT"
  OUT=$(cd "$OUT" && pwd) && LOG="$OUT/gpu.log"  # absolute: the ab part runs from .baseline/
  { nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv \
      || echo "no nvidia-smi"; } | tee -a "$LOG"
  # Pre-flight, seconds: each framework runs a convolution on the accelerator.
  timeout 120 python3 -c "import jax, jax.numpy as jnp; x = jnp.ones((8, 32, 32, 3)); \
print('jax', jax.__version__, jax.devices(), float(jax.lax.conv_general_dilated(x, \
jnp.ones((3, 3, 3, 8)), (1, 1), 'SAME', dimension_numbers=('NHWC', 'HWIO', 'NHWC')).sum()))" \
    2>&1 | tail -1 | tee -a "$LOG"
  timeout 120 python3 -c "import torch; d = 'cuda' if torch.cuda.is_available() else 'cpu'; \
print('torch', torch.__version__, d, float(torch.nn.functional.conv2d(torch.ones(8, 3, 32, 32, \
device=d), torch.ones(8, 3, 3, 3, device=d), padding=1).sum()))" 2>&1 | tail -1 | tee -a "$LOG"
  # train_throughput runs both frameworks in one process: check that they coexist.
  timeout 120 python3 -c "import jax, jax.numpy as jnp, torch; \
d = 'cuda' if torch.cuda.is_available() else 'cpu'; a = float((jnp.ones((256, 256)) @ \
jnp.ones((256, 256))).sum()); b = float(torch.nn.functional.conv2d(torch.ones(8, 3, 32, 32, \
device=d), torch.ones(8, 3, 3, 3, device=d)).sum()); print('jax + torch in one process', a, b)" \
    2>&1 | tail -1 | tee -a "$LOG"
}

capped() {  # seconds wanted -> seconds granted before DEADLINE (0: skip)
  local left=$((DEADLINE - SECONDS - 10))
  local t=$(( $1 < left ? $1 : left ))
  (( t >= 60 )) && echo "$t" || echo 0
}

bench() {  # seconds, a benchmarks/ module's name, then its flags
  local t; t=$(capped "$1")
  (( t )) || { echo "skipped (deadline): $2 ${*:3}" | tee -a "$LOG"; return; }
  timeout "$t" python3 -m "benchmarks.$2" "${@:3}" 2>&1 | grep --line-buffered -v "^[IW][0-9]" \
    | tee -a "$LOG"
  local rc=${PIPESTATUS[0]}
  (( rc == 124 )) && echo "timed out after $t s: $2 ${*:3}" | tee -a "$LOG"
  return 0  # one benchmark's failure must not end the call: the next parts still run
}
tta() { bench "$1" time_to_accuracy "${@:2}" ${EXTRA_FLAGS:-}; }
tp() { bench "$1" train_throughput "${@:2}"; }
baseline_tp() {  # train_throughput of commit 7b88581, from .baseline/ (run the
  # same way: python -m benchmarks.train_throughput from there, a namespace package)
  [ -d .baseline/jaxgan ] || { echo "no .baseline/ (run prepare here, carry it)" | tee -a "$LOG"
                               return; }
  (cd .baseline && PYTHONPATH=/tmp/site:$PWD JAXGAN_CACHE_DIR=/tmp/jaxgan-cache-baseline \
     bench "$1" train_throughput "${@:2}")
}
prof() { bench "$1" profile_step "${@:2}"; }
compare() {  # train_throughput JSONs side by side: ms, speed-up, last-step loss gap
  python3 -m benchmarks.compare_runs "$@" 2>&1 | tee -a "$LOG"
}
# XLA flag settings of the flags and stack parts, after the caller's own XLA_FLAGS.
XLA_SETTINGS=("" "--xla_gpu_enable_command_buffer=+CONVOLUTION --xla_gpu_graph_min_graph_size=1"
  "--xla_gpu_enable_command_buffer=+CONVOLUTION --xla_gpu_graph_min_graph_size=1 --xla_gpu_experimental_enable_conv_fusion=true")
CALLER_XLA_FLAGS=${XLA_FLAGS:-}
with_setting() {
  export XLA_FLAGS="$CALLER_XLA_FLAGS ${XLA_SETTINGS[$1]}"
  echo "XLA_FLAGS=$XLA_FLAGS" | tee -a "$LOG"
}

CIFAR=.data/cifar10-jpeg75.tar.xz
if [ $# -gt 1 ] && [[ " $* " == *" prepare "* ]]; then
  echo "prepare runs here, alone: bash benchmarks/gpu_checks.sh prepare" >&2
  exit 2
fi
parts=()
for part in "${@:-usage}"; do
  case "$part" in
    more) parts+=(wrn22 wgan cyclegan) ;;  # one name for the three remaining families
    prepare|fast|throughput|wrn22|wgan|cyclegan|darknet|darknet_compile|profile|profile_cyclegan|flags|stack|conv_fusion|ab|rerun|h2z)
      parts+=("$part") ;;
    *) echo "usage: bash benchmarks/gpu_checks.sh prepare | PART... (PART: fast throughput" \
         "wrn22 wgan cyclegan more darknet darknet_compile profile profile_cyclegan" \
         "flags stack conv_fusion ab rerun h2z), e.g. DEADLINE=540 bash benchmarks/gpu_checks.sh fast throughput" >&2
       exit 2 ;;
  esac
done
[ "$1" = prepare ] || setup_device
for part in "${parts[@]}"; do
echo "== $part (${SECONDS} s into the call)" | { [ "$part" = prepare ] && cat || tee -a "$LOG"; }
case "$part" in
  prepare)
    for p in /.whl/ /.data/ /.baseline/ /.h2z/; do
      grep -qxF "$p" .git/info/exclude || echo "$p" >> .git/info/exclude
    done
    mkdir -p .whl .data
    python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
      --implementation cp --platform manylinux_2_28_x86_64 -d .whl \
      ml_collections==1.1.0 tensorboardX==2.6.5
    cp ../shared/data/cifar10-jpeg75.tar.xz .data/
    rm -rf .baseline && mkdir .baseline
    git archive 7b88581 jaxgan benchmarks/train_throughput.py benchmarks/torch_reference.py \
      configs | tar -x -C .baseline
    touch .baseline/benchmarks/__init__.py  # a package of its own, run with python -m
    # horse2zebra re-encoded at JPEG quality 75 (120 MB -> ~42 MiB: a call carries 64 MiB),
    # and the last checkpoint of the domain classifier that scores it
    # (configs/domain_classifier.py, trained here).
    rm -rf .h2z && mkdir -p .h2z/h2z_domains/checkpoints
    python3 -m benchmarks.recompress_tar ../shared/data/horse2zebra.tar .h2z/horse2zebra.tar \
      --quality 75
    clf=${H2Z_CLASSIFIER:-runs/h2z_domains}
    last=$(ls "$clf/checkpoints" 2>/dev/null | sort -n | tail -n 1)
    if [ -n "$last" ]; then
      cp "$clf/config.json" "$clf/eval.json" .h2z/h2z_domains/
      cp -r "$clf/checkpoints/$last" .h2z/h2z_domains/checkpoints/
    else
      rm -rf .h2z/h2z_domains
      echo "no domain classifier in $clf: train one (configs/domain_classifier.py), set H2Z_CLASSIFIER"
    fi
    du -sh .h2z
    ls -la .whl .data .baseline .h2z
    ;;
  fast)
    tta 240 --config configs/cifar10_fast.py --dataset "$CIFAR" --target 0.94 --seeds 3 \
      --framework torch --torch_variant channels_last --json "$OUT/tta_fast_torch.json"
    target=(--target_from "$OUT/tta_fast_torch.json")
    [ -s "$OUT/tta_fast_torch.json" ] || target=(--target 0.94)  # the twin did not finish
    tta 240 --config configs/cifar10_fast.py --dataset "$CIFAR" --seeds 3 --framework jax \
      "${target[@]}" --json "$OUT/tta_fast_jax.json"
    ;;
  throughput)
    tp 170 --preset fastnet --batch_sizes 1024 --dtypes bfloat16 --steps 20 \
      --json "$OUT/tp_fastnet.json"
    tp 170 --preset darknet --batch_sizes 512 --dtypes bfloat16 --steps 20 \
      --json "$OUT/tp_darknet.json"
    ;;
  wrn22)
    tp 150 --preset wrn22 --batch_sizes 512 --dtypes bfloat16 --steps 20 --json "$OUT/tp_wrn22.json"
    ;;
  wgan)
    tp 150 --preset wgan64 --batch_sizes 64 --dtypes bfloat16,float32 --steps 10 \
      --json "$OUT/tp_wgan64.json"
    ;;
  cyclegan)
    tp 300 --preset cyclegan --batch_sizes 1 --dtypes bfloat16 --steps 10 \
      --json "$OUT/tp_cyclegan.json"
    ;;
  darknet)
    tta 240 --config configs/darknet_cifar10.py --dataset "$CIFAR" --target 0.94 --seeds 1 \
      --metric accuracy_flip_tta --framework torch --torch_variant channels_last \
      --json "$OUT/tta_darknet_torch.json"
    target=(--target_from "$OUT/tta_darknet_torch.json")
    [ -s "$OUT/tta_darknet_torch.json" ] || target=(--target 0.94)
    tta 240 --config configs/darknet_cifar10.py --dataset "$CIFAR" --seeds 1 \
      --metric accuracy_flip_tta "${target[@]}" --json "$OUT/tta_darknet_jax.json"
    ;;
  darknet_compile)
    tta 240 --config configs/darknet_cifar10.py --dataset "$CIFAR" --target 0.94 --seeds 1 \
      --metric accuracy_flip_tta --framework torch --torch_variant compile \
      --json "$OUT/tta_darknet_torch_compile.json"
    ;;
  profile)
    prof 120 --preset darknet --batch_size 256 --json "$OUT/prof_darknet256.json"
    ;;
  flags|conv_fusion)
    # The same jaxgan steps under XLA flag settings (each a process of its own: XLA reads
    # XLA_FLAGS once), after the caller's flags. Darknet's step at 256 ran 78 command buffers
    # with the cuDNN convolutions launched between them; CONVOLUTION (off by default) captures
    # those, so the host launches fewer, larger graphs. Each row's "last step" losses should
    # agree with the default setting's up to rounding (same data, same start): a faster
    # setting must not be a wrong one. flags: settings 0 and 1; conv_fusion: setting 2
    # (experimental in XLA, float32 convolution outputs), apart so it can run last.
    [ "$part" = flags ] && which=(0 1) || which=(2)
    for i in "${which[@]}"; do
      with_setting "$i"
      tp 100 --preset darknet --batch_sizes 256 --dtypes bfloat16 --warm_steps 30 --steps 50 \
        --torch off --json "$OUT/flags${i}_darknet.json"
      tp 120 --preset cyclegan --batch_sizes 1 --dtypes bfloat16 --warm_steps 10 --steps 20 \
        --torch off --json "$OUT/flags${i}_cyclegan.json"
    done
    export XLA_FLAGS="$CALLER_XLA_FLAGS"
    for preset in darknet cyclegan; do
      compare "$OUT/flags0_$preset.json" "$OUT/flags1_$preset.json" \
        $( [ "$part" = conv_fusion ] && echo "$OUT/flags2_$preset.json" )
    done
    ;;
  stack)
    # CycleGAN with stack_networks (each pair of networks one vmapped call, grouped
    # convolutions): 462 host launches a step instead of 1,071, compiled without a GPU, but
    # grouped convolutions are often slower on GPUs. Under the first two settings of flags;
    # compare with flags0_cyclegan / flags1_cyclegan from the same call.
    for i in 0 1; do
      with_setting "$i"
      tp 120 --preset cyclegan --batch_sizes 1 --dtypes bfloat16 --warm_steps 10 --steps 20 \
        --torch off --set stack_networks=true --json "$OUT/stack${i}_cyclegan.json"
    done
    export XLA_FLAGS="$CALLER_XLA_FLAGS"
    compare "$OUT"/flags{0,1}_cyclegan.json "$OUT"/stack{0,1}_cyclegan.json
    ;;
  rerun)
    # train.py keeps compiled programs (~/.cache/jaxgan/xla by default): the
    # notebook Darknet recipe twice, 2 steps each, in new workdirs. The first run's compile_s
    # is a compile (31-47 s on an H100 before), the rerun's a load from the cache.
    rm -rf /tmp/jaxgan-xla
    for r in first rerun; do
      t=$(capped 150)
      (( t )) || { echo "skipped (deadline): rerun $r" | tee -a "$LOG"; break; }
      rm -rf "/tmp/rerun_$r"
      start=$SECONDS
      timeout "$t" python3 train.py --config configs/darknet_cifar10.py --workdir "/tmp/rerun_$r" \
        --config.dataset="$CIFAR" --config.num_train_steps=2 --config.eval_subset=512 \
        --config.progress_bar=False --config.compilation_cache=/tmp/jaxgan-xla ${EXTRA_FLAGS:-} \
        2>&1 | grep --line-buffered -v "^[IW][0-9]" | tail -n 2 | tee -a "$LOG"
      echo "$r: whole command $((SECONDS - start)) s; $(grep -h -o '"compile_s": [0-9.]*' \
        "/tmp/rerun_$r/metrics.jsonl")" | tee -a "$LOG"
    done
    ;;
  profile_cyclegan)
    prof 240 --preset cyclegan --batch_size 1 --json "$OUT/prof_cyclegan.json"
    ;;
  h2z)
    # Epochs of 1,334 iterations at ~60 ms (55 ms measured, 2026-11-27), leaving 150 s for
    # compiling, evaluating and the grids; SIGTERM at the deadline still saves a checkpoint.
    t=$(capped $((DEADLINE - SECONDS)))
    epochs=$(( (t - 150) / 80 ))
    (( epochs >= 1 )) || { echo "skipped (deadline): h2z" | tee -a "$LOG"; continue; }
    decay=$(( epochs / 2 ))
    echo "h2z: $epochs epochs ($decay decaying), $((t - 120)) s at most" | tee -a "$LOG"
    start=$SECONDS
    timeout "$((t - 120))" python3 train.py --config configs/cyclegan_horse2zebra.py \
      --workdir /tmp/h2z_full --config.dataset=.h2z/horse2zebra.tar --config.dtype=bfloat16 \
      --config.num_epochs="$epochs" --config.decay_epochs="$decay" --config.progress_bar=False \
      --config.log_every_steps=500 --config.sample_every_steps=1334 ${EXTRA_FLAGS:-} 2>&1 \
      | grep --line-buffered -v "^[IW][0-9]" | tail -n 20 | tee -a "$LOG"
    echo "h2z: training took $((SECONDS - start)) s" | tee -a "$LOG"
    features=()
    [ -d .h2z/h2z_domains ] && features=(--features=darknet:.h2z/h2z_domains)
    timeout "$(capped 110)" python3 evaluate.py --workdir /tmp/h2z_full "${features[@]}" 2>&1 \
      | grep --line-buffered -v "^[IW][0-9]" | tee -a "$LOG"
    cp /tmp/h2z_full/eval.json "$OUT/h2z_eval.json" 2>/dev/null
    cp /tmp/h2z_full/eval.png "$OUT/h2z_eval.png" 2>/dev/null
    last=$(ls /tmp/h2z_full/samples/*.png 2>/dev/null | tail -n 1)
    [ -n "$last" ] && cp "$last" "$OUT/h2z_train_grid.png"
    cp /tmp/h2z_full/metrics.jsonl "$OUT/h2z_metrics.jsonl" 2>/dev/null
    ;;
  ab)
    # Before and after, alternating, so drift on the machine shows as well as the change.
    common=(--dtypes bfloat16 --torch off --warm_steps 30)
    baseline_tp 90 --preset darknet --batch_sizes 512 "${common[@]}" --steps 50 \
      --json "$OUT/ab_darknet_before.json"
    tp 90 --preset darknet --batch_sizes 512 "${common[@]}" --steps 50 \
      --json "$OUT/ab_darknet_after.json"
    baseline_tp 200 --preset cyclegan --batch_sizes 1 "${common[@]}" --steps 20 \
      --json "$OUT/ab_cyclegan_before.json"
    tp 120 --preset cyclegan --batch_sizes 1 "${common[@]}" --steps 20 \
      --json "$OUT/ab_cyclegan_after.json"
    compare "$OUT"/ab_darknet_{before,after}.json "$OUT"/ab_cyclegan_{before,after}.json
    ;;
esac
done
# The device tool returns at most 8 files a call: past 7 results, they travel as one archive.
results=("$OUT"/*.json)
if [ "${#results[@]}" -gt 7 ] && [ -e "${results[0]}" ]; then
  tar -czf "$OUT/results.tar.gz" -C "$OUT" "${results[@]##*/}" && rm -f "${results[@]}"
  echo "results: $OUT/results.tar.gz (${#results[@]} JSON files)" | tee -a "$LOG"
fi
exit 0
