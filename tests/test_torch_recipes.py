"""benchmarks/torch_recipes.py: the PyTorch reference of the classifier recipes computes what
jaxgan computes (model, whitening, optimiser groups, weight averaging, TTA)."""
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")

from benchmarks import torch_models, torch_recipes  # noqa: E402
from conftest import tiny_fast_config  # noqa: E402
from jaxgan import experiment, parallel  # noqa: E402
from jaxgan.classifier import lookahead, make_optimizer  # noqa: E402
from jaxgan.models import FastNet  # noqa: E402

WIDTHS = (8, 16, 16)


def jax_fastnet(widths=WIDTHS, seed=0):
  model = FastNet(widths=widths)
  variables = model.init(jax.random.PRNGKey(seed), jnp.zeros((1, 16, 16, 3)))
  # Non-trivial BN shifts and running statistics, so the copy is really tested.
  leaves, tree = jax.tree_util.tree_flatten(variables)
  keys = jax.random.split(jax.random.PRNGKey(seed + 1), len(leaves))
  noisy = [x + 0.1 * jax.random.normal(k, x.shape) if x.ndim == 1 else x
           for k, x in zip(keys, leaves)]
  variables = jax.tree_util.tree_unflatten(tree, noisy)
  variables["batch_stats"] = jax.tree_util.tree_map(jnp.abs, variables["batch_stats"])
  return model, variables


def test_torch_fastnet_has_the_same_parameters():
  full = torch_models.FastNet()
  bn_scales = sum(m.weight.numel() for m in full.modules() if isinstance(m, torch.nn.BatchNorm2d))
  assert sum(p.numel() for p in full.parameters()) - bn_scales == 1_971_640
  assert all(not m.weight.requires_grad for m in full.modules()
             if isinstance(m, torch.nn.BatchNorm2d))
  assert not full.whiten.weight.requires_grad and full.whiten.bias.requires_grad
  config = tiny_fast_config("fake", model__widths=(64, 256, 256))
  sizes = {g["name"]: sum(p.numel() for p in g["params"])
           for g in torch_recipes.param_groups(full, config)}
  assert sizes == {"whiten_bias": 24, "norm_bias": 1152,
                   "default": 1_971_640 - 288 - 24 - 1152}


@pytest.mark.parametrize("train", [False, True])
def test_torch_fastnet_computes_the_flax_function(train):
  model, variables = jax_fastnet()
  x = np.random.default_rng(0).normal(size=(4, 16, 16, 3)).astype(np.float32)
  if train:
    want, _ = model.apply(variables, jnp.asarray(x), train=True, mutable=["batch_stats"])
  else:
    want = model.apply(variables, jnp.asarray(x))
  net = torch_models.copy_fastnet_params(torch_models.FastNet(widths=WIDTHS), variables)
  net.train(train)
  with torch.no_grad():
    got = net(torch.from_numpy(x).permute(0, 3, 1, 2)).numpy()
  np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def test_torch_whitening_equals_jaxgans_up_to_eigenvector_signs():
  rng = np.random.default_rng(1)
  base = rng.normal(size=(32, 10, 10, 1))
  x = np.concatenate([base, base + 0.5 * rng.normal(size=base.shape),
                      rng.normal(size=base.shape)], -1).astype(np.float32)
  want = np.asarray(FastNet().whitening_kernel(jnp.asarray(x)))  # (out, kh, kw, in)
  net = torch_models.FastNet()
  net.init_whitening(torch.from_numpy(x).permute(0, 3, 1, 2))
  got = net.whiten.weight.detach().numpy().transpose(0, 2, 3, 1)
  sign = np.sign((got * want).sum(axis=(1, 2, 3)))[:, None, None, None]
  assert set(np.unique(sign)) <= {-1.0, 1.0}
  np.testing.assert_allclose(got * sign, want, rtol=1e-3, atol=1e-3)


def test_torch_optimizer_groups_take_jaxgans_steps():
  config = tiny_fast_config("fake", bias_lr_scale=64.0, whiten_bias_epochs=1)
  spe, total = 2, 4
  _, variables = jax_fastnet()
  params = variables["params"]
  net = torch_models.copy_fastnet_params(torch_models.FastNet(widths=WIDTHS), variables)
  # Mirror TorchRecipe's optimiser on this module.
  recipe = types.SimpleNamespace(config=config, steps_per_epoch=spe)
  recipe.lrs, recipe.moms = torch_recipes.schedule_table(config, total)
  recipe.opt = torch.optim.SGD(torch_recipes.param_groups(net, config), lr=0.0, momentum=0.5,
                               nesterov=True)
  tx, opt_state = make_optimizer(config, total, spe), None
  opt_state = tx.init(params)
  grads = jax.tree_util.tree_map(lambda p: jnp.full_like(p, 0.05), params)
  for step in range(total):
    updates, opt_state = jax.jit(tx.update)(grads, opt_state, params)
    params = jax.tree_util.tree_map(lambda p, u: p + u, params, updates)
    torch_recipes.TorchRecipe._set_hyperparams(recipe, step)
    for p in net.parameters():
      p.grad = torch.full_like(p, 0.05) if p.requires_grad else None
    recipe.opt.step()
  again = torch_models.FastNet(widths=WIDTHS)
  torch_models.copy_fastnet_params(again, {"params": params})
  for (name, a), b in zip(net.named_parameters(), again.parameters()):
    if a.requires_grad or name == "whiten.weight":
      np.testing.assert_allclose(a.detach().numpy(), b.detach().numpy(), rtol=1e-5, atol=1e-6,
                                 err_msg=name)


