"""CycleGAN training: losses, update order, data, devices, resume, translate, evaluate."""
import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from conftest import set_fields, tiny_cyclegan_config
from jaxgan import experiment, parallel
from jaxgan.checkpoint import Checkpointer
from jaxgan.cyclegan import CycleGANTask, gan_loss
from jaxgan.data import load_domains
from jaxgan.errors import ConfigError, DatasetError, WorkdirError
from jaxgan.images import from_uint8
from jaxgan.writers import read_metrics

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def write_domain(root, images):
  from PIL import Image
  os.makedirs(root, exist_ok=True)
  for i, img in enumerate(images):
    Image.fromarray(img).save(os.path.join(root, f"{i:04d}.png"))
  return str(root)


def state_leaves(workdir):
  state, _ = Checkpointer(workdir).restore(None)
  return state


def test_losses_match_independent_computation():
  task = CycleGANTask.build(tiny_cyclegan_config(), jax.local_devices()[:1])
  state = task.init_state(jax.random.PRNGKey(0))
  rng = np.random.default_rng(0)
  a, b = (jnp.asarray(rng.uniform(-1, 1, (2, 32, 32, 3)), jnp.float32) for _ in range(2))
  total, (losses, fake_a, fake_b) = task.generator_losses(state.g_params, state.d_params, a, b)
  g = lambda name, x: np.asarray(task.generator.apply({"params": state.g_params[name]}, x),
                                 np.float64)
  d = lambda name, x: np.asarray(task.discriminator.apply({"params": state.d_params[name]},
                                                          jnp.asarray(x, jnp.float32)), np.float64)
  fb, fa = g("G_A", a), g("G_B", b)
  np.testing.assert_allclose(fake_b, fb, atol=1e-5)  # the batched identity pass changes nothing
  want = {"G_A": np.mean((d("D_A", fb) - 1) ** 2), "G_B": np.mean((d("D_B", fa) - 1) ** 2),
          "cycle_A": 10 * np.mean(np.abs(g("G_B", jnp.asarray(fb, jnp.float32)) - np.asarray(a))),
          "cycle_B": 10 * np.mean(np.abs(g("G_A", jnp.asarray(fa, jnp.float32)) - np.asarray(b))),
          "idt_A": 5 * np.mean(np.abs(g("G_A", b) - np.asarray(b))),
          "idt_B": 5 * np.mean(np.abs(g("G_B", a) - np.asarray(a)))}
  for k, v in want.items():
    np.testing.assert_allclose(float(losses[k]), v, rtol=2e-4, err_msg=k)
  np.testing.assert_allclose(float(total), sum(want.values()), rtol=2e-4)
  d_total, d_losses = task.discriminator_losses(state.d_params, a, b, fake_a, fake_b)
  np.testing.assert_allclose(
      float(d_losses["D_A"]), 0.5 * (np.mean((d("D_A", b) - 1) ** 2) + np.mean(d("D_A", fb) ** 2)),
      rtol=2e-4)
  np.testing.assert_allclose(
      float(d_losses["D_B"]), 0.5 * (np.mean((d("D_B", a) - 1) ** 2) + np.mean(d("D_B", fa) ** 2)),
      rtol=2e-4)
  np.testing.assert_allclose(float(d_total), float(d_losses["D_A"] + d_losses["D_B"]), rtol=1e-6)
  # Without the identity term it is zero and the rest is unchanged.
  no_idt = CycleGANTask.build(tiny_cyclegan_config(lambda_identity=0.0), jax.local_devices()[:1])
  _, (l0, _, _) = no_idt.generator_losses(state.g_params, state.d_params, a, b)
  assert float(l0["idt_A"]) == float(l0["idt_B"]) == 0.0
  np.testing.assert_allclose(float(l0["cycle_A"]), want["cycle_A"], rtol=2e-4)
  assert float(gan_loss(jnp.array([0.0]), True, "vanilla")) == pytest.approx(np.log(2))


