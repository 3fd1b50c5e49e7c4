"""jaxgan's recipes: each module's `get_config()` returns a complete config.

A recipe is named by its module (`darknet_cifar10`) or by its file
(`configs/darknet_cifar10.py` in a checkout, where `configs/` links here).
"""
import importlib.resources
import pkgutil

NOT_RECIPES = ("common",)  # shared field helpers


def names() -> list[str]:
  """The recipes' names, sorted."""
  return sorted(m.name for m in pkgutil.iter_modules(__path__)
                if m.name not in NOT_RECIPES and not m.name.startswith("_"))


def path(name: str) -> str | None:
  """The file of recipe `name`, or None when there is no such recipe."""
  if name not in names():
    return None
  return str(importlib.resources.files(__name__) / f"{name}.py")
