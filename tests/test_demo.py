"""The README demo, shrunk: tiny synthetic images, one fovea epoch, a few seg iterations."""
import json

from gamma_kit.demo import main, summary_table


def test_demo_end_to_end_tiny(tmp_path, capsys):
    out = tmp_path / "demo"
    rc = main(["--out", str(out), "--train", "10", "--test", "4", "--sizes", "748x500,489x484",
               "--fovea-epochs", "1", "--seg-iters", "4", "--device", "cpu", "--quiet"])
    assert rc == 0
    res = json.loads((out / "results.json").read_text())
    assert res["fovea"]["n_test"] == 4 and 0 <= res["fovea"]["aed"] < 1
    assert 0 < res["baselines"]["fovea_mean_position"]["aed"] < 1
    assert res["baselines"]["seg_empty_mask"]["dice_disc"] == 0.0      # an empty mask finds no disc
    assert 0 <= res["seg"]["dice_disc"] <= 1 and res["seg"]["n"] == 4
    assert (out / "fovea" / "submission_fovea.csv").read_text().startswith("data,Fovea_X,Fovea_Y")
    table = capsys.readouterr().out
    assert "dice_disc" in table and "aed" in table
    # a second run reuses the synthetic data instead of refusing or overwriting it
    assert main(["--out", str(out), "--tasks", "seg", "--seg-iters", "2", "--device", "cpu", "--quiet"]) == 0
    assert "using the synthetic data already in" in capsys.readouterr().out


def test_summary_table_marks_missing_models():
    res = {"baselines": {"seg_empty_mask": {"dice_disc": 0.0, "dice_cup": 0.0, "vcdr_mae": 0.5, "score": 0.15}},
           "seg": {"dice_disc": 0.9, "dice_cup": 0.7, "vcdr_mae": None, "score": 0.8}, "seconds": {"total": 3}}
    table = summary_table(res)
    assert "0.9000" in table and "fovea" not in table.split("baselines")[0]
    assert "vcdr_mae        0.5000         -" in table
