"""Translating your own images with a CycleGAN generator (translate.py): reading the
inputs, naming and writing the outputs safely, and the generator of a run or of a file
saved by the reference repository."""
import collections
import os

import numpy as np
from PIL import Image

from jaxgan import parallel
from jaxgan.checkpoint import restore_latest
from jaxgan.cyclegan import DIRECTIONS, CycleGANTask, translate_images
from jaxgan.data.folder import (MAX_IMAGE_PIXELS, SkippedFile, check_pixels, load_image,
                                read_image_file)
from jaxgan.errors import ConfigError, DatasetError, WorkdirError
from jaxgan.images import check_output_paths, png_writer, write_file
from jaxgan.models.cyclegan import ResnetGenerator
from jaxgan.writers import progress_bar


def _pad_to_multiple(image: np.ndarray, multiple: int = 4) -> np.ndarray:
  """Reflect-pad bottom and right so both sides are multiples of `multiple`."""
  h, w = image.shape[:2]
  ph, pw = -h % multiple, -w % multiple
  mode = "reflect" if min(h, w) > max(ph, pw) else "symmetric"
  return np.pad(image, ((0, ph), (0, pw), (0, 0)), mode=mode)


def _within(path: str, folder: str) -> bool:
  rel = os.path.relpath(os.path.realpath(path), os.path.realpath(folder))
  return rel != os.pardir and not rel.startswith(os.pardir + os.sep)


def _output_names(names: list[str]) -> dict[str, str]:
  """Each input's PNG name: `x.jpg` -> `x.png`, or `x.jpg.png` where another input (`x.png`,
  `X.JPEG` on a file system that ignores case) would get the same name, or where an input
  folder has that name (`x.png/y.jpg`, whose output folder is `x.png/`)."""
  folders = set()  # every output folder, as a file name would claim it
  for name in names:
    while (name := os.path.dirname(name)):
      folders.add(name.casefold())
  full = set()  # inputs that keep their extension
  while True:
    outputs = {n: (n if n in full else os.path.splitext(n)[0]) + ".png" for n in names}
    claims = collections.defaultdict(list)
    for name, out in outputs.items():
      claims[out.casefold()].append(name)
    on_folders = {n for n, out in outputs.items() if out.casefold() in folders}
    clashing = {n for group in claims.values() if len(group) > 1 for n in group} | on_folders
    if not clashing:
      return outputs
    if clashing <= full:
      if on_folders:
        raise DatasetError(f"the translation of the input file {sorted(on_folders)[0]!r} would "
                           "have the name of an input folder; rename one of them.")
      raise DatasetError(f"input files {sorted(clashing)[:4]} differ only in case, so their "
                         "translations would overwrite each other; rename them.")
    full |= clashing


def load_pretrained_generator(path: str) -> tuple[ResnetGenerator, dict]:
  """A ResNet generator saved by the reference repository (`latest_net_G_A.pth`, a published
  `*_pretrained/latest_net_G.pth`; either torch.save format, or an .npz of it), read without
  PyTorch and without running any code from the file."""
  from jaxgan.models.cyclegan import StateDictError, generator_from_state_dict
  from jaxgan.torch_weights import TorchFileError, load_state_dict
  path = os.path.expanduser(path)
  if not os.path.isfile(path):
    raise ConfigError(f"--weights {path!r}: no such file. Pass a generator saved by "
                      "pytorch-CycleGAN-and-pix2pix, e.g. checkpoints/horse2zebra_pretrained/"
                      "latest_net_G.pth.")
  try:
    return generator_from_state_dict(load_state_dict(path))
  except TorchFileError as e:
    raise ConfigError(f"--weights {path!r} is not a readable PyTorch weights file ({e}).") from None
  except StateDictError as e:
    raise ConfigError(f"--weights {path!r}: {e}.") from None


def _translation_inputs(input_path: str) -> tuple[str, list[str]]:
  """(the folder the names are relative to, the image names): every image under a folder,
  or a single image file."""
  from jaxgan.data.folder import IMAGE_EXTENSIONS, is_image_name
  if not os.path.exists(input_path):
    raise DatasetError(f"--input {input_path!r} does not exist.")
  if os.path.isfile(input_path):
    if not is_image_name(input_path):
      raise DatasetError(f"--input {input_path!r} is not an image file "
                         f"({', '.join(IMAGE_EXTENSIONS)}) or a folder of them.")
    return os.path.dirname(os.path.abspath(input_path)), [os.path.basename(input_path)]
  if not os.path.isdir(input_path):
    raise DatasetError(f"--input {input_path!r} is not a folder or an image file.")
  names = sorted(os.path.relpath(os.path.join(d, f), input_path)
                 for d, _, files in os.walk(input_path) for f in files if is_image_name(f))
  if not names:
    raise DatasetError(f"found no image files ({', '.join(IMAGE_EXTENSIONS)}) under "
                       f"{input_path}.")
  return input_path, names


