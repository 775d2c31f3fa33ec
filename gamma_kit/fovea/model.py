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

Speed (CPU, same numbers as the plain layers): Paddle's reflect padding (``pad3d``) is a
slow kernel on the CPU, and its autograd through slices is slower still, so the convs pad
with ``reflect_pad`` (concatenated edge slices, with a hand-written backward that folds the
border gradients back). The up-sampling applies its 1x1 conv before the nearest x2: a
pointwise op commutes with nearest interpolation, so the result is the same with a quarter
of the work. Both give outputs identical to ``nn.Conv2D(padding_mode="reflect")`` and
conv-after-upsample (tests/test_fovea_model_loss_folds.py); the parameters and their names
are unchanged, so checkpoints load either way.
"""
from __future__ import annotations

import paddle
import paddle.nn as nn
import paddle.nn.functional as F

from paddle.autograd import PyLayer

__all__ = ["FoveaUNet", "count_parameters", "reflect_pad", "ReflectConv2D"]


def _along(t: paddle.Tensor, axis: int, a: int, b: int) -> paddle.Tensor:
    """``t[..., a:b, ...]`` on ``axis``."""
    return t[tuple([slice(None)] * axis + [slice(a, b)])]


def _reflect_1d(t: paddle.Tensor, axis: int, p: int) -> paddle.Tensor:
    """Reflect-pad ``t`` by ``p`` on both sides of ``axis`` (edge not repeated, as numpy 'reflect')."""
    n = t.shape[axis]
    lo, hi = _along(t, axis, 1, p + 1), _along(t, axis, n - 1 - p, n - 1)
    if p > 1:
        lo, hi = paddle.flip(lo, [axis]), paddle.flip(hi, [axis])
    return paddle.concat([lo, t, hi], axis=axis)


def _fold_1d(g: paddle.Tensor, axis: int, p: int, n: int) -> paddle.Tensor:
    """Gradient of ``_reflect_1d`` (length n -> n + 2p on ``axis``) back onto the n positions."""
    core, lo, hi = _along(g, axis, p, p + n), _along(g, axis, 0, p), _along(g, axis, p + n, 2 * p + n)
    if p > 1:
        lo, hi = paddle.flip(lo, [axis]), paddle.flip(hi, [axis])
    return paddle.concat([_along(core, axis, 0, 1), _along(core, axis, 1, p + 1) + lo,
                          _along(core, axis, p + 1, n - 1 - p), _along(core, axis, n - 1 - p, n - 1) + hi,
                          _along(core, axis, n - 1, n)], axis=axis)


class _ReflectPad(PyLayer):
    @staticmethod
    def forward(ctx, x, p):
        ctx.p, ctx.hw = p, (x.shape[2], x.shape[3])
        return _reflect_1d(_reflect_1d(x, 2, p), 3, p)

    @staticmethod
    def backward(ctx, g):
        (h, w), p = ctx.hw, ctx.p
        return _fold_1d(_fold_1d(g, 3, p, w), 2, p, h)


def reflect_pad(x: paddle.Tensor, p: int) -> paddle.Tensor:
    """(N, C, H, W) -> (N, C, H + 2p, W + 2p), the same values as
    ``F.pad(x, [p] * 4, mode="reflect")``, several times faster on the CPU (forward and backward)."""
    if p == 0:
        return x
    if min(x.shape[2], x.shape[3]) < 2 * p + 2:      # too small for the sliced form
        return F.pad(x, [p] * 4, mode="reflect")
    if paddle.in_dynamic_mode() and paddle.is_grad_enabled():
        return _ReflectPad.apply(x, p)
    return _reflect_1d(_reflect_1d(x, 2, p), 3, p)   # no gradients (inference, static export): plain ops


class ReflectConv2D(nn.Conv2D):
    """k x k conv with reflect padding of (k - 1) // 2 and no bias: the parameters and the
    numbers of ``nn.Conv2D(..., padding_mode="reflect", bias_attr=False)``, padded by
    :func:`reflect_pad`."""

    def __init__(self, cin: int, cout: int, k: int, stride: int = 1) -> None:
        super().__init__(cin, cout, kernel_size=k, stride=stride, padding=0, bias_attr=False)
        self._reflect = (k - 1) // 2

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        return super().forward(reflect_pad(x, self._reflect))


def _conv(cin: int, cout: int, k: int, stride: int = 1, fast: bool = True) -> nn.Conv2D:
    if fast:
        return ReflectConv2D(cin, cout, k, stride)
    return nn.Conv2D(cin, cout, kernel_size=k, stride=stride, padding=(k - 1) // 2, padding_mode="reflect",
                     bias_attr=False)


class ConvBlock(nn.Layer):
    """Two [conv k x k (reflect, no bias), BN, Dropout2D, ReLU]."""

    def __init__(self, cin: int, cout: int, k: int, dropout: float, fast: bool = True) -> None:
        super().__init__()
        self.layer = nn.Sequential(
            _conv(cin, cout, k, fast=fast), nn.BatchNorm2D(cout), nn.Dropout2D(p=dropout), nn.ReLU(),
            _conv(cout, cout, k, fast=fast), nn.BatchNorm2D(cout), nn.Dropout2D(p=dropout), nn.ReLU())

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        return self.layer(x)


class DownSample(nn.Layer):
    """Stride-2 k x k conv (reflect, no bias) + BN + ReLU, channels unchanged."""

    def __init__(self, ch: int, k: int, fast: bool = True) -> None:
        super().__init__()
        self.layer = nn.Sequential(_conv(ch, ch, k, stride=2, fast=fast), nn.BatchNorm2D(ch), nn.ReLU())

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        return self.layer(x)


class UpSample(nn.Layer):
    """Nearest x2, 1x1 conv halving the channels, concat with the skip (channel axis).
    The 1x1 conv runs before the up-sampling (same result: pointwise ops commute with
    nearest interpolation; a quarter of the work)."""

    def __init__(self, ch: int, conv_first: bool = True) -> None:
        super().__init__()
        self.layer = nn.Conv2D(ch, ch // 2, kernel_size=1)
        self.conv_first = conv_first

    def forward(self, x: paddle.Tensor, skip: paddle.Tensor) -> paddle.Tensor:
        # nearest x2; sized to the skip so odd sizes (100 -> 50 -> 25 -> 13) work too
        if self.conv_first:
            x = F.interpolate(self.layer(x), size=skip.shape[2:], mode="nearest")
        else:
            x = self.layer(F.interpolate(x, size=skip.shape[2:], mode="nearest"))
        return paddle.concat([x, skip], axis=1)


class FoveaUNet(nn.Layer):
    """The original U-Net. ``width`` = channels of the first level (original 64),
    ``kernel_size`` of every non-1x1 conv (original 5), ``levels`` (original 5).
    ``fast_layers=False`` builds it from Paddle's own reflect-padded conv with the 1x1 conv
    after the up-sampling (the reference the fast layers are tested and benchmarked against)."""

    def __init__(self, width: int = 64, kernel_size: int = 5, levels: int = 5,
                 dropout: float = 0.2, in_channels: int = 3, fast_layers: bool = True) -> None:
        super().__init__()
        if width < 2 or kernel_size < 1 or kernel_size % 2 == 0 or levels < 2:
            raise ValueError(f"need width >= 2, odd kernel_size and levels >= 2; got width={width}, "
                             f"kernel_size={kernel_size}, levels={levels}")
        self.levels = levels
        chans = [width * 2 ** i for i in range(levels)]
        f = bool(fast_layers)
        self.enc = nn.LayerList([ConvBlock(in_channels, chans[0], kernel_size, dropout, f)] +
                                [ConvBlock(chans[i - 1], chans[i], kernel_size, dropout, f)
                                 for i in range(1, levels)])
        self.down = nn.LayerList([DownSample(chans[i], kernel_size, f) for i in range(levels - 1)])
        self.up = nn.LayerList([UpSample(chans[i], conv_first=f) for i in range(levels - 1, 0, -1)])
        self.dec = nn.LayerList([ConvBlock(chans[i], chans[i - 1], kernel_size, dropout, f)
                                 for i in range(levels - 1, 0, -1)])
        self.head = _conv(chans[0], 1, kernel_size, fast=f)

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
