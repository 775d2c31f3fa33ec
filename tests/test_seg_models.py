"""LiteUNet's ``conv_bias`` switch: a bias before BatchNorm changes nothing in training, so the CPU
recipe drops it; the default keeps the parameters of models trained before it."""
import numpy as np
import paddle
import pytest

from gamma_kit.seg.models import LiteUNet


def _conv_biases(model):
    return {k: v for k, v in model.state_dict().items() if k.endswith("_conv.bias")}


def test_without_conv_bias_only_the_biases_before_batchnorm_go():
    paddle.seed(0)
    with_bias = LiteUNet(3, base_channels=4, levels=2, max_channels=16)
    without = LiteUNet(3, base_channels=4, levels=2, max_channels=16, conv_bias=False)
    widths = [4, 8, 16]
    # two conv-BN-ReLU per block: stem, 2 downs, 2 ups; each bias has one value per output channel
    expected = 2 * (widths[0] + widths[1] + widths[2] + widths[1] + widths[0])
    assert sum(int(v.size) for v in _conv_biases(with_bias).values()) == expected
    assert _conv_biases(without) == {}
    assert set(with_bias.state_dict()) - set(without.state_dict()) == set(_conv_biases(with_bias))
    assert "cls.bias" in without.state_dict()        # the last conv has no BatchNorm after it: kept


def test_a_bias_before_batchnorm_changes_nothing_in_training():
    paddle.seed(1)
    model = LiteUNet(3, base_channels=4, levels=2, max_channels=16)
    model.train()
    x = paddle.to_tensor(np.random.default_rng(0).random((2, 3, 32, 32), dtype=np.float32))
    before = model(x)[0].numpy()
    rng = np.random.default_rng(1)
    for p in _conv_biases(model).values():
        p.set_value(rng.normal(0, 3, p.shape).astype(np.float32))
    after = model(x)[0].numpy()
    np.testing.assert_allclose(after, before, atol=2e-4)     # (eval mode: running statistics differ)


@pytest.mark.parametrize("bias", [True, False])
def test_weights_round_trip_into_the_same_layout(bias):
    paddle.seed(2)
    a = LiteUNet(3, base_channels=4, levels=2, max_channels=16, conv_bias=bias)
    b = LiteUNet(3, base_channels=4, levels=2, max_channels=16, conv_bias=bias)
    b.set_state_dict(a.state_dict())
    a.eval(), b.eval()
    x = paddle.ones([1, 3, 32, 32])
    np.testing.assert_array_equal(a(x)[0].numpy(), b(x)[0].numpy())
