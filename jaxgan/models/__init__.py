"""Flax Linen models, one file per family."""
from jaxgan.models.darknet import ConvLayer, Darknet, ResLayer, WideResNet
from jaxgan.models.layers import count_params

__all__ = ["ConvLayer", "Darknet", "ResLayer", "WideResNet", "count_params"]
