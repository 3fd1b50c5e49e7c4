"""End-to-end training on tiny configs: devices, resume, outputs, evaluation."""
import json
import os

import jax
import numpy as np
import pytest

from conftest import tiny_config
from jaxgan import experiment
from jaxgan.checkpoint import Checkpointer
from jaxgan.writers import read_metrics


def final_params(workdir):
  state, meta = Checkpointer(workdir).restore(None)
  return state["params"], state["batch_stats"], meta


def train_losses(workdir):
  return {r["step"]: r["loss"] for r in read_metrics(workdir)
          if r["split"] == "train" and "loss" in r}


def test_four_devices_match_one_device(image_folder, tmp_path):
  assert jax.local_device_count() >= 4, "conftest sets 4 fake CPU devices"
  runs = {}
  for n in (1, 4):
    workdir = str(tmp_path / f"dev{n}")
    config = tiny_config(image_folder, num_devices=n, log_every_steps=1, num_train_steps=5)
    experiment.train_and_evaluate(config, workdir)
    runs[n] = (train_losses(workdir), final_params(workdir))
  (losses1, (p1, bs1, _)), (losses4, (p4, bs4, _)) = runs[1], runs[4]
  assert sorted(losses1) == [1, 2, 3, 4, 5]
  np.testing.assert_allclose([losses4[s] for s in range(1, 6)],
                             [losses1[s] for s in range(1, 6)], rtol=1e-4)
  # Training moved the parameters, identically on both.
  for a, b in zip(jax.tree_util.tree_leaves(p1), jax.tree_util.tree_leaves(p4)):
    np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-5)
  for a, b in zip(jax.tree_util.tree_leaves(bs1), jax.tree_util.tree_leaves(bs4)):
    np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-5)


def test_resume_mid_epoch_reproduces_uninterrupted_run(image_folder, tmp_path):
  # 36 training images / batch 8 = 4 steps per epoch; stop at step 3, mid-epoch.
  straight = str(tmp_path / "straight")
  experiment.train_and_evaluate(tiny_config(image_folder, num_train_steps=7), straight)
  resumed = str(tmp_path / "resumed")
  first = experiment.train_and_evaluate(tiny_config(image_folder, num_train_steps=3), resumed)
  assert first["step"] == 3
  _, _, meta = final_params(resumed)
  assert (meta["epoch"], meta["position_in_epoch"]) == (0, 3)
  second = experiment.train_and_evaluate(tiny_config(image_folder, num_train_steps=7), resumed)
  assert second["step"] == 7
  (pa, ba, _), (pb, bb, _) = final_params(straight), final_params(resumed)
  for a, b in zip(jax.tree_util.tree_leaves((pa, ba)), jax.tree_util.tree_leaves((pb, bb))):
    np.testing.assert_array_equal(a, b)
  init = experiment.build_task(tiny_config(image_folder), jax.local_devices()[:1]).init_state(
      jax.random.PRNGKey(0))
  assert not np.allclose(jax.tree_util.tree_leaves(init.params)[0], jax.tree_util.tree_leaves(pa)[0])
  # Losses logged after resuming are the uninterrupted run's (step 4's interval differs:
  # the resumed run's began at step 3).
  la, lb = train_losses(straight), train_losses(resumed)
  for s in (6, 7):
    assert la[s] == pytest.approx(lb[s], rel=1e-6)


def test_workdir_outputs_and_evaluate(image_folder, tmp_path):
  workdir = str(tmp_path / "run")
  result = experiment.train_and_evaluate(
      tiny_config(image_folder, keep_checkpoints=2, num_epochs=3), workdir)
  assert Checkpointer(workdir).all_steps() == [8, 12]  # keeps the last two
  records = read_metrics(workdir)
  train = [r for r in records if r["split"] == "train" and "loss" in r]
  assert {"loss", "accuracy", "lr", "momentum", "images_per_s"} <= set(train[-1])
  assert any("compile_s" in r for r in records)
  evals = [r for r in records if r["split"] == "eval"]
  assert [r["step"] for r in evals] == [4, 8, 12]
  assert os.listdir(os.path.join(workdir, "tensorboard"))
  with open(os.path.join(workdir, "config.json")) as f:
    assert json.load(f)["model"]["nf"] == 4
  # lr and momentum logged are the schedule's values at that step.
  from jaxgan.classifier import make_schedules
  lr_fn, mom_fn = make_schedules(tiny_config(image_folder, num_epochs=3), 12)
  assert train[-1]["lr"] == pytest.approx(float(lr_fn(train[-1]["step"] - 1)), rel=1e-5)
  assert train[-1]["momentum"] == pytest.approx(float(mom_fn(train[-1]["step"] - 1)), rel=1e-5)

  out = experiment.evaluate(workdir, num_devices=1)
  with open(os.path.join(workdir, "eval.json")) as f:
    saved = json.load(f)
  assert saved == out
  assert out["num_examples"] == 12 and out["step"] == 12
  assert set(out["per_class_accuracy"]) == {"a", "b", "c"}
  # Per-class accuracies average (equal class sizes) to the overall accuracy.
  assert np.mean(list(out["per_class_accuracy"].values())) == pytest.approx(out["accuracy"])
  assert out["accuracy"] == pytest.approx(result["eval"]["accuracy"])


