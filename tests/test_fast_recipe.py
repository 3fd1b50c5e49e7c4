"""configs/cifar10_fast.py: FastNet, whitening, airbench's optimiser groups, Lookahead,
alternating flips, translate TTA, fractional epochs, time_to_accuracy."""
import math
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import tiny_fast_config
from jaxgan import experiment, parallel, schedules
from jaxgan.checkpoint import Checkpointer
from jaxgan.classifier import cross_entropy, lookahead, make_optimizer, param_groups
from jaxgan.models import FastNet, count_params
from jaxgan.models.layers import Conv, identity_init



def fastnet_params(widths=(64, 256, 256), shapes_only=False):
  init = lambda: FastNet(widths=widths).init(jax.random.PRNGKey(0), jnp.zeros((1, 32, 32, 3)))
  return jax.eval_shape(init) if shapes_only else init()


def test_fastnet_has_airbench94s_parameters_in_the_right_groups():
  variables = fastnet_params(shapes_only=True)
  params = variables["params"]
  assert count_params(params) == 1_971_640
  assert params["whiten"]["kernel"].shape == (24, 2, 2, 3)  # (out, kh, kw, in)
  labels = param_groups(params)
  sizes = {}
  for label, leaf in zip(jax.tree_util.tree_leaves(labels), jax.tree_util.tree_leaves(params)):
    sizes[label] = sizes.get(label, 0) + leaf.size
  assert sizes == {"frozen": 288, "whiten_bias": 24, "norm_bias": 2 * (64 + 256 + 256),
                   "default": 1_971_640 - 288 - 24 - 1152}
  # Without data whitening (whiten_images=0) the first conv trains like any other.
  unwhitened = jax.tree_util.tree_leaves(param_groups(params, whitened=False))
  assert "frozen" not in unwhitened and unwhitened.count("default") == len(unwhitened) - 1 - 6
  # BN scales are frozen at 1: not parameters at all.
  assert not any("scale" in str(p) for p, _ in jax.tree_util.tree_leaves_with_path(params))
  out = jax.eval_shape(FastNet().apply, variables, jnp.ones((3, 32, 32, 3)))
  assert out.shape == (3, 10)


def test_identity_init_passes_the_input_channels_through():
  conv = Conv(6, (3, 3), padding=1, use_bias=False, kernel_init=identity_init())
  x = jax.random.normal(jax.random.PRNGKey(1), (2, 5, 5, 4))
  variables = conv.init(jax.random.PRNGKey(0), x)
  y = conv.apply(variables, x)
  np.testing.assert_allclose(y[..., :4], x, atol=1e-6)
  assert np.abs(variables["params"]["kernel"][4:]).sum() > 0  # the rest keep their init


def test_whitening_kernel_whitens_the_training_patches():
  rng = np.random.default_rng(0)
  base = rng.normal(size=(64, 12, 12, 1))
  x = np.concatenate([base, 0.5 * base + 0.3 * rng.normal(size=base.shape),
                      rng.normal(size=base.shape) * 2], -1).astype(np.float32)
  kernel = np.asarray(FastNet().whitening_kernel(jnp.asarray(x), eps=5e-4))
  assert kernel.shape == (24, 2, 2, 3)  # (out, kh, kw, in)
  np.testing.assert_allclose(kernel[12:], -kernel[:12])
  # Independent: the patches by sliding windows, HWC order.
  patches = np.lib.stride_tricks.sliding_window_view(x, (2, 2), axis=(1, 2))  # n,h,w,c,2,2
  flat = patches.transpose(0, 1, 2, 4, 5, 3).reshape(-1, 12).astype(np.float64)
  evals = np.linalg.eigvalsh(flat.T @ flat / len(flat))[::-1]
  out = flat @ kernel[:12].reshape(12, 12).T
  moment = out.T @ out / len(out)
  np.testing.assert_allclose(moment, np.diag(evals / (evals + 5e-4)), atol=2e-4)


