"""jaxgan's benchmarks: speed on one machine, beside PyTorch twins of the same steps.

Run each script as a module from the repository root, e.g.
`python -m benchmarks.train_throughput --preset small --torch off`; `--help` lists a
script's flags and its docstring says what it measures.

Scripts:
- train_throughput: the train step's throughput (compile time, ms/step, TFLOP/s, MFU,
  peak memory) of a preset, with the PyTorch twin's rows and the ratios.
- time_to_accuracy: wall-clock time until a classifier recipe reaches a test accuracy,
  over seeds, for jaxgan and/or its PyTorch twin.
- profile_step: where a train step's time goes (a jax.profiler trace, summarised).
- gpu_kernels: the GPU kernels and host launches of one train step, compiled for an H100
  on a machine without a GPU.
- compare_runs: train_throughput JSON files side by side (speed-up, loss gap).
- recompress_tar: an image archive re-encoded as JPEG (to carry data to a GPU machine).
- check_inception_against_pytorch_fid: jaxgan's FID InceptionV3 against pytorch-fid's.
- gpu_checks.sh: the GPU measurements, prepared for a lent GPU machine
  (`bash benchmarks/gpu_checks.sh` prints its parts).

Shared modules (imported, not run):
- common: the presets, the machine's description, phase timing, FLOP rates, JSON output,
  `--set` checks. No PyTorch.
- torch_models: the PyTorch twins of jaxgan's models, Flax weight copying, device-side
  crop/flip, the variants' set-up.
- torch_recipes: the classifier recipes in PyTorch, trained end to end (time_to_accuracy).
- torch_reference: the PyTorch train steps, timed (train_throughput's PyTorch rows).

Imports run one way (a <- b: b imports a): common <- train_throughput, profile_step,
gpu_kernels, time_to_accuracy, torch_reference; torch_models <- torch_recipes, torch_reference;
torch_recipes <- torch_reference, time_to_accuracy; torch_reference <- train_throughput. Only
the torch_* modules import PyTorch, and the scripts import them only when PyTorch rows or runs
are asked for: PyTorch is optional. `measure` and the rows' fields are described in
train_throughput's docstring; results measured on GPUs are in benchmarks/results/.
"""