def _check_outputs(input_dir: str, output_dir: str, outputs: dict, relative: dict) -> None:
  """Refuse, before any work, outputs that would land on or among the inputs, and a link
  or a folder planted where an output goes (write_file refuses it again, should one appear
  meanwhile)."""
  try:
    check_output_paths(output_dir, list(relative.values()))
  except OSError as e:  # e.g. a folder that cannot be read
    raise WorkdirError(f"cannot use --output {output_dir!r}: {e.strerror or e}. Pick a folder "
                       "you can write to.") from None
  if os.path.isfile(input_dir):
    if os.path.realpath(next(iter(outputs.values()))) == os.path.realpath(input_dir):
      raise ConfigError(f"--output {output_dir!r} would overwrite the input image {input_dir!r} "
                        "with its translation. Pick another folder.")
    return
  inside = [path for path in outputs.values() if _within(path, input_dir)]
  if inside:  # e.g. --output = --input, or a folder above it that mirrors its subfolders
    raise ConfigError(f"--output {output_dir!r} would write translations inside --input "
                      f"{input_dir!r} (e.g. {inside[0]}), over or among the originals. Pick "
                      "a folder outside it.")


def _generator(workdir: str | None, weights: str | None, direction: str) -> tuple:
  """(generator, params, checkpoint step or None, source path) of a run or a weights file."""
  if weights is not None:
    generator, params = load_pretrained_generator(weights)
    return generator, params, None, os.path.abspath(os.path.expanduser(weights))
  devices = parallel.local_devices(1)
  _, task, state, step = restore_latest(
      workdir, lambda config, meta: CycleGANTask.build(config, devices, train=False))
  params = task.generator_params(state, "G_A" if direction == "AtoB" else "G_B")
  return task.generator, params, int(step), os.path.abspath(workdir)


def _read_input(path: str, resize: int) -> np.ndarray:
  """An input image as uint8 RGB, its shorter side scaled to `resize` if > 0. Regular files
  only, within the size limits: a FIFO or a link to /dev/zero is skipped, not read."""
  img = load_image(read_image_file(path))
  if resize:
    scale = resize / min(img.size)
    size = (max(1, round(img.size[0] * scale)), max(1, round(img.size[1] * scale)))
    check_pixels(*size, MAX_IMAGE_PIXELS, "resized, it would have")
    img = img.resize(size, Image.BICUBIC)
  return np.asarray(img, np.uint8)


def translate_folder(workdir: str | None, input_dir: str, output_dir: str,
                     direction: str = "AtoB", resize: int = 0, progress: bool = True,
                     weights: str | None = None) -> dict:
  """Apply a generator to every image under `input_dir` (or to one image file); PNGs to
  `output_dir`.

  The generator is a CycleGAN workdir's latest G_A (`direction` AtoB) or G_B
  (BtoA), or the one in a reference-repository weights file (`weights`, then
  `workdir` is None). Any image size works: sides that are not multiples of
  4 are reflect-padded for the generator and the output cropped back, so each
  output has its input's size (after `resize`, which scales the shorter side,
  if > 0). The generator compiles once per distinct (padded) image size.
  Subfolders are mirrored; unreadable files are skipped and listed; no output
  may overwrite an input, and none is written through a symbolic link or outside
  `output_dir` (a link or a folder where an output goes is refused up front).
  """
  if (workdir is None) == (weights is None):
    raise ConfigError("give either --workdir (a CycleGAN run of train.py) or --weights (a "
                      "generator file saved by pytorch-CycleGAN-and-pix2pix)")
  if direction not in DIRECTIONS:
    raise ConfigError(f"--direction={direction!r}: use AtoB (G_A) or BtoA (G_B)")
  if resize < 0:
    raise ConfigError(f"--resize must be >= 0 (0 keeps each image's size), got {resize}")
  input_dir, output_dir = os.path.expanduser(input_dir), os.path.expanduser(output_dir)
  root, names = _translation_inputs(input_dir)
  relative = _output_names(names)
  outputs = {n: os.path.join(output_dir, out) for n, out in relative.items()}
  _check_outputs(input_dir, output_dir, outputs, relative)
  generator, params, step, source = _generator(workdir, weights, direction)
  try:
    os.makedirs(output_dir, exist_ok=True)
  except OSError as e:
    raise WorkdirError(f"cannot create --output {output_dir!r}: {e}. Pick a folder you can "
                       "write to.") from None
  written, skipped = [], []
  bar = progress_bar(len(names), "translating" if weights else f"translating {direction}",
                     enabled=progress, unit="image")
  for name in names:
    try:
      image = _read_input(os.path.join(root, name), resize)
    except Exception as e:  # corrupt, not an image, too large or not a file: reported, not fatal
      skipped.append(f"{name} ({e if isinstance(e, SkippedFile) else type(e).__name__})")
      bar.update(1)
      continue
    h, w = image.shape[:2]
    out = translate_images(generator, params, _pad_to_multiple(image)[None])[0, :h, :w]
    path = outputs[name]
    try:
      write_file(output_dir, relative[name], png_writer(out))
    except OSError as e:
      raise WorkdirError(f"cannot write {path} ({e.strerror or e}); the {len(written)} "
                         "translations before it are written. Free disk space (or fix the "
                         "permissions) and run again.") from None
    written.append(path)
    bar.update(1)
  bar.close()
  return {"step": step, "source": source, "direction": None if weights else direction,
          "written": len(written), "skipped": skipped, "output_dir": os.path.abspath(output_dir)}