def test_every_classifier_recipe_takes_every_schedule():
  """--config.schedule=<kind> works on any classifier recipe: each defines every schedule's
  values (a schedule that reads a field the recipe lacks could not be added by a flag)."""
  from jaxgan.configs import cifar10_fast, darknet_cifar10, tiny_darknet, wrn22_cifar10
  from jaxgan.classifier import make_schedules
  for module in (cifar10_fast, darknet_cifar10, tiny_darknet, wrn22_cifar10):
    for kind in ("clr_beta", "clr", "triangle", "constant"):
      config = module.get_config()
      config.schedule = kind
      lr, momentum = make_schedules(config, 100)
      assert 0 < float(lr(50)) <= config.learning_rate * 1.000001, kind
      assert 0 < float(momentum(50)) < 1, kind


def test_triangle_schedule_is_airbenchs():
  lr, mom = schedules.triangle(476, 1.5, 0.2, 23, 0.07, 0.85)
  top = int(476 * 0.23)
  assert top == 109
  for step, want in [(0, 0.2), (top, 1.0), (476, 0.07), (50, 0.2 + 0.8 * 50 / top),
                     (300, 1.0 + (0.07 - 1.0) * (300 - top) / (476 - top))]:
    assert float(lr(step)) == pytest.approx(1.5 * want, rel=1e-5)
  assert float(mom(123)) == pytest.approx(0.85)


def test_optimizer_groups_match_a_hand_written_nesterov_sgd():
  config = tiny_fast_config("fake")
  config.bias_lr_scale = 64.0
  spe, total = 2, 5
  params = fastnet_params((4, 8, 8))["params"]
  tx = make_optimizer(config, total, spe)
  lr_fn, _ = schedules.triangle(total, config.learning_rate, *config.triangle, config.momentum)
  labels = param_groups(params)
  m, wd, scale = config.momentum, config.weight_decay, config.bias_lr_scale
  grads = jax.tree_util.tree_map(lambda p: jnp.full_like(p, 0.1), params)
  want = jax.tree_util.tree_map(lambda p: np.asarray(p, np.float64), params)
  bufs = jax.tree_util.tree_map(np.zeros_like, want)
  opt_state, got, update = tx.init(params), params, jax.jit(tx.update)
  for step in range(total):
    updates, opt_state = update(grads, opt_state, got)
    got = jax.tree_util.tree_map(lambda p, u: p + u, got, updates)

    def reference(label, p, buf):  # torch.optim.SGD(nesterov=True, weight_decay) per group
      lr, decay = float(lr_fn(step)), wd
      if label == "frozen" or (label == "whiten_bias" and step >= config.whiten_bias_epochs * spe):
        return p, buf
      if label == "norm_bias":
        lr, decay = lr * scale, wd / scale
      g = 0.1 + decay * p
      buf = m * buf + g
      return p - lr * (g + m * buf), buf

    pairs = jax.tree_util.tree_map(reference, labels, want, bufs)
    want = jax.tree_util.tree_map(lambda _, t: t[0], labels, pairs)
    bufs = jax.tree_util.tree_map(lambda _, t: t[1], labels, pairs)
    for a, b in zip(jax.tree_util.tree_leaves(got), jax.tree_util.tree_leaves(want)):
      np.testing.assert_allclose(a, b, rtol=2e-5, atol=1e-6)
  assert np.array_equal(got["whiten"]["kernel"], params["whiten"]["kernel"])
  assert not np.array_equal(got["whiten"]["bias"], params["whiten"]["bias"])


def test_lookahead_matches_airbenchs_loop():
  spe, total = 5, 23
  ema_config = types.SimpleNamespace(start_epochs=1, every_n_steps=3, decay_base=0.9,
                                     decay_pow=2.0)
  delta = lambda t: 1.0 + 0.3 * t  # what the optimiser adds at step t

  # airbench94's loop, with a scalar network.
  net, ema, cur, seen = 0.0, None, 0, []
  for epoch in range(math.ceil(total / spe)):
    for _ in range(spe):
      net += delta(cur)
      cur += 1
      if epoch >= ema_config.start_epochs and cur % ema_config.every_n_steps == 0:
        if ema is None:
          ema = net
        else:
          rho = ema_config.decay_base ** ema_config.every_n_steps * (cur / total) ** 2.0
          ema = ema + (1 - rho) * (net - ema)
          net = ema
      if cur >= total:
        break
      seen.append(net) if cur % spe else None
    if ema is not None:
      net = ema
    seen.append(net)

  ours, state = [], types.SimpleNamespace(step=jnp.int32(0), ema={"params": 0.0, "batch_stats": 0.0})
  w = jnp.float32(0.0)
  for t in range(total):
    state.step = jnp.int32(t)
    w, b, state.ema = lookahead(state, w + delta(t), w + delta(t), ema_config, spe, total)
    np.testing.assert_allclose(w, b)
    ours.append(float(w))
  np.testing.assert_allclose(ours, seen, rtol=1e-5)
  assert ours[-1] != pytest.approx(sum(delta(t) for t in range(total)))  # it did average