def test_evaluation_counts_every_example_on_any_device_count(image_folder):
  # 12 test images, 4 devices x eval batch 8 (2 per device): a padded last batch.
  from jaxgan.parallel import replicate
  results = []
  for n in (1, 4):
    config = tiny_config(image_folder, num_devices=n, eval_batch_size=8)
    task = experiment.build_task(config, jax.local_devices()[:n])
    state = task.init_state(jax.random.PRNGKey(0))
    counts = task.eval_counts(replicate(state, task.devices))
    assert counts["total"].sum() == 12
    results.append(counts)
  np.testing.assert_allclose(results[0]["correct"], results[1]["correct"])
  np.testing.assert_allclose(results[0]["loss"], results[1]["loss"], rtol=1e-5)


def test_evaluate_on_random_data_keeps_the_runs_count(tmp_path):
  """`fake` data has no test set to score whole (-1 would draw 50,000 random images)."""
  workdir = str(tmp_path / "run")
  experiment.train_and_evaluate(tiny_config("fake", train_subset=16, eval_subset=8,
                                            num_train_steps=1), workdir)
  assert experiment.evaluate(workdir, num_devices=1)["num_examples"] == 8
  assert experiment.evaluate(workdir, num_devices=1, eval_subset=4)["num_examples"] == 4


def test_eval_images_are_not_augmented(image_folder):
  """Eval logits equal the model applied to the plainly normalised test images."""
  import jax.numpy as jnp
  from jaxgan.parallel import replicate
  from jaxgan.data import augment
  config = tiny_config(image_folder)
  task = experiment.build_task(config, jax.local_devices()[:1])
  state = task.init_state(jax.random.PRNGKey(0))
  images = np.asarray(task.eval_inputs["data"]["images"][0])
  labels = np.asarray(task.eval_inputs["data"]["labels"][0])
  logits = task.model.apply({"params": state.params, "batch_stats": state.batch_stats},
                            augment.normalize(jnp.asarray(images), task.mean, task.std))
  want_correct = np.sum(np.argmax(np.asarray(logits), -1) == labels)
  counts = task.eval_counts(replicate(state, task.devices))
  assert counts["correct"].sum() == want_correct
  # Normalisation statistics come from the training images.
  train = np.asarray(task.train_data["images"][0]) / 255.0
  np.testing.assert_allclose(task.mean, train.mean((0, 1, 2)), rtol=1e-5)
  np.testing.assert_allclose(task.std, train.std((0, 1, 2)), rtol=1e-4)


def test_loss_decreases_on_a_learnable_folder(tmp_path):
  from conftest import write_image_folder
  data = write_image_folder(tmp_path / "easy", per_class=(40, 10))
  workdir = str(tmp_path / "run")
  experiment.train_and_evaluate(
      tiny_config(data, num_epochs=6, batch_size=24, eval_batch_size=30, learning_rate=0.2,
                  log_every_steps=5), workdir)
  losses = train_losses(workdir)
  steps = sorted(losses)
  assert losses[steps[-1]] < 0.5 * losses[steps[0]]
  evals = [r for r in read_metrics(workdir) if r["split"] == "eval"]
  assert evals[-1]["accuracy"] >= 0.9  # brightness separates the three classes


