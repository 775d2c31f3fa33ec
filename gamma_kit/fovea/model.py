"""U-Net heatmap regressor of the original fovea method (SPEC 2), with width and
kernel size as parameters.

Layout: input (N, 3, H, W) float32, raw 0-255 RGB (no normalisation, as the
original); output (N, 1, H, W) float32 heatmap >= 0 (final ReLU).

Default = original: 5 levels, channels 64-128-256-512-1024, 5x5 convolutions with
reflect padding and no bias, BatchNorm, Dropout2D(0.2), ReLU; down-sampling by a
stride-2 5x5 convolution; up-sampling by nearest x2 (to the skip's size, so any H, W
works, e.g. 152x100 at 1/4 scale) + 1x1 convolution halving the channels, then
concatenation with the skip; head 5x5 conv to 1 channel + ReLU.
About 88 M parameters.
"""
from __future__ import annotations

import paddle
import paddle.nn as nn
import paddle.nn.functional as F

__all__ = ["FoveaUNet", "count_parameters"]


def _conv(cin: int, cout: int, k: int, stride: int = 1) -> nn.Conv2D:
    return nn.Conv2D(cin, cout, kernel_size=k, stride=stride, padding=(k - 1) // 2,
                     padding_mode="reflect", bias_attr=False)


class ConvBlock(nn.Layer):
    """Two [conv k x k (reflect, no bias), BN, Dropout2D, ReLU]."""

    def __init__(self, cin: int, cout: int, k: int, dropout: float) -> None:
        super().__init__()
        self.layer = nn.Sequential(
            _conv(cin, cout, k), nn.BatchNorm2D(cout), nn.Dropout2D(p=dropout), nn.ReLU(),
            _conv(cout, cout, k), nn.BatchNorm2D(cout), nn.Dropout2D(p=dropout), nn.ReLU())

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        return self.layer(x)


class DownSample(nn.Layer):
    """Stride-2 k x k conv (reflect, no bias) + BN + ReLU, channels unchanged."""

    def __init__(self, ch: int, k: int) -> None:
        super().__init__()
        self.layer = nn.Sequential(_conv(ch, ch, k, stride=2), nn.BatchNorm2D(ch), nn.ReLU())

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        return self.layer(x)


class UpSample(nn.Layer):
    """Nearest x2, 1x1 conv halving the channels, concat with the skip (channel axis)."""

    def __init__(self, ch: int) -> None:
        super().__init__()
        self.layer = nn.Conv2D(ch, ch // 2, kernel_size=1)

    def forward(self, x: paddle.Tensor, skip: paddle.Tensor) -> paddle.Tensor:
        # nearest x2; sized to the skip so odd sizes (100 -> 50 -> 25 -> 13) work too
        x = self.layer(F.interpolate(x, size=skip.shape[2:], mode="nearest"))
        return paddle.concat([x, skip], axis=1)


class FoveaUNet(nn.Layer):
    """The original U-Net. ``width`` = channels of the first level (original 64),
    ``kernel_size`` of every non-1x1 conv (original 5), ``levels`` (original 5)."""

    def __init__(self, width: int = 64, kernel_size: int = 5, levels: int = 5,
                 dropout: float = 0.2, in_channels: int = 3) -> None:
        super().__init__()
        if width < 2 or kernel_size < 1 or kernel_size % 2 == 0 or levels < 2:
            raise ValueError(f"need width >= 2, odd kernel_size and levels >= 2; got width={width}, "
                             f"kernel_size={kernel_size}, levels={levels}")
        self.levels = levels
        chans = [width * 2 ** i for i in range(levels)]
        self.enc = nn.LayerList([ConvBlock(in_channels, chans[0], kernel_size, dropout)] +
                                [ConvBlock(chans[i - 1], chans[i], kernel_size, dropout)
                                 for i in range(1, levels)])
        self.down = nn.LayerList([DownSample(chans[i], kernel_size) for i in range(levels - 1)])
        self.up = nn.LayerList([UpSample(chans[i]) for i in range(levels - 1, 0, -1)])
        self.dec = nn.LayerList([ConvBlock(chans[i], chans[i - 1], kernel_size, dropout)
                                 for i in range(levels - 1, 0, -1)])
        self.head = _conv(chans[0], 1, kernel_size)

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        skips = []
        for i, block in enumerate(self.enc):
            x = block(x if i == 0 else self.down[i - 1](x))
            skips.append(x)
        x = skips.pop()
        for up, block in zip(self.up, self.dec):
            x = block(up(x, skips.pop()))
        return F.relu(self.head(x))


def count_parameters(model: nn.Layer, trainable_only: bool = True) -> int:
    """Number of (trainable) parameters; BN running statistics are not parameters."""
    return int(sum(int(p.numel()) for p in model.parameters()
                   if not trainable_only or not p.stop_gradient))
