"""fovea_report.csv (issue 19.4): each flag fires on a photo whose heatmaps are built to trigger it and
stays quiet on a clean one; the columns hold what the flags are computed from; fovea predict writes
the report beside the submission, whose format is unchanged."""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from fovea_fixtures import random_run, tiny_synth
from gamma_kit.data import load_fovea_split
from gamma_kit.fovea.config import build_codec, load_config
from gamma_kit.fovea.dataset import CanonicalCache
from gamma_kit.fovea.demo import CPU_CONFIG
from gamma_kit.fovea.inference import locate
from gamma_kit.fovea.report import REPORT_COLUMNS, report_rows
from gamma_kit.fovea.roi import RoiPolicy


class Maps:
    """A stand-in model (the exported models' interface) that returns the heatmaps it is given."""

    def __init__(self, maps):
        self.maps = np.asarray(maps, np.float32)

    def predict_heatmaps(self, crops, batch_size=8, flip=False):
        assert len(crops) == len(self.maps)
        return self.maps


@pytest.fixture(scope="module")
def canons(tmp_path_factory):
    data = tiny_synth(tmp_path_factory.mktemp("fovea_report") / "data", 0, 4, seed=7)
    cache = CanonicalCache(0.25)
    return [cache.get(i, p) for i, p in load_fovea_split(data, "testing").images.items()]


@pytest.fixture(scope="module")
def codec():
    return build_codec(load_config(CPU_CONFIG, ["roi.anchor=fixed"]))


def _rows(models, canons, codec, roi=None):
    found = locate(models, canons, [codec] * len(models), roi=roi, fill_empty=True)
    return found, {r["id"]: r for r in report_rows(found, [c.frame for c in canons], [codec] * len(models),
                                                    (roi or RoiPolicy()).anchor)}


def test_peak_flags_and_columns(canons, codec):
    centre = (codec.width / 2, codec.height / 2)
    clean = codec.encode(centre)
    maps = [clean, 0.3 * clean, clean + 1.0, np.zeros_like(clean)]      # clean, weak, flat, empty
    found, rows = _rows([Maps(maps)], canons, codec)
    ids = [c.id for c in canons]
    assert [rows[i]["flags"] for i in ids] == ["", "weak_peak", "flat_peak", "empty weak_peak flat_peak"]
    assert [rows[i]["source"] for i in ids] == ["network", "network", "network", "fallback"]
    assert rows[ids[0]]["peak"] == pytest.approx(10.0) and rows[ids[0]]["sharpness"] == pytest.approx(1.0)
    assert rows[ids[1]]["peak"] == pytest.approx(3.0)
    assert rows[ids[0]]["fold_spread_px"] == 0.0 and rows[ids[0]]["from_prior_px"] == ""   # one model, fixed window
    assert (rows[ids[0]]["x"], rows[ids[0]]["y"]) == pytest.approx(tuple(found.image_xy[0]), abs=0.01)
    assert list(rows[ids[0]]) == list(REPORT_COLUMNS)


def test_folds_that_disagree(canons, codec):
    near = [codec.encode((codec.width / 2, codec.height / 2))] * 4
    far = [codec.encode((codec.width / 2 + 30, codec.height / 2))] * 4    # 30 heatmap px = 120 canonical px
    _, rows = _rows([Maps(near), Maps(far)], canons, codec)
    assert all(r["flags"] == "folds_disagree" for r in rows.values())
    assert all(r["fold_spread_px"] > 0.01 * c.size[0] for r, c in zip(rows.values(), canons))
    _, rows = _rows([Maps(near), Maps(near)], canons, codec)
    assert all(r["flags"] == "" and r["fold_spread_px"] == 0.0 for r in rows.values())


def test_guard_prior_and_fixed_window_flags(canons, codec):
    assert all(c.disc is not None for c in canons)
    roi = RoiPolicy("disc", disc_offset=(718.0, 93.0), max_from_prior=250.0)
    photos = [canons[0], canons[1], replace(canons[2], disc=None)]         # the third: no disc to anchor on
    centre = np.array([codec.width / 2, codec.height / 2])
    maps = [codec.encode(centre + (45, 0)),      # 180 canonical px from the prior: kept, but far from it
            codec.encode(centre + (75, 0)),      # 300 px: beyond the guard's 250 px, the prior replaces it
            codec.encode(centre)]
    _, rows = _rows([Maps(maps)], photos, codec, roi)
    first, second, third = (rows[c.id] for c in photos)
    assert first["flags"] == "far_from_prior" and first["source"] == "network"
    assert first["from_prior_px"] > 0.05 * photos[0].size[0]
    assert second["flags"] == "guarded" and second["source"] == "guard" and second["from_prior_px"] == 0.0
    assert third["flags"] == "fixed_window" and third["from_prior_px"] == ""


def test_predict_writes_the_report_beside_the_submission(canons, tmp_path):
    from gamma_kit.fovea.predict import predict

    run, _ = random_run(tmp_path / "run", seeds=(3,))
    images = {c.id: c.path for c in canons}
    out = predict([run], images, tmp_path / "sub.csv", device="cpu", progress=False, review=True)
    report = pd.read_csv(out["report"], dtype={"id": str}, keep_default_na=False)
    assert out["report"] == tmp_path / "sub_report.csv" and list(report.columns) == list(REPORT_COLUMNS)
    sub = pd.read_csv(tmp_path / "sub.csv", dtype={"data": str})
    assert list(sub.columns) == ["data", "Fovea_X", "Fovea_Y"] and list(report["id"]) == list(sub["data"])
    np.testing.assert_allclose(report[["x", "y"]].to_numpy(), sub[["Fovea_X", "Fovea_Y"]].to_numpy(), atol=0.01)
    assert out["review"] == [tmp_path / "sub_review" / "review_001.png"] and out["flagged"] == (report["flags"] != "").sum()
    import cv2

    sheet = cv2.imread(str(out["review"][0]))
    assert sheet.shape[1] == 5 * 300 and sheet.shape[0] > 200                # one row of thumbnails