def test_bad_config_values_are_clear_errors(image_folder, tmp_path):
  from jaxgan.errors import ConfigError
  with pytest.raises(ConfigError, match="batch_size=10 does not split evenly over 4"):
    experiment.train_and_evaluate(tiny_config(image_folder, num_devices=4, batch_size=10),
                                  str(tmp_path / "a"))
  with pytest.raises(ConfigError, match="learning_rate must be positive"):
    experiment.train_and_evaluate(tiny_config(image_folder, learning_rate=0.0), str(tmp_path / "b"))
  with pytest.raises(ConfigError, match="dtype"):
    experiment.train_and_evaluate(tiny_config(image_folder, dtype="float8"), str(tmp_path / "c"))
  with pytest.raises(ConfigError, match="larger than the 36 training images"):
    experiment.train_and_evaluate(tiny_config(image_folder, batch_size=64), str(tmp_path / "d"))


def test_unwritable_workdir_is_a_clear_error(image_folder, tmp_path):
  from jaxgan.errors import WorkdirError
  blocker = tmp_path / "file"
  blocker.write_text("not a directory")
  with pytest.raises(WorkdirError, match="cannot write to the workdir"):
    experiment.train_and_evaluate(tiny_config(image_folder), str(blocker / "run"))


def test_wide_resnet_recipe_trains_through_the_same_loop(image_folder, tmp_path):
  from jaxgan.configs import wrn22_cifar10
  from conftest import set_fields
  config = wrn22_cifar10.get_config()
  set_fields(config, dict(dataset=image_folder, cache_dir="none", image_size=8, augment__pad=2,
                          num_devices=1, batch_size=8, eval_batch_size=8, num_epochs=1,
                          progress_bar=False, log_every_steps=1, model__stem=4,
                          model__widths=(8, 8, 16), model__blocks_per_group=1))
  workdir = str(tmp_path / "wrn")
  result = experiment.train_and_evaluate(config, workdir)
  assert result["step"] == 4 and np.isfinite(result["train"]["loss"])
  from jaxgan.schedules import clr
  lr_fn, mom_fn = clr(4, 1.3, 50, 15, (0.95, 0.85))
  logged = [r for r in read_metrics(workdir) if "lr" in r]
  for r in logged:  # the DAWNBench use_clr schedule drives the optimiser
    assert r["lr"] == pytest.approx(float(lr_fn(r["step"] - 1)), rel=1e-5)
    assert r["momentum"] == pytest.approx(float(mom_fn(r["step"] - 1)), rel=1e-5)


def test_a_real_overflow_stops_at_once_without_writing_a_checkpoint(image_folder, tmp_path):
  from jaxgan.errors import NonFiniteLossError
  workdir = str(tmp_path / "run")
  # An absurd learning rate: the first update overflows the parameters.
  with pytest.raises(NonFiniteLossError,
                     match=r"loss became (nan|inf) at step 2; .*no checkpoint had been written"):
    experiment.train_and_evaluate(tiny_config(image_folder, learning_rate=1e30,
                                              weight_decay=1e30), workdir)
  assert Checkpointer(workdir).all_steps() == []


def test_periodic_work_helper():
  from jaxgan.loop import is_due
  assert [s for s in range(1, 11) if is_due(s, 3)] == [3, 6, 9]
  assert [s for s in range(1, 11) if is_due(s, 3, last=10)] == [3, 6, 9, 10]
  assert not any(is_due(s, 0) for s in range(1, 5)) and is_due(4, 0, last=4)


def test_bfloat16_training_keeps_float32_parameters_and_optimizer_state(image_folder, tmp_path):
  workdir = str(tmp_path / "bf16")
  result = experiment.train_and_evaluate(tiny_config(image_folder, dtype="bfloat16",
                                                     num_train_steps=4), workdir)
  assert np.isfinite(result["train"]["loss"]) and np.isfinite(result["eval"]["loss"])
  state, _ = Checkpointer(workdir).restore(None)
  floats = {np.asarray(x).dtype for x in jax.tree_util.tree_leaves(state)
            if np.asarray(x).dtype.kind == "f"}
  assert floats == {np.dtype("float32")}


