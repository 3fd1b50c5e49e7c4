"""WGAN: schedule, clipping, gradient penalty, training, resume, outputs."""
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import tiny_wgan_config, write_image_folder
from jaxgan import experiment, parallel
from jaxgan.checkpoint import Checkpointer
from jaxgan.wgan import clip_params, critic_batches_before, gradient_penalty, n_critic
from jaxgan.writers import read_metrics


@pytest.fixture
def gan_folder(tmp_path):
  # Flat-coloured squares: easy for a critic to tell from an untrained generator's output.
  return write_image_folder(tmp_path / "gan", classes=("x", "y"), per_class=(24, 0), size=16)


def test_n_critic_schedule_of_the_reference():
  from jaxgan.configs import wgan_cifar10
  config = wgan_cifar10.get_config()
  assert [n_critic(i, config) for i in (0, 24, 25, 499, 500, 501, 1000)] == \
      [100, 100, 5, 5, 100, 5, 100]
  for s in (0, 1, 24, 25, 26, 499, 500, 501, 1234):
    assert critic_batches_before(s, config) == sum(n_critic(i, config) for i in range(s))


def test_clipping_bounds_every_leaf_and_nothing_else():
  params = {"conv": {"kernel": jnp.array([[-3.0, 0.005], [0.2, -0.01]])},
            "bn": {"scale": jnp.ones(3), "bias": jnp.array([-1.0, 0.0, 0.5])}}
  out = clip_params(params, 0.01)
  c = np.float32(0.01)
  for leaf in jax.tree_util.tree_leaves(out):
    assert float(jnp.abs(leaf).max()) <= c
  np.testing.assert_array_equal(out["conv"]["kernel"], np.float32([[-c, 0.005], [c, -c]]))
  np.testing.assert_array_equal(out["bn"]["scale"], np.full(3, c))
  np.testing.assert_array_equal(out["bn"]["bias"], np.float32([-c, 0, c]))


def test_critic_step_clips_before_updating_and_leaves_the_generator(gan_folder):
  config = tiny_wgan_config(gan_folder, lr_d=1e-4)
  task = experiment.build_task(config, jax.local_devices()[:1])
  state = task.init_state(jax.random.PRNGKey(0))
  state = state.replace(d_params=jax.tree_util.tree_map(lambda p: p * 0 + 5.0, state.d_params))
  step = parallel.pmap_step(
      lambda s, b: task.critic_update(s, b["images"], b["index"][0], jax.random.PRNGKey(1)),
      task.devices)
  new, metrics = step(parallel.replicate(state, task.devices), task.train_batch(0))
  new = parallel.unreplicate(new)
  # RMSProp's first step moves a weight by at most 10 * lr after the clip to 0.01.
  bound = config.clip + 10 * config.lr_d + 1e-7
  leaves = jax.tree_util.tree_leaves(new.d_params)
  assert all(float(np.abs(x).max()) <= bound for x in leaves)
  assert any("BatchNorm" in jax.tree_util.keystr(p) for p, _ in
             jax.tree_util.tree_flatten_with_path(new.d_params)[0])
  for a, b in zip(jax.tree_util.tree_leaves(state.g_params), jax.tree_util.tree_leaves(new.g_params)):
    np.testing.assert_array_equal(a, b)