def test_stacked_networks_give_the_same_losses_and_gradients():
  # stack_networks runs each pair of networks as one vmapped call (grouped convolutions):
  # the same function of the parameters, with half the kernel launches.
  plain, stacked = (CycleGANTask.build(tiny_cyclegan_config(stack_networks=s), jax.local_devices()[:1])
                    for s in (False, True))
  state = plain.init_state(jax.random.PRNGKey(2))
  rng = np.random.default_rng(2)
  a, b = (jnp.asarray(rng.uniform(-1, 1, (2, 32, 32, 3)), jnp.float32) for _ in range(2))

  def g_loss(task):
    return jax.jit(jax.value_and_grad(
        lambda p: task.generator_losses(p, state.d_params, a, b), has_aux=True))

  def d_loss(task, fake_a, fake_b):
    return jax.jit(jax.value_and_grad(
        lambda p: task.discriminator_losses(p, a, b, fake_a, fake_b), has_aux=True))

  (g_total, (g_terms, fake_a, fake_b)), g_grads = g_loss(plain)(state.g_params)
  (g_total_s, (g_terms_s, fake_a_s, fake_b_s)), g_grads_s = g_loss(stacked)(state.g_params)
  (d_total, d_terms), d_grads = d_loss(plain, fake_a, fake_b)(state.d_params)
  (d_total_s, d_terms_s), d_grads_s = d_loss(stacked, fake_a, fake_b)(state.d_params)
  for name in g_terms:
    np.testing.assert_allclose(float(g_terms_s[name]), float(g_terms[name]), rtol=1e-5,
                               err_msg=name)
  for name in d_terms:
    np.testing.assert_allclose(float(d_terms_s[name]), float(d_terms[name]), rtol=1e-5,
                               err_msg=name)
  np.testing.assert_allclose(fake_b_s, fake_b, atol=1e-5)
  np.testing.assert_allclose(fake_a_s, fake_a, atol=1e-5)
  for got, want in ((g_grads_s, g_grads), (d_grads_s, d_grads)):
    for name in want:  # each network's gradient, not a mix of the two
      scale = max(float(np.abs(x).max()) for x in jax.tree_util.tree_leaves(want[name]))
      for x, y in zip(*(jax.tree_util.tree_leaves(t[name]) for t in (got, want))):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), atol=1e-5 * scale)
  # And each pair is a single call: every convolution of the stacked losses is grouped (two
  # groups), none of the plain ones.
  def grouped(task):
    text = str(jax.make_jaxpr(lambda g, d: (task.generator_losses(g, d, a, b)[0],
                                            task.discriminator_losses(d, a, b, fake_a, fake_b)[0]))(
        state.g_params, state.d_params))
    return text.count("feature_group_count=2"), text.count("conv_general_dilated")
  (n_grouped, n_convs), (n_plain_grouped, n_plain) = grouped(stacked), grouped(plain)
  assert n_grouped == n_convs > 0 and n_plain_grouped == 0
  assert n_plain == 2 * n_convs  # half the calls


@pytest.mark.parametrize("stack_networks", [False, True])
def test_one_step_is_generators_first_then_discriminators_on_the_old_fakes(stack_networks):
  # No crop offset, no flip and no pool: the step's inputs are known exactly.
  config = tiny_cyclegan_config(load_size=32, flip=False, pool_size=0,
                                stack_networks=stack_networks)
  devices = jax.local_devices()[:1]
  task = CycleGANTask.build(config, devices)
  state = task.init_state(jax.random.PRNGKey(1))
  batch = task.train_batch(0)
  index = np.asarray(batch["index"])[0]
  images = jax.device_get(batch["images"])
  a, b = from_uint8(images["a"][0][index[0]]), from_uint8(images["b"][0][index[1]])

  # Compiled (not op by op) only to keep the test fast.
  g_grads, (_, fake_a, fake_b) = jax.jit(jax.grad(
      lambda p: task.generator_losses(p, state.d_params, a, b), has_aux=True))(state.g_params)
  d_grads = jax.jit(jax.grad(lambda p: task.discriminator_losses(p, a, b, fake_a, fake_b)[0]))(
      state.d_params)
  want_g = optax.apply_updates(state.g_params, task.g_tx.update(g_grads, state.g_opt)[0])
  want_d = optax.apply_updates(state.d_params, task.d_tx.update(d_grads, state.d_opt)[0])

  new, metrics = task.compile_step(devices)(parallel.replicate(state, devices), batch)
  new = parallel.unreplicate(new)
  compared = total = 0
  for got, want, grads in ((new.g_params, want_g, g_grads), (new.d_params, want_d, d_grads)):
    scale = max(float(np.abs(g).max()) for g in jax.tree_util.tree_leaves(grads))
    for x, y, g in zip(*(jax.tree_util.tree_leaves(t) for t in (got, want, grads))):
      # Adam's first step is lr * sign(g): compare where g is clearly above rounding noise
      # (biases in front of instance norm have zero gradient up to rounding).
      clear = np.abs(np.asarray(g)) > 1e-4 * scale
      np.testing.assert_allclose(np.asarray(x)[clear], np.asarray(y)[clear], atol=1e-6)
      compared, total = compared + clear.sum(), total + clear.size
  assert compared > 0.8 * total
  # Biases that instance norm cancels get a zero gradient, so Adam leaves them exactly put.
  for name, params in state.g_params.items():
    mask = task.generator.cancelled_biases(params)
    for m, x, y in zip(*(jax.tree_util.tree_leaves(t) for t in (mask, new.g_params[name], params))):
      assert np.array_equal(x, y) == m
  assert int(new.step) == 1 and float(metrics["lr"][0]) == pytest.approx(2e-4)
  assert set(metrics) >= {"G_A", "G_B", "cycle_A", "cycle_B", "idt_A", "idt_B", "D_A", "D_B"}


