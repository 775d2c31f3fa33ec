"""notebooks/fovea_localization.ipynb runs end to end on tiny synthetic data on the CPU (parametrised
through its environment variables), started in notebooks/ as Jupyter and AI Studio start it: the config
named as shipped, the data found through $GAMMA_DATA, every output in $GAMMA_WORK. Committed without outputs."""
from __future__ import annotations

from notebook_runner import REPO, assert_stripped_and_thin, execute
import pytest

pytestmark = pytest.mark.slow   # the fast loop: python -m pytest -q -m "not slow"

NOTEBOOK = REPO / "notebooks" / "fovea_localization.ipynb"


def test_notebook_is_stripped_and_thin():
    assert_stripped_and_thin(NOTEBOOK)


def test_notebook_runs_from_notebooks_folder(tmp_path, monkeypatch):
    from gamma_kit.synth import generate

    data = tmp_path / "data"
    generate(data, 6, 2, seed=11, sizes=[(748, 500), (489, 484)], progress=False)
    env = {"GAMMA_DATA": str(data), "GAMMA_WORK": str(tmp_path / "work"),
           "FOVEA_CONFIG": "unet_heatmap_cpu.yml",
           "FOVEA_SET": "model.width=4 train.epochs=1 train.batch_size=4 train.n_folds=3 train.device=cpu",
           "FOVEA_FOLDS": "1,2"}
    execute(NOTEBOOK, env, monkeypatch)
    work = tmp_path / "work" / "fovea"
    sub = work / "submission_fovea.csv"
    assert sub.read_text().splitlines()[0] == "data,Fovea_X,Fovea_Y"
    assert len(sub.read_text().splitlines()) == 3
    assert (work / "figures" / "training_curves.png").is_file()
    assert (work / "runs" / "unet_heatmap_cpu" / "fold2" / "best.pdparams").is_file()
    assert not (tmp_path / "work" / "synth").exists()       # the challenge-layout data was used, not synthetic
    # the static export run by Paddle Inference gives the dynamic models' positions
    import pandas as pd

    static = pd.read_csv(work / "submission_fovea_exported.csv", dtype={"data": str})
    dynamic = pd.read_csv(sub, dtype={"data": str})
    assert list(static["data"]) == list(dynamic["data"])
    assert (static[["Fovea_X", "Fovea_Y"]] - dynamic[["Fovea_X", "Fovea_Y"]]).abs().max().max() < 1e-3
