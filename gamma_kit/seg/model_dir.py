"""A segmentation model folder on disk: its files, how it is written and read, and whether it is
a two-stage (crop-trained) model. The one owner of that idea; ``training`` writes through it,
``inference``, ``export`` and ``tools/`` read through it. Paddle is imported only to load weights.

A *model folder* holds

- ``model.pdparams`` (``WEIGHTS_NAME``): the weights;
- ``model.yml`` (``MODEL_CONFIG_NAME``): the resolved training config (``str(cfg)``), in the folder
  or in the run folder above it;
- ``roi.json`` (``ROI_NAME``), two-stage models only: the ``RoiSettings`` of the crops it was trained
  on, in the folder or in the run folder above it.

A training run folder (``save_dir``) is accepted for its ``best_model/`` or ``last_model/``
(``resolve_model_dir``). ``write_model_dirs`` writes ``model.yml`` (and ``roi.json``) into the run
folder, ``last_model/`` and ``best_model/`` at the end of training; ``roi.json`` is a copy of the
``"roi"`` object of ``crops.json`` (``CROPS_NAME``), which ``prepare --roi`` writes into the
training ``dataset_root`` (``read_crop_roi``).

Two-stage or whole-image (``model_roi``; ``seg predict``, ``seg export``, ``tools/`` follow it):

- ``roi.json`` in the folder or the run folder above: two-stage. It must hold exactly the keys
  ``RoiSettings.to_json`` writes (``version`` and the settings); unknown or missing keys are refused
  in one line naming the file and the keys, never replaced by defaults.
- No ``roi.json``, but the folder says it was trained on crops: refused in one line before any
  work. The folder says so when the ``train_dataset.dataset_root`` of its ``model.yml`` (the path as
  the config gave it, relative to the working directory as the configs' paths are) holds a
  ``crops.json`` with a ``"roi"`` object that is not newer than the weights (so the crops were
  there when the model was trained; the same test training used to decide to write ``roi.json``).
  A ``crops.json`` prepared there after training says nothing about this model.
- Otherwise: whole-image.
- ``whole_image=True`` (``seg predict --whole-image``) forces the whole-image path for a folder
  without ``roi.json``; with a ``roi.json`` there it is refused (the model is two-stage).

An export folder (``seg.export``) follows the same rule with its own evidence: ``export_static``
copies ``roi.json`` beside the graph and writes ``two_stage: true`` into ``deploy.yaml``;
``export.StaticPredictor`` refuses such an export without ``roi.json`` (``folder_roi``).
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

from gamma_kit.safety import atomic_copy, atomic_write_text

__all__ = ["MODEL_CONFIG_NAME", "WEIGHTS_NAME", "ROI_NAME", "CROPS_NAME", "RoiSettings", "resolve_model_dir",
           "config_path", "load_paddle_file", "check_state_dict", "load_checked_weights", "read_roi", "roi_path",
           "write_roi", "read_crop_roi", "write_model_dirs", "trained_on_crops", "folder_roi", "model_roi"]

MODEL_CONFIG_NAME = "model.yml"
WEIGHTS_NAME = "model.pdparams"
ROI_NAME = "roi.json"
CROPS_NAME = "crops.json"   # prepare --roi, in the prepared folder: {"roi": settings, "crops": {id: box...}}


@dataclass(frozen=True)
class RoiSettings:
    """How ``prepare --roi`` cuts disc-centred training crops; saved as ``crops.json["roi"]`` and,
    after training, as ``roi.json`` beside the weights, where the predictor reads it.

    The window side is ``side`` source px when given, else ``factor`` x the disc diameter
    (the ground-truth disc's larger bounding-box side at prepare time; stage 1's estimate at
    prediction time). Each training crop is centred on the ground-truth disc centre plus a
    uniform random offset of up to ``jitter`` x the side per axis (so stage 2 learns
    off-centre discs, as stage 1 delivers them), with its diameter multiplied by a random
    factor in ``[1 - scale_jitter, 1 + scale_jitter]`` (stage 1's diameter is an estimate).
    ``copies`` crops are written per photo; ``size`` is the crop's pixel size (the config's
    Resize then brings it to the network size).
    """

    factor: float = 2.0
    side: int | None = None
    size: int = 512
    jitter: float = 0.125
    scale_jitter: float = 0.15
    copies: int = 1
    seed: int = 0

    def __post_init__(self):
        if self.side is None and not self.factor > 0:
            raise ValueError(f"roi factor must be > 0, got {self.factor}")
        if self.side is not None and self.side < 8:
            raise ValueError(f"roi side must be at least 8 source px, got {self.side}")
        if self.size < 16:
            raise ValueError(f"roi size must be at least 16 px, got {self.size}")
        if not 0 <= self.jitter < 0.5 or not 0 <= self.scale_jitter < 1:
            raise ValueError(f"roi jitter must be in [0, 0.5) and scale jitter in [0, 1), "
                             f"got {self.jitter}, {self.scale_jitter}")
        if self.copies < 1:
            raise ValueError(f"roi copies must be >= 1, got {self.copies}")

    def to_json(self) -> dict:
        return {"version": 1, **asdict(self)}

    @classmethod
    def from_json(cls, d: dict, where: str = "roi settings") -> "RoiSettings":
        """The settings ``to_json`` wrote; ``where`` names the file in errors. Exactly its keys:
        an unknown or a missing key is a ValueError naming them (a default in place of what the
        model was trained with would crop other windows without a word)."""
        if not isinstance(d, dict):
            raise ValueError(f"{where}: expected a JSON object of ROI settings, got {type(d).__name__}")
        expected = set(cls().to_json())
        unknown, missing = sorted(set(d) - expected), sorted(expected - set(d))
        if unknown or missing:
            what = ([f"unknown key(s) {unknown}"] if unknown else []) + ([f"missing key(s) {missing}"] if missing else [])
            raise ValueError(f"{where}: {' and '.join(what)}; ROI settings hold exactly {sorted(expected)}, as "
                             "prepare --roi writes them")
        if d["version"] != 1:
            raise ValueError(f"{where}: ROI settings version {d['version']!r}; this kit reads version 1")
        try:
            return cls(**{k: v for k, v in d.items() if k != "version"})
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{where}: bad ROI settings {d!r} ({exc})") from exc

    def window_side(self, diameter: float | None) -> float:
        """Window side in source px for a disc of ``diameter`` source px."""
        if self.side is not None:
            return float(self.side)
        if diameter is None or not diameter > 0:
            raise ValueError("a ROI crop by factor needs a disc diameter")
        return self.factor * float(diameter)

    def window_problem(self, diameter: float | None, image_size: tuple[int, int]) -> str | None:
        """Why the window these settings give for a disc of ``diameter`` source px is unusable on
        a photo of ``image_size`` = (w, h) (``crop.window_problem``: the rule on the window before
        the random scale jitter); None when it is fine."""
        from gamma_kit.crop import window_problem

        return window_problem(self.window_side(diameter), image_size, self.size, diameter)


# --------------------------------------------------------------------------- locating the files
def resolve_model_dir(model_dir: str | os.PathLike) -> Path:
    """The folder holding ``model.pdparams`` + ``model.yml``: ``model_dir`` itself, or its
    ``best_model/`` or ``last_model/`` (a training run folder). Raises FileNotFoundError otherwise."""
    d = Path(model_dir)
    if not d.is_dir():
        raise FileNotFoundError(f"model directory {d} does not exist")
    for cand in (d, d / "best_model", d / "last_model"):
        if (cand / WEIGHTS_NAME).is_file():
            if not (cand / MODEL_CONFIG_NAME).is_file() and not (cand.parent / MODEL_CONFIG_NAME).is_file():
                raise FileNotFoundError(f"{cand} has {WEIGHTS_NAME} but no {MODEL_CONFIG_NAME} (the resolved "
                                        "training config, written by gamma_kit's train) here or in its parent")
            return cand
    raise FileNotFoundError(f"{d} holds no trained weights: expected {WEIGHTS_NAME} in it or in its "
                            f"best_model/ or last_model/ (train with `python -m gamma_kit.seg train`)")


def config_path(model_dir: Path) -> Path:
    """``model.yml`` of a resolved model folder: in it, else in the run folder above it."""
    own = model_dir / MODEL_CONFIG_NAME
    return own if own.is_file() else model_dir.parent / MODEL_CONFIG_NAME


# --------------------------------------------------------------------------- weights
def load_paddle_file(path: Path, hint: str = "retrain or use another run"):
    """``paddle.load(path)``, with one ``ValueError`` line naming ``path`` for an empty (an
    interrupted save) or truncated/corrupt file instead of Paddle's EOFError/pickle traceback."""
    import paddle

    path = Path(path)
    if path.stat().st_size == 0:
        raise ValueError(f"{path}: empty file (0 bytes; an interrupted save?): {hint}")
    try:
        return paddle.load(str(path))
    except Exception as exc:  # paddle raises several types for a corrupt file
        raise ValueError(f"{path}: cannot be loaded as Paddle weights (truncated or corrupt: "
                         f"{type(exc).__name__}); {hint}") from exc


