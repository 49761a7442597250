"""A user's own model code, as `--teacher tests.models.factory_models:tiny_cnn` imports it."""

from torch import nn


def tiny_cnn() -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(8, 10))


def not_a_model() -> str:
    return "a string"


def broken() -> nn.Module:
    raise RuntimeError("weights file missing on this machine")


def tv_fcos() -> nn.Module:
    """A torchvision detector (untrained) for 4-band 64 px images and 3 classes: it answers with
    detections (per image boxes, scores, labels), so it teaches by pseudo-boxes."""
    import torch
    from torchvision.models.detection import fcos_resnet50_fpn

    torch.manual_seed(0)
    model = fcos_resnet50_fpn(weights=None, weights_backbone=None, num_classes=3, min_size=64, max_size=64,
                              image_mean=[0.5] * 4, image_std=[0.25] * 4, score_thresh=0.0)
    stem = model.backbone.body.conv1
    model.backbone.body.conv1 = nn.Conv2d(4, stem.out_channels, stem.kernel_size, stem.stride, stem.padding,
                                          bias=False)
    return model
