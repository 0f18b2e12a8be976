"""Necks: fuse a backbone's stages (``features_only``) before the pooling or head — FPN, a U-Net
decoder and HRNet's upsample-and-concat. Each takes the stage channel list and reports ``out_channels``."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError
from ..registry import registry


def _check_channels(name: str, in_channels: object) -> list[int]:
    if not isinstance(in_channels, (list, tuple)) or not in_channels or not all(
            isinstance(c, int) and c > 0 for c in in_channels):
        raise ConfigError(f"neck {name}: in_channels must be a non-empty list of stage channel counts, got "
                          f"{in_channels!r}")
    return list(in_channels)


def _conv_bn_relu(in_channels: int, out_channels: int, kernel: int = 3) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel, padding=kernel // 2, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


@registry("necks").register(help="feature pyramid: top-down sum of lateral 1x1 convs, one map per stage")
class FPN(nn.Module):
    """Feature pyramid network: every stage projected to ``out_channels`` and summed top-down.

    Takes and returns a list of maps (finest first), so ``output_kind`` is ``"features"``.

    >>> neck = FPN([8, 16], out_channels=4)
    >>> [f.shape[1:] for f in neck([torch.zeros(1, 8, 8, 8), torch.zeros(1, 16, 4, 4)])]
    [torch.Size([4, 8, 8]), torch.Size([4, 4, 4])]
    """

    input_kind = "features"
    output_kind = "features"

    def __init__(self, in_channels: list[int], out_channels: int = 64) -> None:
        super().__init__()
        channels = _check_channels("FPN", in_channels)
        self.lateral = nn.ModuleList(nn.Conv2d(c, out_channels, 1) for c in channels)
        self.smooth = nn.ModuleList(nn.Conv2d(out_channels, out_channels, 3, padding=1) for _ in channels)
        self.out_channels = out_channels
        self.out_channels_list = [out_channels] * len(channels)

    def forward(self, features: list[torch.Tensor]) -> list[torch.Tensor]:
        laterals = [conv(f) for conv, f in zip(self.lateral, features)]
        for i in range(len(laterals) - 2, -1, -1):
            laterals[i] = laterals[i] + F.interpolate(laterals[i + 1], size=laterals[i].shape[-2:], mode="nearest")
        return [conv(x) for conv, x in zip(self.smooth, laterals)]


@registry("necks").register(help="U-Net decoder: upsample, concat the skip connection, two convs, per stage")
class UNetDecoder(nn.Module):
    """U-Net decoder from the coarsest stage up to the finest: one map at the finest stage's size.

    >>> neck = UNetDecoder([8, 16, 32], decoder_channels=[16, 8])
    >>> neck([torch.zeros(1, 8, 8, 8), torch.zeros(1, 16, 4, 4), torch.zeros(1, 32, 2, 2)]).shape
    torch.Size([1, 8, 8, 8])
    """

    input_kind = "features"
    output_kind = "map"

    def __init__(self, in_channels: list[int], decoder_channels: list[int] | None = None) -> None:
        super().__init__()
        channels = _check_channels("UNetDecoder", in_channels)
        steps = len(channels) - 1
        decoder = list(decoder_channels) if decoder_channels is not None else list(reversed(channels[:-1]))
        if len(decoder) != steps:
            raise ConfigError(f"neck UNetDecoder: decoder_channels needs {steps} entries (one per upsampling step "
                              f"for {len(channels)} stages), got {decoder_channels!r}")
        self.blocks = nn.ModuleList()
        previous = channels[-1]
        for skip, out in zip(reversed(channels[:-1]), decoder):
            self.blocks.append(nn.Sequential(_conv_bn_relu(previous + skip, out), _conv_bn_relu(out, out)))
            previous = out
        self.out_channels = previous

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        x = features[-1]
        for block, skip in zip(self.blocks, reversed(features[:-1])):
            x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            x = block(torch.cat([x, skip], dim=1))
        return x


@registry("necks").register(help="HRNet-style: upsample every stage to the finest and concatenate")
class HRNetSegmentationNeck(nn.Module):
    """Upsample all stages to the finest stage's size and concatenate them (TorchOk's name).

    >>> neck = HRNetSegmentationNeck([4, 8])
    >>> neck.out_channels, neck([torch.zeros(1, 4, 8, 8), torch.zeros(1, 8, 4, 4)]).shape
    (12, torch.Size([1, 12, 8, 8]))
    """

    input_kind = "features"
    output_kind = "map"

    def __init__(self, in_channels: list[int]) -> None:
        super().__init__()
        self.out_channels = sum(_check_channels("HRNetSegmentationNeck", in_channels))

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        size = features[0].shape[-2:]
        upsampled = [features[0]] + [
            F.interpolate(f, size=size, mode="bilinear", align_corners=False) for f in features[1:]
        ]
        return torch.cat(upsampled, dim=1)