def test_torch_lookahead_is_jaxgans():
  spe, total = 4, 14
  ema = types.SimpleNamespace(start_epochs=1, every_n_steps=3, decay_base=0.9, decay_pow=2.0)
  module = torch.nn.Linear(1, 1, bias=False)
  with torch.no_grad():
    module.weight.zero_()
  look = torch_recipes.Lookahead(module, ema, spe, total)
  state = types.SimpleNamespace(ema={"params": jnp.zeros(()), "batch_stats": jnp.zeros(())})
  w = jnp.zeros(())
  for t in range(total):
    with torch.no_grad():
      module.weight += 1.0 + 0.5 * t
    state.step = jnp.int32(t)
    w, _, state.ema = lookahead(state, w + 1.0 + 0.5 * t, w, ema, spe, total)
    look.after_step(t)
    assert module.weight.item() == pytest.approx(float(w), rel=1e-6), t


def test_torch_recipe_evaluates_like_jaxgan(image_folder16):
  """Same weights, same test images: the same plain, flip-TTA and translate-TTA accuracies."""
  config = tiny_fast_config(image_folder16)
  task = experiment.build_task(config, jax.local_devices()[:1])
  state = task.init_state(jax.random.PRNGKey(0))
  want = task.evaluate(parallel.replicate(state, task.devices))
  from jaxgan.data import load_classification_data
  recipe = torch_recipes.TorchRecipe(config, load_classification_data(
      config, [config.train_split, config.eval_split]), device="cpu", variant="eager")
  recipe.init(0)
  torch_models.copy_fastnet_params(recipe.model, {"params": state.params,
                                                   "batch_stats": state.batch_stats})
  got = recipe.evaluate()
  for key in ("accuracy", "accuracy_flip_tta", "accuracy_translate_tta"):
    assert got[key] == pytest.approx(float(want[key])), key


def test_torch_recipe_trains_the_weights_jaxgan_trains(image_folder16, tmp_path):
  """Four steps of the whole recipe from the same weights in both frameworks: whitening,
  x64 BN-shift lr, the whitening bias frozen after epoch 2, label smoothing, Lookahead every 2
  steps from epoch 1, Nesterov on the triangle schedule. Pad 0 and no flips make the
  augmentation the identity, and batch 36 = the whole training set, so each step sees the
  same images in both whatever their order."""
  from jaxgan.checkpoint import Checkpointer
  from jaxgan.data import load_classification_data
  config = tiny_fast_config(image_folder16, batch_size=36, num_epochs=4.0, augment__pad=0,
                            augment__flip=False, ema__every_n_steps=2, whiten_bias_epochs=2)
  task = experiment.build_task(config, jax.local_devices()[:1])
  start = task.init_state(jax.random.PRNGKey(config.seed))
  assert task.steps_per_epoch == 1
  experiment.train_and_evaluate(config, str(tmp_path / "run"))
  final, _ = Checkpointer(str(tmp_path / "run")).restore(None)

  recipe = torch_recipes.TorchRecipe(config, load_classification_data(
      config, [config.train_split, config.eval_split]), device="cpu", variant="eager")
  recipe.init(0)
  torch_models.copy_fastnet_params(recipe.model, {"params": start.params,
                                                   "batch_stats": start.batch_stats})
  for epoch in range(4):
    recipe.train_epoch(epoch)
  want = torch_models.copy_fastnet_params(
      torch_models.FastNet(num_classes=3, widths=tuple(config.model.widths)), final)
  moved = 0.0
  for (name, a), b in zip(recipe.model.state_dict().items(), want.state_dict().values()):
    if "running_var" in name or "num_batches" in name:  # PyTorch keeps the unbiased variance
      continue
    np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=2e-3, atol=2e-4, err_msg=name)
    if name == "whiten.bias":
      moved = float(np.abs(b.numpy()).max())
  assert moved > 0  # the whitening bias trained for its two epochs
