"""edgekd: hardware-aware knowledge distillation and edge deployment."""

__version__ = "0.1.0"
