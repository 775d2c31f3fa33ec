"""Segmentation models the kit adds to PaddleSeg's registry.

``LiteUNet`` is PaddleSeg's UNet layout (double 3x3 conv-BN-ReLU blocks, max-pool down,
bilinear up + skip concatenation) with the width and depth as options, so that a CPU
can train it: PaddleSeg's UNet (64..512 channels, 13.4 M parameters) takes ~15 s per
batch of four 256x256 images on 2 cores (SPEC 4); ``LiteUNet(base_channels=8, levels=4,
max_channels=128)`` (the CPU config) has 0.49 M parameters and takes ~0.8 s per batch of
four 160x160 images (2.0 M parameters with the default width 16).

Importing this module registers ``LiteUNet`` in ``paddleseg.cvlibs.manager.MODELS``,
so a YAML config can say ``model: {type: LiteUNet, ...}``. Input (N, 3, H, W) float32;
output a list with one (N, num_classes, H, W) logit tensor, as PaddleSeg expects.
"""
from __future__ import annotations

import gamma_kit  # noqa: F401  (thread settings before paddle)
import paddle
import paddle.nn as nn
import paddle.nn.functional as F
from paddleseg.cvlibs import manager
from paddleseg.models import layers

__all__ = ["LiteUNet"]


def _double_conv(in_ch: int, out_ch: int, bias: bool = True) -> nn.Sequential:
    opts = {} if bias else {"bias_attr": False}
    return nn.Sequential(layers.ConvBNReLU(in_ch, out_ch, 3, **opts), layers.ConvBNReLU(out_ch, out_ch, 3, **opts))


class _Up(nn.Layer):
    def __init__(self, in_ch: int, skip_ch: int, out_ch: int, align_corners: bool, bias: bool):
        super().__init__()
        self.align_corners = align_corners
        self.conv = _double_conv(in_ch + skip_ch, out_ch, bias)

    def forward(self, x, skip):
        x = F.interpolate(x, paddle.shape(skip)[2:], mode="bilinear", align_corners=self.align_corners)
        return self.conv(paddle.concat([x, skip], axis=1))


class LiteUNet(nn.Layer):
    """U-Net with ``levels`` down-samplings; channels ``base_channels * 2**k``, capped at ``max_channels``.

    Args:
        num_classes: output classes (3 for GAMMA: cup, rim, background).
        base_channels: channels of the first block.
        levels: number of 2x down-samplings; H and W should be divisible by 2**levels.
        max_channels: upper bound on the channels of any block.
        in_channels: input channels (3 for RGB).
        align_corners: passed to the bilinear up-sampling.
        pretrained: optional path of a ``.pdparams`` file to load.
        conv_bias: a bias in the convolutions that BatchNorm follows. BatchNorm subtracts the
            batch mean, so such a bias changes nothing the network computes in training, while
            its separate add took ~10 % of a CPU step; ``False`` drops it (the CPU recipe).
            ``True`` (the default) keeps models trained before it loadable.
    """

    def __init__(self, num_classes: int, base_channels: int = 16, levels: int = 4,
                 max_channels: int = 256, in_channels: int = 3, align_corners: bool = False,
                 pretrained: str | None = None, conv_bias: bool = True):
        super().__init__()
        if levels < 1 or base_channels < 1:
            raise ValueError(f"LiteUNet needs levels >= 1 and base_channels >= 1, got {levels}, {base_channels}")
        widths = [min(base_channels * 2 ** k, max_channels) for k in range(levels + 1)]
        self.stem = _double_conv(in_channels, widths[0], conv_bias)
        self.downs = nn.LayerList([
            nn.Sequential(nn.MaxPool2D(kernel_size=2, stride=2), _double_conv(widths[k], widths[k + 1], conv_bias))
            for k in range(levels)])
        self.ups = nn.LayerList([
            _Up(widths[k + 1], widths[k], widths[k], align_corners, conv_bias) for k in reversed(range(levels))])
        self.cls = nn.Conv2D(widths[0], num_classes, kernel_size=3, padding=1)
        self.num_classes = num_classes
        if pretrained is not None:
            from paddleseg.utils import utils
            utils.load_entire_model(self, pretrained)

    def forward(self, x):
        skips = []
        x = self.stem(x)
        for down in self.downs:
            skips.append(x)
            x = down(x)
        for up, skip in zip(self.ups, reversed(skips)):
            x = up(x, skip)
        return [self.cls(x)]


if "LiteUNet" not in manager.MODELS.components_dict:
    manager.MODELS.add_component(LiteUNet)