def check_state_dict(state: dict, model, weights: Path, cfg_path: Path) -> None:
    """Refuse weights that do not fit ``model``: missing parameters or other shapes (one line)."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    wrong = [(k, list(state[k].shape), list(own[k].shape)) for k in own
             if k in state and list(state[k].shape) != list(own[k].shape)]
    if missing or wrong:
        what = []
        if missing:
            what.append(f"{len(missing)} parameter(s) missing, e.g. {missing[:3]}")
        if wrong:
            k, got, want = wrong[0]
            what.append(f"{len(wrong)} of another shape, e.g. {k} {got} (model needs {want})")
        raise ValueError(f"{weights} does not match the model in {cfg_path}: {'; '.join(what)} "
                         "(weights from another config?)")


def load_checked_weights(model, weights: str | os.PathLike, cfg_path: str | os.PathLike) -> None:
    """Load ``weights`` (a ``.pdparams`` file) into ``model`` after ``check_state_dict``: PaddleSeg's
    own loaders skip mismatching weights with a warning each and go on with random ones."""
    weights = Path(weights)
    state = load_paddle_file(weights)
    if not isinstance(state, dict):
        raise ValueError(f"{weights}: holds no parameter dictionary")
    check_state_dict(state, model, weights, Path(cfg_path))
    model.set_state_dict(state)


# --------------------------------------------------------------------------- crop settings
def roi_path(folder: Path) -> Path | None:
    """``roi.json`` in ``folder`` or its parent (a run folder), else None."""
    return next((p for p in (folder / ROI_NAME, folder.parent / ROI_NAME) if p.is_file()), None)


def read_roi(folder: Path) -> RoiSettings | None:
    """``RoiSettings`` from ``roi.json`` in ``folder`` or its parent (a run folder), else None;
    ValueError naming the file for JSON that is not ROI settings (``RoiSettings.from_json``)."""
    p = roi_path(Path(folder))
    if p is None:
        return None
    try:
        return RoiSettings.from_json(json.loads(p.read_text()), str(p))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{p}: not valid JSON ({exc})") from exc


def write_roi(folder: Path, roi: dict | RoiSettings | None) -> None:
    """``roi.json`` in ``folder`` (a two-stage model's crop settings); None: remove an earlier one."""
    if roi is None:
        (folder / ROI_NAME).unlink(missing_ok=True)
        return
    atomic_write_text(folder / ROI_NAME, json.dumps(roi.to_json() if isinstance(roi, RoiSettings) else roi,
                                                    indent=1))


def _crops_roi(root: str | os.PathLike | None) -> tuple[Path, dict] | None:
    """(path, ``"roi"`` object) of ``root/crops.json``, or None when there is none; ValueError
    naming the file when it is not JSON."""
    if not root:
        return None
    path = Path(root) / CROPS_NAME
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: cannot be read as JSON ({exc})") from exc
    roi = data.get("roi") if isinstance(data, dict) else None
    return (path, roi) if isinstance(roi, dict) else None


def read_crop_roi(cfg) -> dict | None:
    """The ``"roi"`` object of ``<train_dataset.dataset_root>/crops.json``, or None when there is none.

    A ``crops.json`` that is not JSON raises ValueError naming it (checked before training starts).
    """
    found = _crops_roi((cfg.dic.get("train_dataset") or {}).get("dataset_root"))
    return found[1] if found is not None else None


def write_model_dirs(cfg, save_dir: Path, iters: int, roi: dict | None = None) -> list[Path]:
    """``model.yml`` (and ``roi.json``) in ``save_dir``, ``last_model/`` and ``best_model/``; returns the model dirs."""
    from gamma_kit.safety import deferred_interrupts

    text = str(cfg)
    atomic_write_text(save_dir / MODEL_CONFIG_NAME, text)
    if roi is not None:
        write_roi(save_dir, roi)
    dirs = []
    last = save_dir / f"iter_{iters}"
    if (last / WEIGHTS_NAME).is_file():
        dst = save_dir / "last_model"
        dst.mkdir(exist_ok=True)
        with deferred_interrupts():     # Ctrl-C here still leaves last_model/ whole
            atomic_copy(last / WEIGHTS_NAME, dst / WEIGHTS_NAME)
        dirs.append(dst)
    if (save_dir / "best_model" / WEIGHTS_NAME).is_file():
        dirs.append(save_dir / "best_model")
    for d in dirs:
        atomic_write_text(d / MODEL_CONFIG_NAME, text)
        if roi is not None:
            write_roi(d, roi)
    return dirs


# --------------------------------------------------------------------------- two-stage or whole-image
def trained_on_crops(model_dir: Path) -> str | None:
    """How the resolved model folder ``model_dir`` says it was trained on ``prepare --roi`` crops
    (see the module docstring), as a phrase for a message; None when it does not."""
    import yaml

    cfg_file = config_path(model_dir)
    try:
        cfg = yaml.safe_load(cfg_file.read_text(encoding="utf-8"))
        root = ((cfg or {}).get("train_dataset") or {}).get("dataset_root")
        found = _crops_roi(root)
    except (OSError, UnicodeDecodeError, yaml.YAMLError, AttributeError, ValueError):
        return None         # an unreadable config fails where the model is built, with its own line
    if found is None or found[0].stat().st_mtime > (model_dir / WEIGHTS_NAME).stat().st_mtime:
        return None
    return f"the train_dataset.dataset_root of {cfg_file}, {root}, holds {found[0].name} with crop settings"


def folder_roi(folder: Path, crops_evidence, whole_image: bool = False) -> RoiSettings | None:
    """The crop settings of a model or export ``folder`` (the module docstring's rule), checked
    before any work: ``RoiSettings`` for a two-stage folder, None for a whole-image one.

    ``crops_evidence()`` says (a phrase, or None) how the folder shows it was trained on crops;
    it is asked only when no ``roi.json`` is there. ``whole_image``: force the whole-image path."""
    found = roi_path(folder)
    if whole_image:
        if found is not None:
            raise ValueError(f"--whole-image: {found} is there, so {folder} is a two-stage model trained on "
                             "disc-centred crops and runs on crops; drop --whole-image")
        return None
    if found is not None:
        return read_roi(folder)
    evidence = crops_evidence()
    if evidence:
        raise ValueError(f"{folder} was trained on disc-centred crops ({evidence}) but holds no {ROI_NAME} (nor "
                         f"does {folder.parent}): copy the run folder's {ROI_NAME} beside the weights, or pass "
                         "--whole-image to run the network on whole photos anyway")
    return None


def model_roi(model_dir: Path, whole_image: bool = False) -> RoiSettings | None:
    """``folder_roi`` for a resolved model folder, with ``trained_on_crops`` as the evidence."""
    return folder_roi(model_dir, lambda: trained_on_crops(model_dir), whole_image)
