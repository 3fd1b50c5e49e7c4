"""The PyTorch references (benchmarks/torch_models.py, the steps of torch_reference.py) are
the same models as jaxgan's.

Same parameter counts, and the same function once the Flax parameters are
copied in, so the benchmark's jaxgan/PyTorch ratios compare like with like.
"""
import pytest

torch = pytest.importorskip("torch")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from benchmarks import torch_models as tm  # noqa: E402
from benchmarks import torch_reference as tr  # noqa: E402
from jaxgan.data import augment  # noqa: E402
from jaxgan.models import (Darknet, DCGANCritic, DCGANGenerator, PatchDiscriminator,  # noqa: E402
                           ResnetGenerator, WideResNet, count_params)


def jax_count(model, x, **kwargs):
  v = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), x, **kwargs))
  return count_params(v["params"])


IMG32, IMG64, Z = jnp.zeros((1, 32, 32, 3)), jnp.zeros((2, 64, 64, 3)), jnp.zeros((2, 100))
COUNT_CASES = {
    "darknet_notebook": (lambda: tm.Darknet((1, 2, 4, 6, 3), 10, nf=32),
                         Darknet((1, 2, 4, 6, 3), 10, nf=32), IMG32, 31_410_922),
    "darknet_small": (lambda: tm.Darknet((1, 1), 10, nf=16), Darknet((1, 1), 10, nf=16),
                      IMG32, None),
    "darknet_wide": (lambda: tm.Darknet((2, 1), 7, nf=8, bottleneck=2.0, kernel_sizes=(3, 1, 3)),
                     Darknet((2, 1), 7, nf=8, bottleneck=2.0, kernel_sizes=(3, 1, 3)), IMG32, None),
    "wrn22": (tm.WideResNet, WideResNet(), IMG32, None),
    "dcgan64_g": (lambda: tm.DCGANGenerator(64, 100, 3, 64, 1), DCGANGenerator(64, 100, 3, 64, 1),
                  Z, 3_613_696),
    "dcgan64_d": (lambda: tm.DCGANCritic(64, 3, 64, 1), DCGANCritic(64, 3, 64, 1), IMG64,
                  2_802_560),
    "dcgan32_g": (lambda: tm.DCGANGenerator(32, 100, 3, 64, 1), DCGANGenerator(32, 100, 3, 64, 1),
                  Z, None),
    "dcgan32_d": (lambda: tm.DCGANCritic(32, 3, 64, 1), DCGANCritic(32, 3, 64, 1),
                  jnp.zeros((2, 32, 32, 3)), None),
    "cyclegan_g": (tm.ResnetGenerator, ResnetGenerator(), IMG64, 11_378_179),
    "cyclegan_d": (tm.PatchDiscriminator, PatchDiscriminator(), IMG64, 2_764_737),
}


@pytest.mark.parametrize("name", sorted(COUNT_CASES))
def test_parameter_counts_equal_jaxgan(name):
  make_torch, flax_model, x, expected = COUNT_CASES[name]
  n = tm.count_params(make_torch())
  assert n == jax_count(flax_model, x)
  if expected is not None:
    assert n == expected


def random_variables(model, x, seed=0, **kwargs):
  """A model's variables drawn afresh with numpy (only the structure comes from Flax: JAX's
  init program compiles slowly on CPU); BN scales near 1, variances positive, kernels of
  PyTorch's default scale, so a wrong mapping of any leaf shows."""
  rng = np.random.default_rng(seed)
  shapes = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), x, **kwargs))
  leaves = []
  for path, leaf in jax.tree_util.tree_flatten_with_path(shapes)[0]:
    name, shape = jax.tree_util.keystr(path), leaf.shape
    if name.endswith("['var']") or name.endswith("['scale']"):
      leaves.append(rng.uniform(0.5, 1.5, shape))
    elif name.endswith("['mean']") or name.endswith("['bias']"):
      leaves.append(rng.normal(0, 0.2, shape))
    else:
      # Fan-in: a conv kernel is (out, kh, kw, in) (ConvTranspose: (in, k, k, out), whose
      # PyTorch fan-in is also k * k * out), a Dense kernel (in, out).
      bound = 1 / np.sqrt(np.prod(shape[1:] if len(shape) == 4 else shape[:-1]))
      leaves.append(rng.uniform(-bound, bound, shape))
  tree = jax.tree_util.tree_structure(shapes)
  return jax.tree_util.tree_unflatten(tree, [jnp.asarray(v, jnp.float32) for v in leaves])


def nchw(x):
  return torch.from_numpy(np.array(x)).permute(0, 3, 1, 2).contiguous()