def test_unaligned_pairing_epoch_length_and_crops():
  config = tiny_cyclegan_config(train_subset=-1)
  task = CycleGANTask.build(config, jax.local_devices()[:1])
  assert task.num_a == task.num_b == 64 and task.steps_per_epoch == 64
  task.num_a, task.num_b = 5, 64  # A smaller: A's order wraps round, B is drawn at random
  task._pairs = {}
  a, b = task._epoch_pairs(0)
  assert len(a) == 64 and np.bincount(a, minlength=5).min() >= 12 and a.max() == 4
  assert len(set(b)) > 30 and not np.array_equal(b, task._epoch_pairs(1)[1])
  # Crops are random windows of the stored 36x36 images, flipped about half the time.
  config = tiny_cyclegan_config(batch_size=4, num_devices=4)
  task = CycleGANTask.build(config, jax.local_devices()[:4])
  crop = parallel.pmap_step(lambda imgs, idx, k: task._augment(imgs, idx, k),
                            jax.local_devices()[:4], donate_state=False)
  stored = parallel.replicate(np.asarray(jax.device_get(task.images["a"]))[0],
                              jax.local_devices()[:4])
  idx = parallel.put_per_device(np.arange(4, dtype=np.int32).reshape(4, 1), jax.local_devices()[:4])
  out = np.asarray(crop(stored, idx, parallel.replicate(jax.random.PRNGKey(0),
                                                         jax.local_devices()[:4])))
  raw = from_uint8(np.asarray(jax.device_get(task.images["a"]))[0][:4]).astype(np.float32)
  assert out.shape == (4, 1, 32, 32, 3)
  for i in range(4):
    windows = [raw[i, r:r + 32, c:c + 32] for r in range(5) for c in range(5)]
    windows += [w[:, ::-1] for w in windows]
    assert sum(np.allclose(out[i, 0], w, atol=1e-6) for w in windows) == 1


def test_four_devices_match_one_device_with_batch_four(tmp_path):
  one, four = str(tmp_path / "one"), str(tmp_path / "four")
  r1 = experiment.train_and_evaluate(tiny_cyclegan_config(batch_size=4, num_train_steps=3), one)
  r4 = experiment.train_and_evaluate(
      tiny_cyclegan_config(batch_size=4, num_devices=4, num_train_steps=3), four)
  for k in ("G_A", "cycle_A", "D_B", "idt_B"):
    np.testing.assert_allclose(r1["train"][k], r4["train"][k], rtol=2e-4, err_msg=k)
  s1, s4 = state_leaves(one), state_leaves(four)
  # The pool is global, so its contents do not depend on the device count either.
  assert int(s1["pool_fake_a"]["count"]) == int(s4["pool_fake_a"]["count"]) == 4
  np.testing.assert_allclose(s1["pool_fake_b"]["images"], s4["pool_fake_b"]["images"], atol=2e-4)
  # Kernels agree. Biases in front of instance norm have zero gradient up to rounding, which
  # Adam scales up to lr-sized steps, so they differ by device count (as in any framework).
  for (path, x), y in zip(jax.tree_util.tree_leaves_with_path((s1["g_params"], s1["d_params"])),
                          jax.tree_util.tree_leaves((s4["g_params"], s4["d_params"]))):
    if "kernel" in jax.tree_util.keystr(path):
      np.testing.assert_allclose(x, y, atol=1e-4, err_msg=jax.tree_util.keystr(path))


