"""Metrics against hand-computed values."""
import numpy as np
import pandas as pd
import pytest

from gamma_kit.metrics import (DEFAULT_SEG_WEIGHTS, dice, evaluate_fovea, evaluate_seg, fovea_ed, fovea_score,
                               seg_image_metrics, vcdr, vertical_diameter)


def test_fovea_ed_hand_computed():
    # (3, 4) px off on a 300 x 400 image: sqrt((3/300)^2 + (4/400)^2) = sqrt(2) * 0.01
    ed = fovea_ed([[103, 204]], [[100, 200]], [[300, 400]])
    assert ed[0] == pytest.approx(np.sqrt(2) * 0.01)


def test_fovea_score_of_leaderboard_aed():
    assert fovea_score(0.0) == pytest.approx(10.0)
    assert fovea_score(0.0102) == pytest.approx(1 / 0.1102)
    assert fovea_score(0.0102) == pytest.approx(9.0744, abs=1e-4)


def test_evaluate_fovea_uses_each_image_size():
    gt = pd.DataFrame({"Fovea_X": [100.0, 1000.0], "Fovea_Y": [100.0, 1000.0]}, index=["0101", "0102"])
    # rows in another order than the GT: matching is by id, not position
    pred = pd.DataFrame({"Fovea_X": [1000.0, 110.0], "Fovea_Y": [1020.0, 100.0]}, index=["0102", "0101"])
    res = evaluate_fovea(pred, gt, {"0101": (1000, 2000), "0102": (2000, 1000)})
    assert res["per_image"].loc["0101", "ed"] == pytest.approx(0.01)      # 10 / 1000
    assert res["per_image"].loc["0102", "ed"] == pytest.approx(0.02)      # 20 / 1000
    assert res["aed"] == pytest.approx(0.015) and res["n"] == 2
    assert res["score"] == pytest.approx(1 / 0.115)


def test_evaluate_fovea_rejects_missing_and_extra():
    gt = pd.DataFrame({"Fovea_X": [1.0], "Fovea_Y": [1.0]}, index=["0101"])
    pred = pd.DataFrame({"Fovea_X": [1.0], "Fovea_Y": [1.0]}, index=["0102"])
    with pytest.raises(ValueError, match="no prediction for \\['0101'\\]"):
        evaluate_fovea(pred, gt, {"0101": (10, 10)})


def test_dice_and_empty():
    a = np.zeros((4, 4), bool); a[:2] = True          # 8 px
    b = np.zeros((4, 4), bool); b[1:3] = True         # 8 px, overlap 4
    assert dice(a, b) == pytest.approx(0.5)
    assert dice(np.zeros((2, 2)), np.zeros((2, 2))) == 1.0
    assert dice(a, np.zeros((4, 4))) == 0.0


def _mask():
    m = np.full((10, 8), 255, np.uint8)
    m[2:8, 2:6] = 128      # disc: 6 rows tall
    m[4:7, 3:5] = 0        # cup: 3 rows tall
    return m


def test_vertical_diameter_and_vcdr():
    m = _mask()
    assert vertical_diameter(m < 255) == 6
    assert vertical_diameter(m == 0) == 3
    assert vcdr(m) == pytest.approx(0.5)
    assert vcdr(np.full((3, 3), 255, np.uint8)) == 0.0


def test_vertical_diameter_equals_numpy_column_sums():
    rng = np.random.default_rng(0)
    for s in [rng.random((37, 53)) < 0.3, (rng.random((60, 80)) < 0.5)[::2, ::3],   # plain, not contiguous
              rng.random((1, 9)) < 0.5, np.zeros((4, 5), bool), np.ones((300, 2), bool)]:
        assert vertical_diameter(s) == int(s.sum(axis=0).max())
    assert vertical_diameter(np.zeros((0, 5), bool)) == 0


def test_seg_image_metrics_disc_includes_cup():
    gt = _mask()
    pred = gt.copy()
    pred[pred == 0] = 128          # cup predicted as rim: disc still perfect, cup missed
    m = seg_image_metrics(pred, gt)
    assert m["dice_disc"] == 1.0 and m["dice_cup"] == 0.0
    assert m["vcdr_gt"] == pytest.approx(0.5) and m["vcdr_pred"] == 0.0


def test_evaluate_seg_averages_per_image_and_weights():
    gt = {"a": _mask(), "b": _mask()}
    pred_b = _mask()
    pred_b[pred_b == 0] = 128
    res = evaluate_seg({"a": _mask(), "b": pred_b}, gt)
    assert res["dice_disc"] == 1.0
    assert res["dice_cup"] == pytest.approx(0.5)        # (1 + 0) / 2 per image
    assert res["vcdr_mae"] == pytest.approx(0.25)       # (0 + 0.5) / 2
    w = DEFAULT_SEG_WEIGHTS
    assert res["score"] == pytest.approx(w["dice_disc"] + 0.5 * w["dice_cup"] + 0.75 * w["vcdr"])
    custom = evaluate_seg({"a": _mask(), "b": pred_b}, gt, {"dice_disc": 0, "dice_cup": 1, "vcdr": 0})
    assert custom["score"] == pytest.approx(0.5)


@pytest.mark.parametrize("bad, msg", [
    (np.full((10, 8), 7, np.uint8), "values must be in"),
    (np.full((5, 8), 255, np.uint8), "predict at the original size"),
])
def test_seg_metrics_bad_masks(bad, msg):
    with pytest.raises(ValueError, match=msg):
        seg_image_metrics(bad, _mask())


def test_evaluate_seg_bad_weights_and_missing():
    with pytest.raises(ValueError, match="weights need"):
        evaluate_seg({"a": _mask()}, {"a": _mask()}, {"disc": 1})
    with pytest.raises(ValueError, match="no prediction"):
        evaluate_seg({}, {"a": _mask()})


def test_absurd_prediction_is_an_infinite_distance_without_a_warning():
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")                     # numpy's overflow RuntimeWarning would raise
        ed = fovea_ed([[1e308, 0.0], [3.0, 4.0]], [[0.0, 0.0], [0.0, 0.0]], [[100, 100], [100, 100]])
    assert np.isinf(ed[0]) and ed[1] == pytest.approx(0.05)
    assert fovea_score(float(ed.mean())) == 0.0


def test_mask_value_message_is_the_data_layer_one():
    m = np.full((4, 4), 255, np.uint8)
    m[0, 0] = 7
    with pytest.raises(ValueError, match=r"^0101 ground truth: mask values must be in \{0, 128, 255\} \(0 cup, 128 disc, "
                                         r"255 background\); found \[7\]$"):
        seg_image_metrics(np.full((4, 4), 255, np.uint8), m, name="0101")