def test_gradient_penalty_matches_closed_forms():
  w = jax.random.normal(jax.random.PRNGKey(0), (4, 4, 3))
  real = jax.random.normal(jax.random.PRNGKey(1), (5, 4, 4, 3))
  fake = jax.random.normal(jax.random.PRNGKey(2), (5, 4, 4, 3))
  # Linear critic: the gradient is w everywhere.
  linear = lambda x: jnp.sum(x * w, axis=(1, 2, 3))
  gp = gradient_penalty(linear, real, fake, jax.random.PRNGKey(3))
  assert float(gp) == pytest.approx((float(jnp.linalg.norm(w)) - 1) ** 2, rel=1e-5)
  # Quadratic critic sum(x^2): gradient 2 x_hat at the same interpolates.
  eps = jax.random.uniform(jax.random.PRNGKey(3), (5, 1, 1, 1))
  x_hat = np.asarray(eps * real + (1 - eps) * fake, np.float64)
  norms = np.sqrt(((2 * x_hat) ** 2).sum(axis=(1, 2, 3)))
  gp = gradient_penalty(lambda x: jnp.sum(x * x, axis=(1, 2, 3)), real, fake,
                        jax.random.PRNGKey(3))
  assert float(gp) == pytest.approx(np.mean((norms - 1) ** 2), rel=1e-5)


def test_scan_and_dispatched_critic_loops_agree(gan_folder, tmp_path):
  results = {}
  for mode in ("scan", "dispatch"):
    workdir = str(tmp_path / mode)
    experiment.train_and_evaluate(
        tiny_wgan_config(gan_folder, critic_loop=mode, num_train_steps=3), workdir)
    results[mode] = Checkpointer(workdir).restore(None)[0]
  for a, b in zip(jax.tree_util.tree_leaves(results["scan"]),
                  jax.tree_util.tree_leaves(results["dispatch"])):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


def test_critic_loss_falls_over_a_few_hundred_critic_steps(gan_folder, tmp_path):
  workdir = str(tmp_path / "run")
  # Iteration 0 has one critic step (the untrained critic's loss), then 6 x 50 more.
  experiment.train_and_evaluate(
      tiny_wgan_config(gan_folder, critic_iters=50, critic_iters_boost=1, critic_warmup_iters=0,
                       critic_boost_every=1000, lr_g=1e-5, num_train_steps=7,
                       iters_per_epoch=7, num_epochs=1, sample_every_steps=0), workdir)
  losses = [r["loss_d"] for r in read_metrics(workdir) if "loss_d" in r]
  assert len(losses) == 7
  # D(real) - D(fake) goes down as the critic learns to score fakes higher.
  assert losses[-1] < losses[0] - 0.008
  assert np.mean(losses[-3:]) < np.mean(losses[1:4])


def test_sample_grids_metrics_and_evaluate(gan_folder, image_folder, tmp_path):
  workdir = str(tmp_path / "run")
  experiment.train_and_evaluate(tiny_wgan_config(gan_folder, num_train_steps=8), workdir)
  # Training has no evaluation metric: no empty eval rows in the log.
  assert {r["split"] for r in read_metrics(workdir)} == {"train"}
  records = [r for r in read_metrics(workdir) if "loss_d" in r]
  assert {"loss_d", "loss_g", "d_real", "d_fake", "gen_iters_per_s"} <= set(records[-1])
  assert sorted(os.listdir(os.path.join(workdir, "samples"))) == ["step_0000004.png",
                                                                  "step_0000008.png"]
  from PIL import Image
  grid = np.asarray(Image.open(os.path.join(workdir, "samples", "step_0000008.png")))
  assert grid.shape == (4 * 18 + 2, 4 * 18 + 2, 3)  # 16 samples of 16x16, 2px borders
  assert grid[2:18, 2:18].std() > 0  # a real sample, not the border fill

  import subprocess
  import sys
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  cli = subprocess.run([sys.executable, "evaluate.py", f"--workdir={workdir}", "--num_samples=20",
                        "--num_devices=1"], cwd=root, capture_output=True, text=True, timeout=300)
  assert cli.returncode == 0, cli.stderr
  assert "20 samples vs 0 held-out" in cli.stdout and "memorisation: not measurable" in cli.stdout
  with open(os.path.join(workdir, "eval.json")) as f:
    out = json.load(f)
  # The flat folder has no test images: the training images are the reference, said so.
  assert out["feature_space"] == "pixels" and out["reference"].startswith("training images")
  assert out["frechet_distance"] > 0 and np.isfinite(out["kid"])
  # Every path in eval.json is absolute, whatever the --workdir given.
  assert out["workdir"] == workdir and out["samples"] == os.path.join(workdir, "samples.npz")
  with np.load(out["samples"]) as z:
    samples = z["images"]
  assert samples.shape == (20, 16, 16, 3) and samples.dtype == np.uint8
  assert os.path.exists(out["grid"])

  # --dataset points the metrics at another copy: one with a test split gives held-out images.
  out = experiment.evaluate(workdir, dataset=image_folder, num_samples=20, num_devices=1)
  assert out["dataset"] == image_folder and out["num_held_out"] == 12
  assert out["reference"].startswith("held-out")


