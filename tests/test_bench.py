"""Smoke tests of the benchmark harness (bench/): the original re-statements agree with
the kit on tiny inputs, RESULTS.md renders from benchmark rows, run_all's parts and
--only/--skip wiring, and the benches' rows from hand-made numbers and tiny real runs.
Nothing timed is asserted. Runs in about 15 s (most of it the tiny fovea epoch run)."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"
sys.path.insert(0, str(BENCH))

import bench_backends  # noqa: E402
import bench_inference  # noqa: E402
import bench_cores  # noqa: E402
import bench_cv_folds  # noqa: E402
import bench_disc_locate  # noqa: E402
import bench_fovea_dark  # noqa: E402
import bench_fovea_epoch  # noqa: E402
import bench_predict_memory  # noqa: E402
import bench_seg_two_stage  # noqa: E402
import bench_synth_realism  # noqa: E402
import common  # noqa: E402
import originals  # noqa: E402
import run_all  # noqa: E402

from gamma_kit.fovea.codec import HeatmapCodec  # noqa: E402


def test_original_target_loop_matches_codec_encode():
    codec = HeatmapCodec(roi_size=(60, 40), radius=12, kernel_size=12)
    for x, y in [(20.0, 15.0), (33.3, 7.9), (0.0, 39.5)]:
        loop = originals.original_target_loop(x, y, 60, 40, radius=12)
        assert loop.shape == (40, 60)
        np.testing.assert_array_equal(loop, codec.encode(np.array([x, y])))


def test_original_decode_fallback_and_loop_agree_with_codec():
    codec = HeatmapCodec(roi_size=(64, 48), radius=10, kernel_size=16, on_empty="original",
                         empty_sum=1000.0)
    hm = codec.encode(np.array([30.0, 20.0])) * 40
    assert originals.original_decode(hm, 16) == tuple(codec.decode(hm).xy[0])
    empty = np.zeros((48, 64), np.float32)
    assert originals.original_decode(empty, 16) == (384.0, 240.0)


def test_render_writes_table_with_ratio_and_targets(tmp_path):
    rows = [common.row("Decode", "1 s", "5 ms", 200.0, ">= 100x", True, "1 MiB (tracemalloc)", "n=3"),
            common.row("Segmentation", "3 s", "2 s", 1.5, "<= 1 s", False)]
    machine = {"cpu": "test cpu", "cores": 2, "cpu_count": 2, "memory_gb": 1.0, "os": "x",
               "OMP_NUM_THREADS": "2", "KMP_BLOCKTIME": "0", "load_avg": [0.1, 0.1, 0.1]}
    args = argparse.Namespace(quick=True, demo=False)
    text = run_all.render(machine, {"python": "3"}, {"heatmap": {"rows": rows, "notes": ["hello"]}}, None, args,
                          12.0, (0.2, 0.2, 0.2))
    assert "| Decode | 1 s | 5 ms | 200x | >= 100x | yes |" in text
    assert "| Segmentation | 3 s | 2 s | 1.5x | <= 1 s | **no** |" in text
    assert "- GPU: not recorded by this run" in text       # the machine dict above has no "gpus"
    machine["gpus"] = []
    cpu_only = run_all.render(machine, {"python": "3"}, {}, None, args, 12.0, (0.2, 0.2, 0.2))
    assert "- GPU: **none** (Paddle saw no CUDA device): no GPU figures" in cpu_only
    machine["gpus"] = ["NVIDIA H200", "NVIDIA H200"]
    gpu = run_all.render(machine, {"python": "3"}, {}, None, args, 12.0, (0.2, 0.2, 0.2))
    assert "- GPU: 2 seen by Paddle (NVIDIA H200)" in gpu and "no GPU figures" not in gpu
    assert "- hello" in text


def test_time_call_and_memory_helpers():
    t = common.time_call(lambda: sum(range(1000)), repeat=3, warmup=1)
    assert t["n"] == 3 and 0 <= t["min"] <= t["median"]
    with common.numpy_peak() as mem:
        np.ones(2 ** 20)   # 8 MiB
    assert mem["mb"] >= 7.9
    with common.RssPeak() as rss:
        block = np.ones(2 ** 23)   # 64 MiB, touched, alive until the block ends
    assert 60 <= rss.peak_mb < 200 and block.size
    assert common.fmt_s(0.0123) == "12.3 ms" and common.fmt_s(2.5) == "2.5 s"


# --- run_all wiring: parts, --only/--skip, rows kept from earlier runs, estimates (nothing timed) ---

NEW_BENCHES = {"bench_fovea_epoch.py": bench_fovea_epoch, "bench_disc_locate.py": bench_disc_locate,
               "bench_seg_two_stage.py": bench_seg_two_stage, "bench_synth_realism.py": bench_synth_realism,
               "bench_predict_memory.py": bench_predict_memory, "bench_backends.py": bench_backends,
               "bench_cores.py": bench_cores, "bench_inference.py": bench_inference,
               "bench_cv_folds.py": bench_cv_folds}


def _args(**kw) -> argparse.Namespace:
    base = dict(quick=False, demo=False, budget=None, idrid=None, only=None, skip=None)
    return argparse.Namespace(**{**base, **kw})


def test_select_parts_only_skip_keep_the_part_order_and_refuse_unknown_names():
    assert run_all.select_parts(None, None) == list(run_all.PARTS)
    assert run_all.select_parts("fovea_epoch, heatmap", None) == ["heatmap", "fovea_epoch"]
    assert run_all.select_parts(None, "accuracy,models") == [n for n in run_all.PARTS
                                                             if n not in ("accuracy", "models")]
    assert run_all.select_parts("disc_locate", "disc_locate") == []
    with pytest.raises(ValueError, match="unknown part.*nope; parts: heatmap"):
        run_all.select_parts("heatmap,nope", None)
    with pytest.raises(SystemExit) as exc:
        run_all.main(["--skip", "nope", "--list"])
    assert exc.value.code == 2


def test_every_result_key_has_a_table_place_and_one_part():
    keys = [k for p in run_all.PARTS.values() for k in p.keys]
    assert len(keys) == len(set(keys))
    assert set(keys) <= set(run_all.ORDER)


@pytest.mark.parametrize("quick", [False, True])
def test_new_parts_build_jobs_that_their_bench_parses(tmp_path, quick):
    idrid = tmp_path / "idrid"
    idrid.mkdir()
    (idrid / "optic_disc_center_GT.csv").write_text("data,OD_X,OD_Y\n")
    ctx = run_all.Context(_args(quick=quick, idrid=str(idrid)), tmp_path / "work", tmp_path / "raw")
    seen = set()
    for name in ("fovea_epoch", "disc_locate", "seg_two_stage", "predict_memory", "backends", "inference", "cores",
                 "cv_folds", "synth_realism"):
        for job in run_all.PARTS[name].jobs(ctx):          # building jobs generates nothing
            assert job.key == name and job.key in run_all.PARTS[name].keys
            ns = NEW_BENCHES[job.script].build_parser().parse_args(job.args + ["--json", "x.json"])
            md = getattr(ns, "md", None) or getattr(ns, "out", None)
            assert Path(md).parent == ctx.raw            # never the committed bench/results/*.md
            seen.add(job.script)
    assert seen == set(NEW_BENCHES)
    assert not (tmp_path / "work").exists()
    epoch = run_all.PARTS["fovea_epoch"].jobs(ctx)[0]
    assert epoch.args[epoch.args.index("--epochs") + 1] == ("2" if quick else "4")


def test_disc_locate_part_without_idrid_is_not_run(tmp_path):
    ctx = run_all.Context(_args(idrid=str(tmp_path / "absent")), tmp_path / "work", tmp_path / "raw")
    with pytest.raises(run_all.Unavailable, match="no IDRiD photos"):
        run_all.PARTS["disc_locate"].jobs(ctx)
    assert run_all.run_part("disc_locate", ctx) is None


def test_estimates_use_the_last_run_of_the_same_mode_and_scale_accuracy_by_budget():
    durations = {"heatmap": {"full": {"seconds": 50.0, "date": "d1"}},
                 "accuracy": {"full": {"seconds": 600.0, "date": "d2", "budget": 120.0}}}
    assert run_all.estimate("heatmap", _args(), durations) == (50.0, "last full run d1")
    sec, src = run_all.estimate("heatmap", _args(quick=True), durations)
    assert (sec, src) == (run_all.PARTS["heatmap"].estimate_s[1], "default estimate")
    assert run_all.estimate("accuracy", _args(budget=60.0), durations)[0] == 300.0
    default = run_all.PARTS["accuracy"].estimate_s[0]
    assert run_all.estimate("accuracy", _args(budget=240.0), {})[0] == 2 * default


def _write_raw(raw: Path, key: str, rows: list[dict], **extra) -> None:
    raw.mkdir(parents=True, exist_ok=True)
    (raw / f"{key}.json").write_text(json.dumps({"rows": rows, "notes": [], **extra}))


def test_partial_run_keeps_other_parts_rows_from_raw_json_and_prints_the_plan(tmp_path, monkeypatch, capsys):
    raw = tmp_path / "raw"
    epoch_row = common.row(bench_fovea_epoch.MEASURE, "11.5 s", "13.3 s", 11.5 / 13.3, "<= 14 s", True,
                           "plain 561 MiB (RSS peak)", "80 train + 20 val images")
    _write_raw(raw, "fovea_epoch", [epoch_row], date="2026-12-01 23:19 UTC", seconds=300.0)
    _write_raw(raw, "disc_locate", [common.row("Stage 1", "a", "b", note="")], date="2026-12-01 23:22 UTC",
               quick=True)
    (raw / run_all.DURATIONS).write_text(json.dumps({"heatmap": {"quick": {"seconds": 12.3, "date": "D"}}}))
    calls = []

    def fake_run_bench(script, args, raw_dir, name, timeout, stamp=None):
        calls.append((script, name, stamp))
        return {"rows": [common.row("Heatmap decode", "1 s", "5 ms", 200.0)], "notes": [], "seconds": 1.0}

    monkeypatch.setattr(run_all, "run_bench", fake_run_bench)
    out = tmp_path / "RESULTS.md"
    rc = run_all.main(["--quick", "--only", "heatmap", "--raw-dir", str(raw), "--work", str(tmp_path / "work"),
                       "--out", str(out), "--idrid-run", ""])
    assert rc == 0
    assert calls == [("bench_heatmap.py", "heatmap", {"quick": True})]
    printed = capsys.readouterr().out
    assert "heatmap        ~12 s" in printed and "(last quick run D)" in printed
    assert "not run (rows from their last raw JSON, if any): dataset, models, fovea_epoch" in printed
    text = out.read_text()
    assert "`python bench/run_all.py --quick --only heatmap`" in text
    assert "| Heatmap decode | 1 s | 5 ms | 200x |" in text
    assert (f"| {bench_fovea_epoch.MEASURE} | 11.5 s | 13.3 s | 0.9x | <= 14 s | yes | plain 561 MiB (RSS peak) | "
            "80 train + 20 val images; from a separate run on 2026-12-01 23:19 UTC (run_all.py --only fovea_epoch) |"
            in text)
    assert "| Stage 1 | a | b |" in text and "from a separate run on 2026-12-01 23:22 UTC with --quick" in text
    assert text.index("Heatmap decode") < text.index(bench_fovea_epoch.MEASURE) < text.index("| Stage 1 |")
    assert "fovea_epoch 300.0 s (earlier run)" in text
    durations = json.loads((raw / run_all.DURATIONS).read_text())
    assert durations["heatmap"]["quick"]["seconds"] >= 0 and "date" in durations["heatmap"]["quick"]


def test_run_bench_replaces_raw_json_only_on_success(tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    good, bad = tmp_path / "good.py", tmp_path / "bad.py"
    good.write_text("import json, sys\nopen(sys.argv[-1], 'w').write(json.dumps({'rows': [], 'notes': ['n']}))\n")
    bad.write_text("import sys\nsys.exit('boom: no data')\n")
    res = run_all.run_bench(str(good), [], raw, "x", 60, {"quick": True})
    stored = json.loads((raw / "x.json").read_text())
    assert stored["notes"] == ["n"] and stored["quick"] is True and "date" in stored and "seconds" in stored
    assert res["notes"] == ["n"] and not (raw / "x.new.json").exists()
    res = run_all.run_bench(str(bad), [], raw, "x", 60)
    assert res["failed"] and res["rows"][0]["measure"] == "x (FAILED)" and "boom: no data" in res["rows"][0]["note"]
    assert json.loads((raw / "x.json").read_text()) == stored


# --- the four benches' rows from hand-made measurements ---

def test_fovea_epoch_rows_name_ratio_target_and_markdown_line():
    parts = {"validation": 1.0, "checkpoints": 0.1, "json_csv": 0.0}
    mem = {"plain": 500.0, "kit": 50.0, "old": 60.0}
    rows = bench_fovea_epoch.epoch_rows([10.0, 12.0], [13.0, 13.0], [14.0, 16.0], mem, parts, 80, 20, 3)
    epoch, reflect = rows
    assert epoch["measure"] == "Fovea CPU epoch (train + validation + checkpoints)"
    assert epoch["ratio"] == pytest.approx(11.0 / 13.0) and epoch["met"] is True
    assert epoch["memory"] == "plain 500 MiB (RSS peak); kit 50 MiB (RSS peak)"
    assert "steps 11.9 s + validation AED 1.00 s" in epoch["note"]
    assert reflect["ratio"] == pytest.approx(15.0 / 11.0) and reflect["met"] is None
    assert bench_fovea_epoch.epoch_rows([10.0], [15.0], [14.0], mem, parts, 80, 20, 2)[0]["met"] is False
    assert bench_fovea_epoch.epoch_rows([1.0], [2.0], [1.0], mem, parts, 8, 2, 2)[0]["met"] is None
    result = {"rows": rows, "machine": {"cpu": "c", "cores": 2, "OMP_NUM_THREADS": "2"},
              "load_avg_start": [1.0], "load_avg_end": [1.0]}
    md = bench_fovea_epoch.markdown(result, 3)
    assert md.startswith("# Fovea CPU epoch\n\n`python bench/bench_fovea_epoch.py --epochs 3`, ")
    assert ("| Fovea CPU epoch (train + validation + checkpoints) | 11.0 s (plain loop, same model and batches) | "
            "13.0 s (train_fold) | 0.85x | <= 14 s per 80-image epoch | yes | plain 500 MiB (RSS peak); kit 50 MiB "
            "(RSS peak) | ") in md
    assert md.endswith(f"- {bench_fovea_epoch.NOTES[-1]}\n")


def test_disc_locate_row_counts_misses_against_the_nominal_radius():
    r = bench_disc_locate.NOMINAL_RADIUS_PX
    old = pd.DataFrame({"err": [10.0, r + 1], "t": [0.2, 0.4], "side": ["left", "right"], "truth": ["left", "left"]})
    new = pd.DataFrame({"err": [10.0, 20.0], "t": [0.1, 0.1], "side": ["left", "left"], "truth": ["left", "left"]})
    m = {"old": old, "new": new, "decode": [0.1, 0.3], "width": 4288, "memory_mb": {"old": 5.0, "new": 14.0}}
    (row,) = bench_disc_locate.result_rows(m)
    assert row["measure"].startswith("Stage 1 disc location per IDRiD photo (2 photos, 4288 px wide)")
    assert row["original"].startswith("0.300 s; 1 / 2 off by more than a disc radius")
    assert row["original"].endswith("eye side 1 / 2")
    assert row["kit"] == "0.100 s; 0 / 2 off by more than a disc radius, median / max error 15 / 20 px; eye side 2 / 2"
    assert row["ratio"] == pytest.approx(3.0) and row["met"] is True and row["target"] == "0 of 2 off by more than a disc radius"
    assert row["memory"] == "before 5.0 MiB (tracemalloc); kit 14 MiB (tracemalloc) (first photo)"
    m["new"] = old
    assert bench_disc_locate.result_rows(m)[0]["met"] is False


def test_synth_realism_rows_compare_with_real_photos_when_present():
    cols = {c: [0.0, 0.0] for c in bench_synth_realism.REALISM_ROWS + bench_synth_realism.PROBE_ROWS}
    old = pd.DataFrame({**cols, "disc_contrast": [0.7, 0.7], "pallor": [0.04, 0.04], "otsu_cup_dice": [0.7, 0.8]})
    new = pd.DataFrame({**cols, "disc_contrast": [0.4, 0.4], "pallor": [0.01, 0.01], "otsu_cup_dice": [0.4, 0.4]})
    real = pd.DataFrame({"disc_contrast": [0.3], "pallor": [0.05], "dark_share": [0.0]})
    render = {"old_cpu_s": 0.2, "new_cpu_s": 0.25, "old_mb": 50.0, "new_mb": 54.0, "same_fovea": 2}
    rows = {r["measure"]: r for r in bench_synth_realism.result_rows(real, old, new, "abc", render)}
    contrast = rows["Synthetic disc realism: disc / surround contrast"]
    assert contrast["original"] == "0.70 (first renderer, abc)" and contrast["kit"] == "0.40 (current renderer)"
    assert contrast["target"] == "closer to real IDRiD (0.30)" and contrast["met"] is True
    assert rows["Synthetic disc realism: central pallor, r < 0.35 R vs 0.6-0.9 R (cup/rim proxy)"]["met"] is False
    assert rows["Synthetic disc realism: naive cup Dice: Otsu inside the true disc"]["met"] is True
    timing = rows["Synthetic photo render, CPU s per full-size photo (2992x2000 / 1956x1934)"]
    assert timing["ratio"] == pytest.approx(0.8) and "identical for 2/2 seeds" in timing["note"]
    absent = bench_synth_realism.result_rows(None, old, new, "abc", render)[0]
    assert absent["met"] is None and absent["target"] == "closer to real IDRiD (absent)"


# --- tiny real runs of the benches' CLIs (sizes far below the defaults; nothing timed is asserted) ---

@pytest.mark.slow
def test_fovea_epoch_cli_on_tiny_data_writes_the_row_and_markdown(tmp_path):
    from fovea_fixtures import tiny_synth

    data = tiny_synth(tmp_path / "synth", 10, 0, seed=0)
    md, js = tmp_path / "epoch.md", tmp_path / "epoch.json"
    assert bench_fovea_epoch.main(["--data", str(data), "--epochs", "2", "--set", "model.width=4",
                                   "--run-dir", str(tmp_path / "run"), "--md", str(md), "--json", str(js)]) == 0
    res = json.loads(js.read_text())
    assert res["rows"][0]["measure"] == bench_fovea_epoch.MEASURE and res["rows"][0]["met"] is None   # 8 images
    assert "8 train + 2 val images" in res["rows"][0]["note"] and "model.width=4" in res["rows"][0]["note"]
    assert len(res["kit_epochs_s"]) == 1 and len(res["plain_epochs_s"]) == 1
    assert "| Measure | Original | Kit | Ratio | Target | Met | Memory | Note |" in md.read_text()


def test_disc_locate_cli_on_two_idrid_photos(idrid, tmp_path):
    md, js = tmp_path / "disc.md", tmp_path / "disc.json"
    assert bench_disc_locate.main(["--data", str(idrid), "--limit", "2", "--out", str(md), "--json", str(js)]) == 0
    (row,) = json.loads(js.read_text())["rows"]
    assert "(2 photos, 4288 px wide)" in row["measure"] and isinstance(row["met"], bool)
    assert md.read_text().startswith("# Stage 1: optic-disc localisation")


def test_bench_cores_rows_are_the_measured_rates_and_their_projections():
    arm = lambda s, c: {"per_unit_s": s, "cores": c, "last_aed": 0.03}     # noqa: E731
    res = {"fovea": {"1": arm(15.0, 1.3), "2": arm(9.0, 1.9)}, "seg": {"1": arm(0.8, 1.3), "2": arm(0.64, 1.7)}}
    rows = {r["measure"].split(": ", 1)[1]: r for r in bench_cores.rows(res) if r["measure"].startswith("Fovea")}
    assert rows["seconds per epoch"]["ratio"] == pytest.approx(15 / 9)
    assert rows["cores busy (of 2)"]["met"] is True and rows["cores busy (of 2)"]["kit"] == "1.90"
    proj = rows["the recipe's 130 epochs (projected)"]
    assert (proj["original"], proj["kit"], proj["met"]) == ("32.5 min", "19.5 min", True)   # 130 x 15 s, 130 x 9 s
    seg = [r for r in bench_cores.rows(res) if r["measure"].startswith("Seg")]
    assert seg[1]["met"] is False
    assert seg[0]["measure"].endswith("seconds per crop") and seg[0]["ratio"] == pytest.approx((0.8 / 4) / (0.64 / 8))
    # before: 1500 iterations of 4 crops x 0.8 s; the recipe: 750 of 8 crops x 0.64 s (issue 20.3)
    assert "(1500 iterations of 4 / 750 of 8)" in seg[2]["measure"]
    assert seg[3]["kit"] == "16.0 min" and "1500 iterations of 8" in seg[3]["measure"]      # 1500 x 0.64 s
    assert (seg[2]["original"], seg[2]["kit"], seg[2]["met"]) == ("20.0 min", "8.0 min", True)
    assert seg[2]["ratio"] == pytest.approx(2.5)
    only_seg = bench_cores.rows({"fovea": {}, "seg": res["seg"]})
    assert [r["measure"][:3] for r in only_seg] == ["Seg"] * 4


def test_bench_cores_records_the_measurement_not_where_its_files_went():
    a = bench_cores.build_parser().parse_args(["--data", "S", "--only", "seg", "--iters", "60", "--md", "/x/c.md",
                                               "--json", "/x/c.json"])
    assert bench_cores.command(a) == "python bench/bench_cores.py --data S --only seg --epochs 4 --iters 60"
    assert bench_cores.command(bench_cores.build_parser().parse_args([])) == \
        "python bench/bench_cores.py --epochs 4 --iters 80"


def test_bench_fovea_dark_copies_and_table():
    """The four copies on a hand-made photo (a field of two greys on black), the summary of per-photo
    rows, the table, and the command without the output paths."""
    img = np.zeros((4, 4, 3), np.uint8)
    img[1:3, 1:3] = 200
    img[1, 1] = 100                                           # the field: 100 and 3 x 200, mean 175
    d = bench_fovea_dark
    assert d.darkened(img, "as_is") is img
    np.testing.assert_array_equal(d.darkened(img, "dark_0.5")[1:3, 1:3, 0], [[50, 100], [100, 100]])
    np.testing.assert_array_equal(d.darkened(img, "gamma_2")[1, 1], [39] * 3)        # 255 x (100/255)^2 = 39.2
    haze = d.darkened(img, "haze_0.5")
    np.testing.assert_array_equal(haze[1, 1], [138] * 3)                               # (100 + 175) / 2 = 137.5
    np.testing.assert_array_equal(haze[2, 2], [188] * 3)                               # (200 + 175) / 2 = 187.5
    assert haze[0, 0].sum() == 0                                                     # the surround stays black
    with pytest.raises(ValueError, match="unknown variant"):
        d.darkened(img, "dark")
    rows = d.summarise({"as_is": [{"id": "a", "ed": 0.01, "source": "network", "flags": ""},
                                  {"id": "b", "ed": 0.03, "source": "guard", "flags": "guarded"}]})
    assert rows[0]["aed"] == pytest.approx(0.02) and rows[0]["max"] == 0.03 and rows[0]["flagged"] == 1
    assert rows[0]["sources"] == {"guard": 1, "network": 1} and rows[0]["worst"] == "b (guard; guarded)"
    a = argparse.Namespace(run="R", images="I", gt="G", which="auto", variants=",".join(d.VARIANTS), out_md="x.md",
                           json=None)
    assert d.command(a) == "python bench/bench_fovea_dark.py --run R --images I --gt G"
    md = d.markdown({"command": d.command(a), "run": "R", "config": "c", "which": "auto", "folds": [1],
                     "machine": {"cpu": "x"}, "rows": rows, "errors": {(1, "gamma_2"): "error: no eye side"}})
    assert "| as_is | 2 | 0.0200 | 0.0200 / 0.0300 | 1 | guard 1, network 1 | b (guard; guarded) |" in md
    assert "Fold 1, gamma_2: error: no eye side" in md
