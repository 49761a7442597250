import torch
from torch import nn

from edgekd.models.arch import ArchSpec
from edgekd.models.family import build_model
from edgekd.models.stats import count_macs, count_params


def test_macs_of_conv_and_linear_by_hand():
    m = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.Conv2d(8, 8, 3, padding=1, groups=8),
                      nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 5))
    # conv: 8*10*10 outputs x 3*3*3; depthwise: 8*10*10 x 1*3*3; linear 8*5
    assert count_macs(m, (1, 3, 10, 10)) == 800 * 27 + 800 * 9 + 40
    assert count_params(m) == 8 * 27 + (8 * 9 + 8) + (40 + 5)


def test_family_grows_with_width_and_depth_and_keeps_io_shape():
    small = build_model(ArchSpec(width=0.25, depth=1), 4, 7)
    wide = build_model(ArchSpec(width=1.0, depth=1), 4, 7)
    deep = build_model(ArchSpec(width=0.25, depth=3), 4, 7)
    shape = (1, 4, 32, 32)
    assert count_params(small) < count_params(wide) and count_params(small) < count_params(deep)
    assert count_macs(small, shape) < count_macs(wide, shape)
    assert small(torch.zeros(2, 4, 32, 32)).shape == (2, 7)


def test_normalisation_is_inside_the_model():
    m = build_model(ArchSpec(width=0.25, depth=1), 2, 3, mean=[0.5, 0.1], std=[0.25, 0.5])
    x = torch.tensor([0.75, 0.6]).view(1, 2, 1, 1)
    assert torch.allclose(m.normalize(x).flatten(), torch.tensor([1.0, 1.0]))