def test_label_smoothing_matches_the_formula():
  logits = jax.random.normal(jax.random.PRNGKey(0), (6, 10))
  labels = jnp.arange(6)
  targets = 0.8 * jax.nn.one_hot(labels, 10) + 0.02
  want = -(targets * jax.nn.log_softmax(logits)).sum(-1)
  np.testing.assert_allclose(cross_entropy(logits, labels, 10, 0.2), want, rtol=1e-5)


def test_alternating_flips_flip_each_image_both_ways_every_two_epochs(image_folder16):
  task = experiment.build_task(tiny_fast_config(image_folder16), jax.local_devices()[:1])
  index, rng = jnp.arange(task.n_train), jax.random.PRNGKey(3)
  flip0 = np.asarray(task.alternating_flips(rng, index, 0))
  assert 0.2 < flip0.mean() < 0.8
  spe = task.steps_per_epoch
  for step, flipped in [(spe - 1, flip0), (spe, ~flip0), (2 * spe + 1, flip0), (3 * spe, ~flip0)]:
    np.testing.assert_array_equal(task.alternating_flips(rng, index, step), flipped)
  # Per image, not per batch position; and another run (key) flips other images.
  np.testing.assert_array_equal(task.alternating_flips(rng, index[::-1], 0), flip0[::-1])
  assert not np.array_equal(task.alternating_flips(jax.random.PRNGKey(4), index, 0), flip0)


def test_translate_tta_is_airbenchs_weighted_average_of_six_views(image_folder16):
  task = experiment.build_task(tiny_fast_config(image_folder16), jax.local_devices()[:1])
  state = task.init_state(jax.random.PRNGKey(0))
  images = np.asarray(task.eval_inputs["data"]["images"][0])
  labels = np.asarray(task.eval_inputs["data"]["labels"][0])
  x = (images / 255.0 - task.mean) / task.std
  net = lambda v: np.asarray(task.model.apply({"params": state.params,
                                               "batch_stats": state.batch_stats},
                                              jnp.asarray(v, jnp.float32)))
  pad = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)), mode="reflect")
  views = [x, pad[:, :16, :16], pad[:, 2:, 2:]]
  mirror = [0.5 * (net(v) + net(v[:, :, ::-1])) for v in views]
  scores = 0.5 * mirror[0] + 0.25 * (mirror[1] + mirror[2])
  result = task.evaluate(parallel.replicate(state, task.devices))
  assert result["accuracy_translate_tta"] == pytest.approx((scores.argmax(-1) == labels).mean())


def test_fast_recipe_resumes_bit_exactly_with_weight_averaging(image_folder16, tmp_path):
  # 36 images / batch 8: 4 steps per epoch, 2.5 epochs = 10 steps; averaging from step 5.
  straight, resumed = str(tmp_path / "straight"), str(tmp_path / "resumed")
  trained = experiment.train_and_evaluate(tiny_fast_config(image_folder16), straight)
  assert experiment.train_and_evaluate(tiny_fast_config(image_folder16, num_train_steps=6),
                                       resumed)["step"] == 6
  assert experiment.train_and_evaluate(tiny_fast_config(image_folder16), resumed)["step"] == 10
  (a, meta), (b, _) = Checkpointer(straight).restore(None), Checkpointer(resumed).restore(None)
  assert meta["step"] == 10
  for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)):
    np.testing.assert_array_equal(x, y)
  # The whitening filters come from the data and never train; after the last epoch end the
  # weights are the average.
  task = experiment.build_task(tiny_fast_config(image_folder16), jax.local_devices()[:1])
  fresh = task.init_state(jax.random.PRNGKey(0))
  np.testing.assert_allclose(a["params"]["whiten"]["kernel"], fresh.params["whiten"]["kernel"],
                             rtol=1e-6)
  assert not np.allclose(a["params"]["whiten"]["bias"], 0)
  for x, y in zip(jax.tree_util.tree_leaves(a["params"]), jax.tree_util.tree_leaves(
      a["ema"]["params"])):
    np.testing.assert_array_equal(x, y)
  # evaluate.py restores the averaged weights and reports the translate TTA too.
  again = experiment.evaluate(straight, num_devices=1)
  for key in ("accuracy", "accuracy_flip_tta", "accuracy_translate_tta"):
    assert again[key] == pytest.approx(trained["eval"][key])


