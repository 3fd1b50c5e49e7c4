"""Flax Linen models, one file per family."""
from jaxgan.models.darknet import ConvLayer, Darknet, ResLayer, WideResNet
from jaxgan.models.fastnet import FastNet
from jaxgan.models.cyclegan import PatchDiscriminator, ResnetGenerator
from jaxgan.models.dcgan import DCGANCritic, DCGANGenerator
from jaxgan.models.layers import count_params, torch_conv_transpose

__all__ = ["ConvLayer", "Darknet", "ResLayer", "WideResNet", "FastNet", "DCGANGenerator",
           "DCGANCritic", "ResnetGenerator", "PatchDiscriminator",
           "count_params", "torch_conv_transpose"]