def test_fresh_state_is_built_on_the_host_and_evaluated_on_the_task_device(image_folder,
                                                                            tmp_path):
  """init_state runs on the host CPU whatever the default device (on a GPU, drawing the
  initial parameters compiled kernel by kernel: CycleGAN's took 90 s on an H100), compiles
  its program once per task, and restore_latest hands evaluation the state on the task's
  first device. Device 0 is the host CPU here; the default and the task's are others."""
  from conftest import tiny_cyclegan_config, tiny_wgan_config
  from jaxgan.checkpoint import restore_latest
  devices = jax.local_devices()
  host = jax.devices("cpu")[0]
  placed = lambda tree: {d for x in jax.tree_util.tree_leaves(tree) for d in x.devices()}
  configs = (tiny_config(image_folder), tiny_wgan_config(image_folder),
             tiny_cyclegan_config())
  for config in configs:
    task = experiment.build_task(config, devices[2:3])
    with jax.default_device(devices[1]):
      first = task.init_state(jax.random.PRNGKey(0))
      second = task.init_state(jax.random.PRNGKey(1))
    assert placed(first) == placed(second) == {host}, config.get("task")
    assert task._init_fn._cache_size() == 1
    leaves = lambda s: jax.tree_util.tree_leaves(s)
    assert any(not np.array_equal(a, b) for a, b in zip(leaves(first), leaves(second)))

  workdir = str(tmp_path / "run")
  experiment.train_and_evaluate(tiny_config(image_folder, num_train_steps=1), workdir)
  with jax.default_device(devices[1]):
    _, task, state, step = restore_latest(
        workdir, lambda config, meta: experiment.build_task(config, devices[2:3]))
  assert step == 1 and placed(state) == {devices[2]}


@pytest.fixture
def without_the_suites_compilation_cache():
  """JAX as a user's process starts it: no compilation cache until jaxgan sets one."""
  from jax.experimental.compilation_cache import compilation_cache as cc
  names = ("jax_compilation_cache_dir", "jax_compilation_cache_max_size",
           "jax_persistent_cache_min_compile_time_secs")
  saved = {name: getattr(jax.config, name) for name in names}
  jax.config.update("jax_compilation_cache_dir", None)
  jax.config.update("jax_compilation_cache_max_size", -1)
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)  # tiny programs too
  cc.reset_cache()
  yield
  for name, value in saved.items():
    jax.config.update(name, value)
  cc.reset_cache()


def test_a_rerun_loads_its_compiled_programs_from_the_cache(
    image_folder, tmp_path, without_the_suites_compilation_cache):
  from jax.experimental.compilation_cache import compilation_cache as cc
  from jaxgan import parallel
  cache = tmp_path / "xla"
  # JAX stamps an entry's <key>-atime file each time it loads the entry.
  stamps = lambda: {p.name: p.read_bytes() for p in cache.glob("*-atime")}
  hits = []
  listener = lambda event, **kw: hits.append(event) if event.endswith("/cache_hits") else None
  jax.monitoring.register_event_listener(listener)
  try:
    params = []
    for run in ("first", "rerun"):
      jax.clear_caches()  # as a new process: nothing compiled in memory
      hits.clear()
      config = tiny_config(image_folder, num_train_steps=3, compilation_cache=str(cache))
      experiment.train_and_evaluate(config, str(tmp_path / run))
      params.append(final_params(str(tmp_path / run))[0])
      if run == "first":
        first = stamps()
        assert not hits and len(first) >= 2  # the train and eval steps at least
    # The rerun compiled nothing: every program of the first run was loaded from the disk.
    again = stamps()
    assert again.keys() == first.keys() and len(hits) >= len(first)
    assert all(again[k] != first[k] for k in first)
    assert sorted(p.name for p in cache.glob("*-cache")) == sorted(
        k.replace("-atime", "-cache") for k in first)
    assert jax.config.jax_compilation_cache_max_size == parallel.COMPILATION_CACHE_MAX_BYTES
    for a, b in zip(jax.tree_util.tree_leaves(params[0]), jax.tree_util.tree_leaves(params[1])):
      np.testing.assert_array_equal(a, b)
    # evaluate.py loads the run's programs from its cache when told where it is (never from
    # the workdir's config.json: tests/test_untrusted.py).
    jax.config.update("jax_compilation_cache_dir", None)
    cc.reset_cache()
    jax.clear_caches()
    hits.clear()
    experiment.evaluate(str(tmp_path / "first"), compilation_cache=str(cache))
    assert jax.config.jax_compilation_cache_dir == str(cache) and hits
  finally:
    jax.monitoring.unregister_event_listener(listener)