def test_resume_reproduces_uninterrupted_run(gan_folder, tmp_path):
  straight, resumed = str(tmp_path / "a"), str(tmp_path / "b")
  experiment.train_and_evaluate(tiny_wgan_config(gan_folder, num_train_steps=6), straight)
  experiment.train_and_evaluate(tiny_wgan_config(gan_folder, num_train_steps=3), resumed)
  experiment.train_and_evaluate(tiny_wgan_config(gan_folder, num_train_steps=6), resumed)
  a, b = Checkpointer(straight).restore(None)[0], Checkpointer(resumed).restore(None)[0]
  assert int(a["step"]) == int(b["step"]) == 6
  for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)):
    np.testing.assert_array_equal(x, y)


def test_gp_variant_and_four_devices_stay_in_sync(gan_folder, tmp_path):
  config = tiny_wgan_config(gan_folder, loss="wgan_gp", num_devices=4, num_train_steps=2)
  task = experiment.build_task(config, jax.local_devices()[:4])
  assert not task.critic.batch_norm and task.gp
  state = task.init_state(jax.random.PRNGKey(0))
  assert "batch_stats" not in state.d_stats and not state.d_stats
  step = task.compile_step(task.devices)
  state = parallel.replicate(state, task.devices)
  for s in range(2):
    state, metrics = step(state, task.train_batch(s))
  # Gradients are averaged, so every device holds the same networks.
  for leaf in jax.tree_util.tree_leaves((state.g_params, state.d_params)):
    leaf = np.asarray(leaf)
    for d in range(1, 4):
      np.testing.assert_array_equal(leaf[d], leaf[0])
  assert np.isfinite(np.asarray(metrics["loss_d"])).all()


def test_bad_wgan_settings_are_clear_errors(gan_folder, tmp_path):
  from jaxgan.errors import ConfigError
  with pytest.raises(ConfigError, match="power of two"):
    experiment.train_and_evaluate(tiny_wgan_config(gan_folder, image_size=24), str(tmp_path / "a"))
  with pytest.raises(ConfigError, match="loss"):
    experiment.train_and_evaluate(tiny_wgan_config(gan_folder, loss="hinge"), str(tmp_path / "b"))
  with pytest.raises(ConfigError, match="clip must be positive"):
    experiment.train_and_evaluate(tiny_wgan_config(gan_folder, clip=0.0), str(tmp_path / "c"))


def test_bfloat16_compute_keeps_float32_state(gan_folder):
  config = tiny_wgan_config(gan_folder, dtype="bfloat16")
  task = experiment.build_task(config, jax.local_devices()[:1])
  step = task.compile_step(task.devices)
  state, metrics = step(parallel.replicate(task.init_state(jax.random.PRNGKey(0)), task.devices),
                        task.train_batch(0))
  dtypes = {x.dtype for x in jax.tree_util.tree_leaves(
      (state.g_params, state.d_params, state.g_opt, state.d_opt)) if x.dtype.kind == "f"}
  assert dtypes == {np.dtype("float32")}
  assert all(np.isfinite(np.asarray(v)).all() for v in metrics.values())
  assert task.generate(state, task.fixed_noise[:4]).dtype == np.uint8