def assert_close(torch_out, jax_out, tol=1e-4):
  a = torch_out.detach().numpy()
  b = np.asarray(jax_out)
  if a.ndim == 4:
    a = a.transpose(0, 2, 3, 1)
  assert a.shape == b.shape
  err = np.max(np.abs(a - b))
  assert err <= tol * max(1.0, np.max(np.abs(b))), err


def flax_and_torch(flax_model, torch_model, x, **kwargs):
  v = random_variables(flax_model, x, **kwargs)
  return v, tm.copy_flax_params(torch_model, v)


def apply(model, v, x, **kwargs):
  """`model.apply` under jit; returns the output alone (batch_stats updates dropped)."""
  fn = lambda v, x: model.apply(v, x, mutable=["batch_stats"], **kwargs)[0]
  return jax.jit(fn)(v, x)


DARKNET_VARIANTS = {"notebook": {}, "preact_wide": dict(preact=True, bottleneck=2.0,
                                                        kernel_sizes=(3, 1, 3))}


@pytest.mark.parametrize("train", [False, True])
@pytest.mark.parametrize("variant", sorted(DARKNET_VARIANTS))
def test_darknet_computes_the_same_function(variant, train):
  kwargs = DARKNET_VARIANTS[variant]
  flax_model = Darknet((1, 2), 10, nf=8, **kwargs)
  x = jax.random.normal(jax.random.PRNGKey(1), (4, 16, 16, 3))
  v, model = flax_and_torch(flax_model, tm.Darknet((1, 2), 10, nf=8, **kwargs), x)
  out = model.train(train)(nchw(x))
  ref, upd = jax.jit(lambda v, x: flax_model.apply(v, x, train=train, mutable=["batch_stats"]))(
      v, x)
  assert_close(out, ref)
  if train and not kwargs:
    # Running means follow the same momentum (variances differ by N/(N-1), as jaxgan notes).
    stem_mean = upd["batch_stats"]["layers_0"]["BatchNorm_0"]["mean"]
    np.testing.assert_allclose(model.layers[0].bn.running_mean.numpy(), stem_mean, rtol=1e-4,
                               atol=1e-5)


@pytest.mark.parametrize("train", [False, True])
def test_wrn22_computes_the_same_function(train):
  x = jax.random.normal(jax.random.PRNGKey(1), (2, 8, 8, 3))
  v, model = flax_and_torch(WideResNet(), tm.WideResNet(), x)
  assert_close(model.train(train)(nchw(x)), apply(WideResNet(), v, x, train=train), 1e-3)


@pytest.mark.parametrize("isize", [32, 16])
def test_dcgan_generator_and_critic_compute_the_same_function(isize):
  z = jax.random.normal(jax.random.PRNGKey(1), (4, 16))
  g = DCGANGenerator(isize, 16, 3, 16, 1)
  v, tg = flax_and_torch(g, tm.DCGANGenerator(isize, 16, 3, 16, 1), z)
  fake = apply(g, v, z, train=True)
  assert_close(tg.train()(torch.from_numpy(np.array(z))), fake)
  d = DCGANCritic(isize, 3, 16, 1)
  v, td = flax_and_torch(d, tm.DCGANCritic(isize, 3, 16, 1), fake)
  assert_close(td.train()(nchw(fake)), apply(d, v, fake, train=True))




def test_wgan_noise_has_nhwc_strides_in_the_channels_last_variants_only():
  """An (N, nz, 1, 1) input with NCHW strides is the likely reason torch.compile on CUDA got
  the first ConvTranspose's weight gradient in NCHW where its graph expected NHWC; the eager
  baseline keeps NCHW throughout."""
  fmt = torch._prims_common.suggest_memory_format
  cl = tr._noise(2, 8, tm.Setup("cpu", "float32", "channels_last"))
  assert cl.shape == (2, 8, 1, 1) and cl.stride() == (8, 1, 8, 8)
  assert fmt(cl) == torch.channels_last
  eager = tr._noise(2, 8, tm.Setup("cpu", "float32", "eager"))
  assert fmt(eager) == torch.contiguous_format
  g = tm.DCGANGenerator(16, 8, 3, 16).eval()
  torch.testing.assert_close(g(cl), g(cl.reshape(2, 8)))  # the layout keeps the values


def test_cyclegan_generator_and_discriminator_compute_the_same_function():
  x = jax.random.uniform(jax.random.PRNGKey(1), (2, 32, 32, 3), minval=-1, maxval=1)
  g = ResnetGenerator(8, 2)
  v, tg = flax_and_torch(g, tm.ResnetGenerator(8, 2), x)
  assert_close(tg(nchw(x)), apply(g, v, x))
  d = PatchDiscriminator(8)
  v, td = flax_and_torch(d, tm.PatchDiscriminator(8), x)
  assert_close(td(nchw(x)), apply(d, v, x))


