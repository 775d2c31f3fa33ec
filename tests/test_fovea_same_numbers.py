"""Issue 18: splitting fovea training into trainer / run_dir / parallel / checkpoints changed no number.

Two epochs of a tiny CPU config (width-4 U-Net, cosine schedule, disc-anchored ROI with a learned
offset, weight averaging) on tiny synthetic data with a fixed seed are trained twice: by the code of
``REFERENCE_COMMIT`` (extracted from this checkout's git history into a temporary folder) and by the
code of this checkout, each in its own subprocess with one CPU thread. The per-epoch losses and
learning rates, the validation AEDs, every tensor of the best, last and averaged weights, and the
predicted positions of the test photos (flip TTA) must be exactly equal. Skipped when the checkout
has no git history or lacks the commit (e.g. an installed wheel or a shallow clone).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.slow   # the fast loop: python -m pytest -q -m "not slow"

import reference_code
from fovea_fixtures import tiny_synth

REPO = reference_code.REPO
#: HEAD when the fovea trainer split began (issue 18); the fovea tests pass there (107 passed).
#: The numbers of this checkout must equal the numbers of that code.
REFERENCE_COMMIT = "4d3f62a1d03d8ab9ba566e1408bcb8744fd1819a"
# the ROI rule the CPU config had at the reference commit (since issue 19.3 it is auto): same keys in both
TINY = ["model.width=4", "train.batch_size=4", "train.device=cpu", "train.epochs=2", "roi.anchor=disc",
        "roi.max_from_prior=250"]

# Runs under either version of the kit: trains fold 1, predicts the test photos, dumps the numbers.
_TRAIN_AND_DUMP = """
import json, sys
from pathlib import Path
import numpy as np
import gamma_kit
import paddle
from gamma_kit.data import load_fovea_split
from gamma_kit.fovea.config import load_config
from gamma_kit.fovea.predict import predict
from gamma_kit.fovea.train import load_training_data, train_fold
from gamma_kit.resources import config_path
try:
    from gamma_kit.fovea.checkpoints import find_checkpoints
except ImportError:                     # the reference commit kept it in predict
    from gamma_kit.fovea.predict import find_checkpoints
data_root, run, out = map(Path, sys.argv[1:4])
cfg = load_config(config_path("fovea/unet_heatmap_cpu.yml"), sys.argv[4:])
m = train_fold(cfg, 1, load_training_data(data_root), run, progress=False)
fold = run / "fold1"
arrays = {}
for which in ("best", "last", "averaged"):
    state = paddle.load(str(find_checkpoints([fold], which)[0]))
    arrays.update({f"{which}/{k}": np.asarray(v.numpy() if hasattr(v, "numpy") else v) for k, v in state.items()})
np.savez(out / "weights.npz", **arrays)
test = load_fovea_split(data_root, "testing")
p = predict([fold], test.images, out / "pred.csv", device="cpu", progress=False, flip=True)
(out / "metrics.json").write_text(json.dumps({k: m[k] for k in ("history", "best_aed", "best_epoch",
                                                                   "last_aed", "averaged_aed")}))
"""


@pytest.fixture(scope="module")
def reference_tree(tmp_path_factory) -> Path:
    return reference_code.reference_tree(tmp_path_factory, REFERENCE_COMMIT)


def _run(code_root: Path, data: Path, work: Path) -> dict:
    """Train + predict with the kit found at ``code_root``; returns the numbers it dumped."""
    work.mkdir()
    reference_code.run_with(code_root, ["-c", _TRAIN_AND_DUMP, str(data), str(work / "run"), str(work), *TINY], work)
    with np.load(work / "weights.npz") as z:
        weights = {k: z[k] for k in z.files}
    return {"metrics": json.loads((work / "metrics.json").read_text()), "weights": weights,
            "pred": (work / "pred.csv").read_text()}


def test_training_and_prediction_numbers_equal_the_reference_commit(reference_tree, tmp_path):
    data = tiny_synth(tmp_path / "data", 10, 2, seed=11)
    before = _run(reference_tree, data, tmp_path / "before")
    after = _run(REPO, data, tmp_path / "after")
    hb, ha = before["metrics"]["history"], after["metrics"]["history"]
    assert len(ha) == 2
    for key in ("epoch", "train_loss", "val_aed", "lr"):
        assert [r[key] for r in ha] == [r[key] for r in hb], key            # exact, not approximate
    for key in ("best_aed", "best_epoch", "last_aed", "averaged_aed"):
        assert after["metrics"][key] == before["metrics"][key], key
    assert sorted(after["weights"]) == sorted(before["weights"])
    for k, v in before["weights"].items():
        assert after["weights"][k].dtype == v.dtype and np.array_equal(after["weights"][k], v), k
    assert after["pred"] == before["pred"]
