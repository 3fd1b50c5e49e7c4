"""Copy an image archive with every image re-encoded as JPEG of a given quality.

    python -m benchmarks.recompress_tar ../shared/data/horse2zebra.tar .h2z/horse2zebra.tar \
        --quality 75

The device tool carries at most 64 MiB a call, and horse2zebra is 120 MB: at quality 75
it is about 42 MiB (57 MiB at 85). Member names, order and image modes (the grayscale zebras stay
grayscale) are kept; members that are not images are copied as they are.
"""
import argparse
import io
import os
import tarfile

from PIL import Image

from jaxgan.data.folder import is_image_name


def recompress(src: str, dst: str, quality: int) -> tuple[int, int]:
  """(images re-encoded, bytes written)."""
  count = 0
  os.makedirs(os.path.dirname(os.path.abspath(dst)), exist_ok=True)
  with tarfile.open(src, "r:*") as tin, tarfile.open(dst, "w") as tout:
    for member in tin:
      data = tin.extractfile(member).read() if member.isfile() else None
      if data is not None and is_image_name(member.name):
        with Image.open(io.BytesIO(data)) as img:
          img = img if img.mode in ("RGB", "L") else img.convert("RGB")
          buf = io.BytesIO()
          img.save(buf, format="JPEG", quality=quality)
        data = buf.getvalue()
        member.size = len(data)
        count += 1
      tout.addfile(member, io.BytesIO(data) if data is not None else None)
  return count, os.path.getsize(dst)


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("src")
  parser.add_argument("dst")
  parser.add_argument("--quality", type=int, default=75)
  args = parser.parse_args()
  if not 1 <= args.quality <= 95:
    parser.error(f"--quality must be in [1, 95], got {args.quality}")
  count, size = recompress(args.src, args.dst, args.quality)
  print(f"{count} images re-encoded at quality {args.quality}: {args.dst}, {size / 2**20:.1f} MiB")


if __name__ == "__main__":
  main()