def test_compilation_cache_settings(tmp_path, monkeypatch, caplog,
                                    without_the_suites_compilation_cache):
  from jaxgan import parallel
  from jaxgan.errors import ConfigError
  for off in ("none", "None", "off"):
    assert parallel.use_compilation_cache(off) is None
  assert jax.config.jax_compilation_cache_dir is None
  # A folder that cannot be made: the user's is an error that names the field, unless
  # evaluating (strict=False) or one host of several; jaxgan's default one only warns.
  blocker = tmp_path / "a_file"
  blocker.write_text("")
  with pytest.raises(ConfigError, match=r"--config.compilation_cache: .*a_file/xla.*'none'"):
    parallel.use_compilation_cache(str(blocker / "xla"))
  assert parallel.use_compilation_cache(str(blocker / "xla"), strict=False) is None
  with monkeypatch.context() as m:
    m.setattr(jax, "process_count", lambda: 2)
    assert parallel.use_compilation_cache(str(blocker / "xla")) is None
  monkeypatch.setenv("JAXGAN_CACHE_DIR", str(blocker))
  with caplog.at_level("WARNING"):
    assert parallel.use_compilation_cache("") is None
  assert "Compiling without the cache" in caplog.text
  assert jax.config.jax_compilation_cache_dir is None
  # "~" is the user's home.
  monkeypatch.setenv("HOME", str(tmp_path / "home"))
  assert parallel.use_compilation_cache("~/xla") == str(tmp_path / "home" / "xla")
  # A cache JAX already has is left alone.
  assert parallel.use_compilation_cache(str(tmp_path / "other")) == str(tmp_path / "home" / "xla")
  assert not (tmp_path / "other").exists()


def test_entries_an_interrupted_write_left_are_dropped(
    tmp_path, monkeypatch, without_the_suites_compilation_cache):
  """A <key>-cache file without its <key>-atime (the process was killed, or the disk filled,
  while JAX wrote it) would make every later write under the size cap fail."""
  from jaxgan import parallel
  cache = tmp_path / "cache" / "xla"
  cache.mkdir(parents=True)
  stamp = (1).to_bytes(8, "little")
  files = {"whole-cache": b"x" * 10, "whole-atime": stamp, "cut-cache": b"x" * 3,
           "cut-atime": b"\x01", "killed-cache": b"x" * 5, "stray-atime": stamp}
  for name, data in files.items():
    (cache / name).write_bytes(data)
  monkeypatch.setenv("JAXGAN_CACHE_DIR", str(tmp_path / "cache"))
  assert parallel.use_compilation_cache("") == str(cache)
  assert sorted(p.name for p in cache.iterdir() if p.name != ".lockfile") == [
      "whole-atime", "whole-cache"]
  # JAX's writes under the cap work again (they fail while a partial entry is there).
  jax.jit(lambda x: x * 2 + 1)(np.ones(3, np.float32)).block_until_ready()
  keys = lambda suffix: {p.name.removesuffix(suffix) for p in cache.glob("*" + suffix)}
  assert keys("-cache") == keys("-atime") and len(keys("-cache")) >= 2


def test_xla_flags_once_jax_has_started(monkeypatch, caplog):
  # train.py applies --config.xla_flags before JAX starts (tests/test_cli.py sees XLA use
  # them). In this process JAX runs already, and XLA would ignore new flags silently.
  from jaxgan import parallel
  from jaxgan.errors import ConfigError
  jax.devices()
  monkeypatch.setenv("XLA_FLAGS", "--xla_force_host_platform_device_count=3 "
                     "--xla_force_host_platform_device_count=4")
  # Already in effect (the later of a flag given twice wins, as in XLA): nothing to do.
  for same in ("", " --xla_force_host_platform_device_count=4 "):
    assert parallel.use_xla_flags(same) is None
  with pytest.raises(ConfigError, match="JAX has already started"):
    parallel.use_xla_flags("--xla_force_host_platform_device_count=3")  # overridden in effect
  with pytest.raises(ConfigError, match="run train.py in a new process"):
    parallel.use_xla_flags("--xla_gpu_graph_min_graph_size=1")
  # evaluate.py's way: a warning, and the run goes on with what XLA has.
  assert parallel.use_xla_flags("--xla_gpu_graph_min_graph_size=1", strict=False) is None
  assert "JAX has already started" in caplog.text
  assert os.environ["XLA_FLAGS"].split()[-1] == "--xla_force_host_platform_device_count=4"
  with pytest.raises(ConfigError, match="is not an XLA flag"):
    parallel.use_xla_flags("xla_gpu_graph_min_graph_size=1")