def test_resume_reproduces_uninterrupted_run_with_adam_lr_and_pools(tmp_path):
  straight, resumed = str(tmp_path / "a"), str(tmp_path / "b")
  experiment.train_and_evaluate(tiny_cyclegan_config(), straight)
  experiment.train_and_evaluate(tiny_cyclegan_config(num_train_steps=11), resumed)
  mid = state_leaves(resumed)
  assert int(mid["pool_fake_a"]["count"]) == 4 and np.abs(mid["pool_fake_a"]["images"]).sum() > 0
  experiment.train_and_evaluate(tiny_cyclegan_config(), resumed)
  a, b = state_leaves(straight), state_leaves(resumed)
  assert int(a["step"]) == int(b["step"]) == 16
  assert jax.tree_util.tree_structure(a) == jax.tree_util.tree_structure(b)
  for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)):
    np.testing.assert_array_equal(x, y)
  lrs = {r["step"]: r["lr"] for r in read_metrics(straight) if "lr" in r}
  # Constant for epoch 1 (steps 1-8), then linear to 0 over epoch 2; lr is the last step's.
  assert lrs[8] == pytest.approx(2e-4) and lrs[16] == pytest.approx(2e-4 / 8)
  assert lrs[12] == pytest.approx(2e-4 * 5 / 8)


def test_cycle_loss_falls_on_two_cifar_classes(shared_cifar, cache_dir, tmp_path):
  from jaxgan.data.folder import read_image_folder
  data = read_image_folder(shared_cifar, 32, ["train"], cache_dir=cache_dir)
  images, labels = data["train"]
  horse, deer = data["class_names"].index("horse"), data["class_names"].index("deer")
  dir_a = write_domain(tmp_path / "horse", images[labels == horse][:48])
  dir_b = write_domain(tmp_path / "deer", images[labels == deer][:48])
  workdir = str(tmp_path / "run")
  config = tiny_cyclegan_config(f"{dir_a},{dir_b}", train_subset=-1, batch_size=4,
                                num_epochs=20, decay_epochs=5, model__ngf=16, model__n_blocks=2, lr=1e-3,
                                log_every_steps=4, sample_every_steps=0)
  experiment.train_and_evaluate(config, workdir)
  train = [r for r in read_metrics(workdir) if "cycle_A" in r]
  first, last_epoch = train[0], train[-3:]  # steps 1-4; the last 12 steps
  for k in ("cycle_A", "cycle_B"):
    final = np.mean([r[k] for r in last_epoch])
    assert final < 0.5 * first[k], (k, first[k], final)
  assert all(np.isfinite(r["D_A"]) and np.isfinite(r["G_B"]) for r in train)

  out = experiment.evaluate(workdir, num_devices=1)
  assert "no test split" in out["split"] and out["num_a"] == 48
  assert out["cycle_l1_A"] < 0.5 * first["cycle_A"] / 10  # held to the same bar, unweighted
  with np.load(out["translations"]) as z:
    assert z["fake_b"].shape == (48, 32, 32, 3) and z["fake_b"].dtype == np.uint8