def test_fast_recipe_learns_real_cifar10(shared_cifar, cache_dir, tmp_path):
  from jaxgan.writers import read_metrics
  # The recipe as it is (lr, bias lr x 64, smoothing, averaging) at a CPU-sized width and
  # subset: 5,000 train / 1,000 test images, 3 epochs of batch 250.
  config = tiny_fast_config(shared_cifar, cache_dir, image_size=32, model__widths=(16, 32, 32),
                            train_subset=5000, eval_subset=1000, batch_size=250,
                            eval_batch_size=500, num_epochs=3.0, log_every_steps=5)
  workdir = str(tmp_path / "run")
  result = experiment.train_and_evaluate(config, workdir)
  losses = [r["loss"] for r in read_metrics(workdir) if r["split"] == "train" and "loss" in r]
  assert losses[-1] < losses[0] - 0.3
  # Chance is 10%.
  assert result["eval"]["accuracy_translate_tta"] > 0.35


def test_time_to_accuracy_reports_the_first_epoch_that_reaches_the_target(image_folder16):
  from benchmarks.time_to_accuracy import default_metric, time_to_accuracy
  config = tiny_fast_config(image_folder16)
  assert default_metric(config) == "accuracy_translate_tta"
  lines = []
  out = time_to_accuracy(config, target=0.0, metric="accuracy", seeds=2, report=lines.append)
  assert [r["seed"] for r in out["runs"]] == [0, 1]
  for r in out["runs"]:
    hit = r["reached"]
    assert hit["epoch"] == 1.0  # any accuracy >= 0 on the first evaluation
    assert hit["time_to_target_s"] == pytest.approx(
        r["init_s"] + r["history"][0]["train_s"] + hit["eval_s"])
    assert [h["epoch"] for h in r["history"]] == [1.0, 2.0, 2.5]
  assert out["summary"]["reached"] == 2 and out["compile_s"] > 0
  never = time_to_accuracy(config, target=1.01, metric="accuracy", seeds=1, report=lines.append)
  assert never["runs"][0]["reached"] is None and never["summary"]["time_to_target_mean_s"] is None
  assert any("not reached" in line for line in lines)


def test_fast_recipe_on_four_devices_matches_one_device(image_folder16, tmp_path):
  """Alternating flips, averaging and the optimiser groups are global: 4 devices x batch 2
  train the same weights as 1 device x batch 8 (BatchNorm statistics span the devices)."""
  finals = []
  for n in (1, 4):
    workdir = str(tmp_path / f"dev{n}")
    experiment.train_and_evaluate(tiny_fast_config(image_folder16, num_devices=n), workdir)
    finals.append(Checkpointer(workdir).restore(None)[0])
  # Rounding differs with the reduction order and the recipe's BN-shift lr (x64 = 96 here)
  # amplifies it to ~2e-3 over 10 steps; unsynchronised BN or per-device flips give O(1).
  for a, b in zip(jax.tree_util.tree_leaves(finals[0]), jax.tree_util.tree_leaves(finals[1])):
    np.testing.assert_allclose(a, b, rtol=1e-2, atol=5e-3)


def test_a_reused_task_follows_a_new_seeds_data_order(image_folder16):
  """time_to_accuracy reuses one compiled task for every seed: the data order must follow."""
  config = tiny_fast_config(image_folder16)
  task = experiment.build_task(config, jax.local_devices()[:1])
  first = np.asarray(task.train_batch(0)["order"])
  with config.unlocked():
    config.seed = 1
  assert not np.array_equal(np.asarray(task.train_batch(0)["order"]), first)