@pytest.mark.parametrize("mode,pad,size", [("symmetric", 4, 12), ("reflect", 2, 12),
                                           ("edge", 3, 12), ("symmetric", 0, 8)])
def test_crop_flip_matches_jaxgan_augmentation(mode, pad, size):
  images = np.random.default_rng(0).integers(0, 256, (6, 12, 12, 3), dtype=np.uint8)
  offsets, flips = augment.draw_crop_flip(jax.random.PRNGKey(3), 6, 12 + 2 * pad - size)
  ref = augment.crop_flip(jnp.asarray(images), offsets, flips, pad, mode, size)
  out = tm.crop_flip_at(torch.from_numpy(images), torch.from_numpy(np.array(offsets)),
                        torch.from_numpy(np.array(flips)), size, pad, mode)
  np.testing.assert_array_equal(out.numpy(), np.asarray(ref))


def small_darknet_config(batch_size):
  """The tiny Darknet recipe with one 8-channel block at 16x16."""
  from jaxgan.configs import tiny_darknet
  config = tiny_darknet.get_config()
  config.model.num_blocks = (1,)
  config.model.nf = 8
  config.batch_size = batch_size
  config.image_size = 16
  return config


def test_classifier_train_step_lowers_the_loss_on_a_fixed_batch():
  config = small_darknet_config(16)
  config.learning_rate = 2.0  # the step starts at peak / 20
  config.augment.pad = 1
  torch.manual_seed(0)
  labels = torch.arange(16) % 4
  # Learnable: each class has its own colour, under noise.
  colours = torch.tensor([[200, 40, 40], [40, 200, 40], [40, 40, 200], [200, 200, 40]])
  noise = torch.randint(-30, 30, (16, 16, 16, 3))
  images = (colours[labels][:, None, None, :] + noise).clamp(0, 255).to(torch.uint8)
  step, n_params = tr.classifier_step(config, tm.Setup("cpu", "float32", "eager"), images,
                                      labels)
  assert n_params == jax_count(Darknet((1,), 10, nf=8), jnp.zeros((1, 16, 16, 3)))
  losses = [float(step()) for _ in range(15)]
  assert np.isfinite(losses).all()
  assert np.mean(losses[-3:]) < 0.7 * losses[0], losses


def test_bfloat16_autocast_step_runs_and_keeps_float32_params():
  config = small_darknet_config(8)
  config.train_subset = 32
  step, _ = tr.classifier_step(config, tm.Setup("cpu", "bfloat16", "channels_last"))
  assert np.isfinite(float(step()))


def test_unknown_variant_and_model_are_refused():
  with pytest.raises(ValueError, match="variant"):
    tm.Setup("cpu", "float32", "jit")
  with pytest.raises(ValueError, match="no PyTorch reference"):
    tm.build_classifier({"name": "fastnet"})


def test_wgan_step_runs_and_clips_the_critic():
  from conftest import tiny_wgan_config
  config = tiny_wgan_config("fake", train_subset=32)
  step, n_params = tr.wgan_step(config, tm.Setup("cpu", "float32", "eager"))
  m = config.model
  g = DCGANGenerator(16, m.nz, 3, m.ngf, m.n_extra_layers)
  d = DCGANCritic(16, 3, m.ndf, m.n_extra_layers)
  assert n_params == jax_count(g, jnp.zeros((2, m.nz))) + jax_count(d, jnp.zeros((2, 16, 16, 3)))
  assert np.isfinite(float(step()))
  # Clipped before each critic step; one RMSProp step moves a weight by at most ~10 lr.
  d_params = list(step.models["critic"].parameters())
  largest = max(float(p.detach().abs().max()) for p in d_params)
  assert largest <= config.clip + 20 * config.lr_d


def test_cyclegan_iteration_is_measured_with_the_benchmark_fields():
  from conftest import tiny_cyclegan_config
  config = tiny_cyclegan_config(train_subset=4)
  row = tr.measure_torch("cyclegan", 1, "float32", "eager", steps=1, device="cpu", config=config)
  g, d = ResnetGenerator(8, 1), PatchDiscriminator(8, 3)
  x = jnp.zeros((1, 32, 32, 3))
  assert row["params"] == 2 * (jax_count(g, x) + jax_count(d, x))
  assert row["per_s"] > 0 and row["unit"] == "iters_per_s" and row["peak_memory_bytes"] is None
