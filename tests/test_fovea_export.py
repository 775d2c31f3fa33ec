"""Fovea static export + Paddle Inference: the exported folds give the dynamic path's positions
(CPU, oneDNN off), broken or partial export folders get one line naming the file, and an export
never lands on its inputs or an earlier export."""
from __future__ import annotations

import argparse
import json

import numpy as np
import pytest

import gamma_kit  # noqa: F401
from gamma_kit.data import load_fovea_split
from gamma_kit.fovea.checkpoints import MANIFEST_NAME, load_checkpoint, load_exported
from gamma_kit.fovea.export import add_export_cli, export_static
from gamma_kit.fovea.inference import predict_heatmaps
from gamma_kit.fovea.predict import predict

from fovea_fixtures import random_run, tiny_synth


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    return tiny_synth(tmp_path_factory.mktemp("fovea_exp") / "data", 2, 4, seed=7)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A run folder with two random tiny fold models, and its export."""
    base = tmp_path_factory.mktemp("fovea_exp_run")
    run, _ = random_run(base / "run", seeds=(21, 22))
    return run, export_static(run, base / "export")


def test_export_layout(exported):
    run, out = exported
    manifest = json.loads((out / MANIFEST_NAME).read_text())
    assert [m["name"] for m in manifest["models"]] == ["fold1", "fold2"]
    for m in manifest["models"]:
        assert m["input_shape"] == [None, 3, 100, 152]
        assert set(m["files"]) == {"model.json", "model.pdiparams", "config.yml"}
        for f, size in m["files"].items():
            assert (out / m["name"] / f).stat().st_size == size > 0
    assert not [p for p in out.rglob("*") if ".tmp" in p.name]


def test_exported_heatmaps_equal_dynamic(exported):
    run, out = exported
    models, cfgs, _ = load_exported(out)
    dyn, _ = load_checkpoint(run / "fold1")
    crops = np.random.default_rng(1).uniform(0, 255, (3, 3, 100, 152)).astype(np.float32)
    for flip in (False, True):
        np.testing.assert_allclose(predict_heatmaps(models[0], crops, batch_size=2, flip=flip),
                                   predict_heatmaps(dyn, crops, batch_size=2, flip=flip), rtol=1e-5, atol=1e-4)
    assert cfgs[0]["codec"] == load_checkpoint(run / "fold1")[1]["codec"]


@pytest.mark.slow
@pytest.mark.parametrize("ensemble,flip", [("coords", False), ("heatmap", True)])
def test_predict_exported_gives_the_dynamic_positions(synth, exported, tmp_path, ensemble, flip):
    run, out = exported
    test = load_fovea_split(synth, "testing")
    dyn = predict([run], test.images, tmp_path / "dyn.csv", ensemble=ensemble, flip=flip, device="cpu",
                  progress=False)
    static = predict(None, test.images, tmp_path / "static.csv", ensemble=ensemble, flip=flip, device="cpu",
                     progress=False, exported=out)
    assert static["n_models"] == 2
    # Paddle Inference and the dynamic graph sum float32 in other orders (by CPU kernel set): up to
    # 6e-6 px apart on this machine; 1e-3 px is still far below any decode step
    np.testing.assert_allclose(static["predictions"].to_numpy(), dyn["predictions"].to_numpy(), rtol=0, atol=1e-3)
    assert list(static["predictions"].index) == list(dyn["predictions"].index)


def test_broken_export_folders_name_the_file(exported, tmp_path):
    import shutil

    _, out = exported

    def copy(name):
        d = tmp_path / name
        shutil.copytree(out, d)
        return d

    d = copy("no_manifest")
    (d / MANIFEST_NAME).unlink()
    with pytest.raises(FileNotFoundError, match=r"no_manifest.export\.json not found"):
        load_exported(d)
    d = copy("bad_manifest")
    (d / MANIFEST_NAME).write_text("{")
    with pytest.raises(ValueError, match=r"bad_manifest.export\.json: broken"):
        load_exported(d)
    d = copy("truncated")
    p = d / "fold2" / "model.pdiparams"
    p.write_bytes(p.read_bytes()[:100])
    with pytest.raises(ValueError, match=r"fold2.model\.pdiparams is 100 bytes, the export wrote"):
        load_exported(d)
    d = copy("missing")
    (d / "fold1" / "model.json").unlink()
    with pytest.raises(FileNotFoundError, match=r"fold1.model\.json: missing"):
        load_exported(d)
    with pytest.raises(FileNotFoundError, match="export folder not found"):
        load_exported(tmp_path / "nothing")


def test_export_refuses_inputs_and_earlier_exports(exported, tmp_path):
    run, out = exported
    with pytest.raises(ValueError, match="lies inside, the input"):
        export_static(run, run / "export")
    before = (out / MANIFEST_NAME).read_bytes()
    with pytest.raises(FileExistsError, match="not empty"):
        export_static(run, out)
    assert (out / MANIFEST_NAME).read_bytes() == before
    (tmp_path / "empty.pdparams").write_bytes(b"")
    (tmp_path / "config.yml").write_text((run / "fold1" / "config.yml").read_text())
    with pytest.raises(ValueError, match=r"empty\.pdparams is empty"):
        export_static(tmp_path / "empty.pdparams", tmp_path / "x")
    assert not (tmp_path / "x").exists()


@pytest.mark.slow
def test_export_cli(exported, tmp_path, capsys):
    run, _ = exported
    ap = argparse.ArgumentParser()
    add_export_cli(ap.add_subparsers(dest="command"))
    args = ap.parse_args(["export", "--checkpoints", str(run / "fold2"), "--out", str(tmp_path / "e")])
    assert args.run(args) == 0
    assert "exported 1 model(s)" in capsys.readouterr().out
    assert [m["name"] for m in json.loads((tmp_path / "e" / MANIFEST_NAME).read_text())["models"]] == ["fold2"]