def test_domains_from_folders_archives_and_tfds(tmp_path):
  rng = np.random.default_rng(0)
  imgs = rng.integers(0, 256, (6, 20, 24, 3), dtype=np.uint8)
  root = tmp_path / "h2z"
  write_domain(root / "trainA", imgs[:2])
  write_domain(root / "trainB", imgs[2:5])
  write_domain(root / "testA", imgs[5:])
  config = tiny_cyclegan_config(str(root), train_subset=-1, load_size=16)
  a, b = load_domains(config, ("trainA", "trainB"))
  assert a.shape == (2, 16, 16, 3) and b.shape == (3, 16, 16, 3)
  with pytest.raises(DatasetError, match="no testB/ folder"):
    load_domains(config, ("testA", "testB"))
  config.dataset = f"{root / 'trainB'},{root / 'trainA'}"
  a2, b2 = load_domains(config, ("trainA", "trainB"))
  np.testing.assert_array_equal(a2, b) and np.testing.assert_array_equal(b2, a)
  for bad in (f"{root},{root},{root}", f"{root},"):
    with pytest.raises(DatasetError, match="exactly two folders"):
      load_domains(set_fields(config, {"dataset": bad}), ("trainA", "trainB"))
  tfds = pytest.importorskip("tensorflow_datasets")
  with tfds.testing.mock_data(num_examples=5):
    a, b = load_domains(tiny_cyclegan_config("cycle_gan/horse2zebra", train_subset=-1,
                                             tfds_data_dir=str(tmp_path / "tfds")),
                        ("trainA", "trainB"))
  assert a.shape == b.shape == (5, 36, 36, 3) and a.dtype == np.uint8


def test_bfloat16_option_is_finite_close_to_float32_and_keeps_float32_state():
  devices = jax.local_devices()[:1]
  tasks = {d: CycleGANTask.build(tiny_cyclegan_config(dtype=d), devices) for d in ("float32", "bfloat16")}
  # stack_networks in bfloat16 too: the grouped convolutions compute in the same dtype.
  tasks["stacked"] = CycleGANTask.build(tiny_cyclegan_config(dtype="bfloat16", stack_networks=True),
                                  devices)
  state = tasks["float32"].init_state(jax.random.PRNGKey(0))
  a, b = (from_uint8(jnp.asarray(x[:2, 2:34, 2:34])) for x in jax.device_get(
      (tasks["float32"].images["a"][0], tasks["float32"].images["b"][0])))
  losses = {d: jax.jit(t.generator_losses)(state.g_params, state.d_params, a, b)[1][0]
            for d, t in tasks.items()}
  for k in ("G_A", "cycle_A", "idt_B"):
    for low in ("bfloat16", "stacked"):
      np.testing.assert_allclose(float(losses[low][k]), float(losses["float32"][k]),
                                 rtol=0.05, err_msg=f"{low} {k}")
    np.testing.assert_allclose(float(losses["stacked"][k]), float(losses["bfloat16"][k]),
                               rtol=0.02, err_msg=k)
  task = tasks["bfloat16"]
  new, metrics = task.compile_step(devices)(parallel.replicate(state, devices), task.train_batch(0))
  assert all(np.isfinite(float(v[0])) for v in metrics.values())
  leaves = jax.tree_util.tree_leaves((new.g_params, new.d_params, new.g_opt, new.pool_fake_a))
  assert all(x.dtype in (jnp.float32, jnp.int32) for x in leaves)


@pytest.mark.parametrize("field, value, match", [
    ("image_size", 30, "multiple of 4"),
    ("image_size", 20, "nothing to score: .* at least 24 pixels"),
    ("load_size", 28, "smaller than --config.image_size"),
    ("decay_epochs", 5, "decay_epochs"),
    ("gan_mode", "wgan", "gan_mode"),
    ("lambda_identity", -1.0, "lambda_identity"),
])
def test_bad_settings_are_clear_errors(field, value, match):
  with pytest.raises(ConfigError, match=match):
    CycleGANTask.build(tiny_cyclegan_config(**{field: value}), jax.local_devices()[:1])


def run_cli(*args):
  return subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True,
                        timeout=300)


