"""notebooks/fovea_localization.ipynb runs end to end on tiny synthetic data on the CPU
(parametrised through its environment variables), and is committed without outputs."""
from __future__ import annotations

from notebook_runner import REPO, assert_stripped_and_thin, execute

NOTEBOOK = REPO / "notebooks" / "fovea_localization.ipynb"


def test_notebook_is_stripped_and_thin():
    assert_stripped_and_thin(NOTEBOOK)


def test_notebook_runs_on_tiny_synthetic_data(tmp_path, monkeypatch):
    from gamma_kit.synth import generate

    data = tmp_path / "data"
    generate(data, 6, 2, seed=11, sizes=[(748, 500), (489, 484)], progress=False)
    env = {"GAMMA_DATA": str(data), "FOVEA_WORK_DIR": str(tmp_path / "work"),
           "FOVEA_CONFIG": str(REPO / "configs" / "fovea" / "unet_heatmap_cpu.yml"),
           "FOVEA_SET": "model.width=4 train.epochs=1 train.batch_size=4 train.n_folds=3 train.device=cpu",
           "FOVEA_FOLDS": "1,2", "FOVEA_DOWNLOAD": "0"}
    execute(NOTEBOOK, env, monkeypatch)
    sub = tmp_path / "work" / "submission_fovea.csv"
    assert sub.read_text().splitlines()[0] == "data,Fovea_X,Fovea_Y"
    assert len(sub.read_text().splitlines()) == 3
    assert (tmp_path / "work" / "figures" / "training_curves.png").is_file()
    assert (tmp_path / "work" / "runs" / "unet_heatmap_cpu" / "fold2" / "best.pdparams").is_file()
    # the static export run by Paddle Inference gives the dynamic models' positions
    import pandas as pd

    static = pd.read_csv(tmp_path / "work" / "submission_fovea_exported.csv", dtype={"data": str})
    dynamic = pd.read_csv(sub, dtype={"data": str})
    assert list(static["data"]) == list(dynamic["data"])
    assert (static[["Fovea_X", "Fovea_Y"]] - dynamic[["Fovea_X", "Fovea_Y"]]).abs().max().max() < 1e-6
