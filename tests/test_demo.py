"""The README demo, shrunk: tiny synthetic images, one fovea epoch, a few seg iterations."""
import json

from gamma_kit.demo import main, summary_table
import pytest

pytestmark = pytest.mark.slow   # the fast loop: python -m pytest -q -m "not slow"

# what PaddleSeg prints during training and model building: it belongs in OUT/logs, not on the console
FLOOD = ("Total Flops", "Use the following config to build", "[TRAIN]", "type: LiteUNet", "flops has been counted",
         "[EVAL]")


def test_demo_end_to_end_tiny(tmp_path, capfd):
    out = tmp_path / "demo"
    rc = main(["--out", str(out), "--train", "10", "--test", "4", "--sizes", "748x500,489x484",
               "--fovea-epochs", "1", "--seg-iters", "4", "--device", "cpu"])
    assert rc == 0
    res = json.loads((out / "results.json").read_text())
    assert res["fovea"]["n_test"] == 4 and 0 <= res["fovea"]["aed"] < 1
    assert 0 < res["baselines"]["fovea_mean_position"]["aed"] < 1
    assert res["baselines"]["seg_empty_mask"]["dice_disc"] == 0.0      # an empty mask finds no disc
    assert 0 <= res["seg"]["dice_disc"] <= 1 and res["seg"]["n"] == 4
    assert (out / "fovea" / "submission_fovea.csv").read_text().startswith("data,Fovea_X,Fovea_Y")
    console = capfd.readouterr()
    table = console.out
    assert "dice_disc" in table and "aed" in table
    # the console holds progress bars and one table; PaddleSeg's dumps and FLOPs tables are in the log
    assert table.count("baselines: mean canonical training fovea") == 1
    for text in FLOOD:
        assert text not in console.out and text not in console.err, text
    assert "seg train" in console.err                                   # the training progress bar
    log = (out / "logs" / "seg_train.log").read_text()
    assert "Total Flops" in log and "[TRAIN]" in log and "Use the following config to build" in log
    assert f"logs: {out / 'logs'}" in table
    # a second run reuses the synthetic data instead of refusing or overwriting it; --verbose shows the logs
    assert main(["--out", str(out), "--tasks", "seg", "--seg-iters", "2", "--device", "cpu", "--quiet",
                 "--verbose"]) == 0
    again = capfd.readouterr().out
    assert "using the synthetic data already in" in again
    assert "[TRAIN]" in again and "Total Flops" in again


def test_summary_table_marks_missing_models():
    res = {"baselines": {"seg_empty_mask": {"dice_disc": 0.0, "dice_cup": 0.0, "vcdr_mae": 0.5, "score": 0.15}},
           "seg": {"dice_disc": 0.9, "dice_cup": 0.7, "vcdr_mae": None, "score": 0.8}, "seconds": {"total": 3}}
    table = summary_table(res)
    assert "0.9000" in table and "fovea" not in table.split("baselines")[0]
    assert "vcdr_mae        0.5000         -" in table