def test_train_grids_then_translate_a_folder_of_odd_sized_images(tmp_path):
  from PIL import Image
  workdir = str(tmp_path / "run")
  experiment.train_and_evaluate(
      tiny_cyclegan_config(train_subset=4, model__ngf=4, model__ndf=4, num_epochs=1,
                           decay_epochs=0, sample_every_steps=4, num_grid_samples=2), workdir)
  grid = np.asarray(Image.open(os.path.join(workdir, "samples", "step_0000004.png")))
  assert grid.shape == (2 + 2 * 34, 2 + 6 * 34, 3)  # 2 rows of real/fake/rec x 2 directions

  inp = tmp_path / "mine"
  (inp / "sub").mkdir(parents=True)
  rng = np.random.default_rng(0)
  sizes = {"odd.png": (37, 23), "sub/tall.jpg": (50, 13), "square.png": (32, 32)}
  for name, (h, w) in sizes.items():
    Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(inp / name)
  Image.fromarray(rng.integers(0, 256, (9, 10), dtype=np.uint8), "L").save(inp / "gray.png")
  (inp / "broken.jpg").write_bytes(b"not a jpeg")
  dest = tmp_path / "out"
  out = run_cli("translate.py", f"--workdir={workdir}", f"--input={inp}", f"--output={dest}",
                "--direction=BtoA")
  assert out.returncode == 0, out.stderr
  assert "4 translated" in out.stdout and "broken.jpg" in out.stdout + out.stderr
  for name, (h, w) in {**sizes, "gray.png": (9, 10)}.items():
    img = np.asarray(Image.open(dest / (os.path.splitext(name)[0] + ".png")))
    assert img.shape == (h, w, 3), name
  # A size the generator takes directly gives exactly the generator's output.
  from jaxgan.checkpoint import restore_latest
  _, task, state, _ = restore_latest(
      workdir, lambda c, meta: CycleGANTask.build(c, jax.local_devices()[:1], train=False))
  want = task.translate(state.g_params["G_B"], np.asarray(Image.open(inp / "square.png"))[None])
  np.testing.assert_array_equal(np.asarray(Image.open(dest / "square.png")), want[0])

  out = run_cli("translate.py", f"--workdir={workdir}", f"--input={inp}", f"--output={dest}",
                "--direction=sideways")
  assert out.returncode == 2 and "AtoB" in out.stderr
  out = run_cli("evaluate.py", f"--workdir={workdir}", "--num_devices=1")
  assert out.returncode == 0, out.stderr
  with open(os.path.join(workdir, "eval.json")) as f:
    result = json.load(f)
  assert result["num_a"] == 64 and 0 < result["cycle_l1_A"] < 2
  assert result["feature_space"] == "pixels"
  for d in ("AtoB", "BtoA"):
    assert result[d]["frechet_distance"] > 0 and result[d]["identity_baseline_frechet_distance"] > 0
  assert "untranslated" in out.stdout

  # Inputs whose PNG names would collide keep their extension; the originals are never written.
  from jaxgan.translation import translate_folder
  clash = tmp_path / "clash"
  clash.mkdir()
  new_image = lambda: Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8))
  for name in ("x.png", "x.jpg", "x.jpg.png", "y.jpg"):
    new_image().save(clash / name, format="PNG" if name.endswith("png") else "JPEG")
  result = translate_folder(workdir, str(clash), str(tmp_path / "clash_out"), progress=False)
  assert result["written"] == 4
  assert sorted(os.listdir(tmp_path / "clash_out")) == ["x.jpg.png", "x.jpg.png.png", "x.png.png",
                                                        "y.png"]
  # No output may land among the inputs: --input itself, a folder in it, or one above it
  # that mirrors a subfolder (par/sub/sub/z.jpg would become par/sub/z.png).
  par = tmp_path / "par"
  (par / "sub" / "sub").mkdir(parents=True)
  new_image().save(par / "sub" / "sub" / "z.jpg")
  new_image().save(par / "sub" / "z.png")
  original = (par / "sub" / "z.png").read_bytes()
  for inp, out in ((clash, clash), (clash, clash / "out"), (par / "sub", par)):
    with pytest.raises(ConfigError, match="inside --input"):
      translate_folder(workdir, str(inp), str(out), progress=False)
  assert sorted(os.listdir(clash)) == ["x.jpg", "x.jpg.png", "x.png", "y.jpg"]
  assert (par / "sub" / "z.png").read_bytes() == original
  with pytest.raises(DatasetError, match="does not exist"):
    translate_folder(workdir, str(tmp_path / "nowhere"), str(tmp_path / "o"), progress=False)
  (tmp_path / "a_file").write_text("")
  with pytest.raises(WorkdirError, match="cannot create --output"):
    translate_folder(workdir, str(clash), str(tmp_path / "a_file"), progress=False)

  # Two folders given to evaluate are labelled as such, not as the training folders.
  result = experiment.evaluate(workdir, dataset=f"{clash},{clash}", num_devices=1)
  assert result["split"] == "all images of the two folders given to evaluate"
  assert result["num_a"] == result["num_b"] == 4
