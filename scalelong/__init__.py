"""scalelong: scaling the long skip connections of diffusion UNets (ScaleLong, NeurIPS 2023)."""

__version__ = "0.1.0"
