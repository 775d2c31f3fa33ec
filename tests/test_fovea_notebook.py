"""notebooks/fovea_localization.ipynb runs end to end on tiny synthetic data on the CPU
(parametrised through its environment variables), and is committed without outputs."""
from __future__ import annotations

from pathlib import Path

import nbformat
import pytest

REPO = Path(__file__).resolve().parents[1]
NOTEBOOK = REPO / "notebooks" / "fovea_localization.ipynb"


def test_notebook_is_stripped():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None


def test_notebook_runs_on_tiny_synthetic_data(tmp_path, monkeypatch):
    nbclient = pytest.importorskip("nbclient")
    from gamma_kit.synth import generate

    data = tmp_path / "data"
    generate(data, 6, 2, seed=11, sizes=[(748, 500), (489, 484)], progress=False)
    env = {"GAMMA_DATA": str(data), "FOVEA_WORK_DIR": str(tmp_path / "work"),
           "FOVEA_CONFIG": str(REPO / "configs" / "fovea" / "unet_heatmap_cpu.yml"),
           "FOVEA_SET": "model.width=4 train.epochs=1 train.batch_size=4 train.n_folds=3 train.device=cpu",
           "FOVEA_FOLDS": "1,2", "FOVEA_DOWNLOAD": "0"}
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbclient.NotebookClient(nb, timeout=600, kernel_name="python3",
                            resources={"metadata": {"path": str(REPO)}}).execute()
    sub = tmp_path / "work" / "submission_fovea.csv"
    assert sub.read_text().splitlines()[0] == "data,Fovea_X,Fovea_Y"
    assert len(sub.read_text().splitlines()) == 3
    assert (tmp_path / "work" / "figures" / "training_curves.png").is_file()
    assert (tmp_path / "work" / "runs" / "unet_heatmap_cpu" / "fold2" / "best.pdparams").is_file()
