"""A user's own model code, as `--teacher tests.models.factory_models:tiny_cnn` imports it."""

from torch import nn


def tiny_cnn() -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(8, 10))


def not_a_model() -> str:
    return "a string"


def broken() -> nn.Module:
    raise RuntimeError("weights file missing on this machine")
