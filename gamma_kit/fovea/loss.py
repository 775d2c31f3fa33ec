"""Loss of the original fovea method (SPEC 2):
``mean((pred - target)^2) - 0.0005 * var(pred)``, the variance taken over the whole
batch output (population variance): a small reward for peaked heatmaps.
pred and target: (N, 1, H, W) float32 tensors of the same shape.
"""
from __future__ import annotations

import paddle

__all__ = ["heatmap_loss", "VARIANCE_REWARD"]

VARIANCE_REWARD = 0.0005


def heatmap_loss(pred: paddle.Tensor, target: paddle.Tensor,
                 variance_reward: float = VARIANCE_REWARD) -> paddle.Tensor:
    """Scalar loss: MSE minus ``variance_reward`` x the (biased) variance of ``pred``."""
    if tuple(pred.shape) != tuple(target.shape):
        raise ValueError(f"pred {tuple(pred.shape)} and target {tuple(target.shape)} differ in shape")
    pred32 = pred.astype("float32")
    mse = paddle.mean((pred32 - target.astype("float32")) ** 2)
    var = paddle.mean((pred32 - paddle.mean(pred32)) ** 2)
    return mse - variance_reward * var
