"""Check jaxgan's FID InceptionV3 against pytorch-fid's own model, layer for layer.

    # in an environment with torch + torchvision, and a pytorch-fid checkout:
    python -m benchmarks.check_inception_against_pytorch_fid --write_reference /tmp/incref \
        --pytorch_fid_inception path/to/pytorch-fid/src/pytorch_fid/inception.py
    # in jaxgan's environment:
    python -m benchmarks.check_inception_against_pytorch_fid --check /tmp/incref

Step 1 builds pytorch-fid's FID network (torchvision Inception3 with the FID
blocks patched in, exactly as `fid_inception_v3()` does, without downloading)
with random, scale-preserving weights, saves them with torch.save in both of
torch's file formats, and records its pool3 features and logits for random
non-square images. Step 2 loads each file with jaxgan's reader into
`FIDInceptionV3` and prints the largest differences. (The real FID weights
are not needed: any weights exercise the same layers.)
"""
import argparse
import collections
import importlib.util
import os

import numpy as np

# The two steps run in different environments: step 1 needs torch (and no JAX), step 2 JAX
# (and no torch). Each imports its framework inside its own function.


def write_reference(out_dir, inception_py):
  import torch
  spec = importlib.util.spec_from_file_location("pytorch_fid_inception", inception_py)
  pfid = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(pfid)
  m = pfid._inception_v3(num_classes=1008, aux_logits=False, weights=None, init_weights=False)
  for name, (cls, arg) in {"Mixed_5b": (pfid.FIDInceptionA, (192, 32)),
                           "Mixed_5c": (pfid.FIDInceptionA, (256, 64)),
                           "Mixed_5d": (pfid.FIDInceptionA, (288, 64)),
                           "Mixed_6b": (pfid.FIDInceptionC, (768, 128)),
                           "Mixed_6c": (pfid.FIDInceptionC, (768, 160)),
                           "Mixed_6d": (pfid.FIDInceptionC, (768, 160)),
                           "Mixed_6e": (pfid.FIDInceptionC, (768, 192)),
                           "Mixed_7b": (pfid.FIDInceptionE_1, (1280,)),
                           "Mixed_7c": (pfid.FIDInceptionE_2, (2048,))}.items():
    setattr(m, name, cls(*arg))
  g = torch.Generator().manual_seed(0)
  sd = collections.OrderedDict()
  for k, v in m.state_dict().items():
    if k.endswith("num_batches_tracked"):
      sd[k] = v
    elif k.endswith(("running_var", "bn.weight")):
      sd[k] = torch.rand(v.shape, generator=g) * 0.5 + 0.75
    elif k.endswith(("running_mean", "bn.bias")):
      sd[k] = torch.randn(v.shape, generator=g) * 0.1
    elif v.dim() == 4:  # He-scaled, so activations neither vanish nor explode over 94 convs
      sd[k] = torch.randn(v.shape, generator=g) * (2.0 / np.prod(v.shape[1:])) ** 0.5
    else:
      sd[k] = torch.randn(v.shape, generator=g) * 0.02
  m.load_state_dict(sd)
  m.eval()
  os.makedirs(out_dir, exist_ok=True)
  torch.save(sd, os.path.join(out_dir, "weights_zip.pth"))
  torch.save(sd, os.path.join(out_dir, "weights_legacy.pth"), _use_new_zipfile_serialization=False)
  x = torch.from_numpy(np.random.default_rng(1).random((4, 3, 40, 56)).astype(np.float32))
  with torch.no_grad():
    h = 2 * torch.nn.functional.interpolate(x, size=(299, 299), mode="bilinear",
                                            align_corners=False) - 1
    fc, m.fc = m.fc, torch.nn.Identity()
    feats = m(h)
    logits = fc(feats)
  np.savez(os.path.join(out_dir, "reference.npz"), images=x.numpy().transpose(0, 2, 3, 1),
           features=feats.numpy(), logits=logits.numpy())
  print(f"wrote {out_dir} (torch {torch.__version__})")


def check(out_dir):
  import jax.numpy as jnp
  from jaxgan.features import inception_space
  from jaxgan.models.inception import FIDInceptionV3
  ref = np.load(os.path.join(out_dir, "reference.npz"))
  for name in ("weights_zip.pth", "weights_legacy.pth"):
    space = inception_space(os.path.join(out_dir, name))
    f, logits = FIDInceptionV3().apply(space.variables, jnp.asarray(ref["images"]))
    df = np.abs(np.asarray(f) - ref["features"]).max()
    dl = np.abs(np.asarray(logits) - ref["logits"]).max()
    print(f"{name}: pool3 max |diff| {df:.3g} (features up to {np.abs(ref['features']).max():.3g}),"
          f" logits max |diff| {dl:.3g} (up to {np.abs(ref['logits']).max():.3g})")


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--write_reference", default="")
  parser.add_argument("--pytorch_fid_inception", default="")
  parser.add_argument("--check", default="")
  args = parser.parse_args()
  if args.write_reference:
    write_reference(args.write_reference, args.pytorch_fid_inception)
  if args.check:
    check(args.check)


if __name__ == "__main__":
  main()
