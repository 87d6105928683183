"""Backbones: U-ViT, the DDPM/ADM conv UNet and the Eq. (3) MLP-UNet."""

from scalelong.models.common import Backbone
from scalelong.models.mlp_unet import MLPUNet
from scalelong.models.unet import UNet
from scalelong.models.uvit import UViT

__all__ = ["Backbone", "MLPUNet", "UNet", "UViT"]
