"""Predict fovea positions for a folder of images with one or many fold checkpoints
(or their static export, run by Paddle Inference).

Each image goes to the canonical frame (eye side detected, or taken from an override
file), its fixed-ROI crop goes through every model, and the heatmaps are decoded by
the shared codec. Ensembles: ``coords`` (the original: decode each model, average the
positions) or ``heatmap`` (average the heatmaps, decode once); ``flip`` adds
horizontal-flip test-time augmentation. Positions go back to the original image with
``CanonicalFrame.to_image``; the whole chain is gamma_kit.fovea.inference. Output: a CSV
``data,Fovea_X,Fovea_Y`` (original image pixels, x = column), written atomically and never
onto an input, scored with gamma_kit.metrics when ground truth is given.
"""
from __future__ import annotations

import contextlib
import itertools
import json
from pathlib import Path
from typing import Sequence

import pandas as pd

import gamma_kit  # noqa: F401  (threads before paddle)
from gamma_kit.data import (describe_orientation, list_images, match_gt_to_images, read_ahead, read_fovea_gt,
                            write_fovea_csv)
from gamma_kit.safety import atomic_write_text
from gamma_kit.fovea.checkpoints import CHECKPOINT_CHOICES, find_checkpoints, load_checkpoint, load_exported
from gamma_kit.fovea.config import build_codec
from gamma_kit.fovea.dataset import SIDE_OVERRIDE_HINT, CanonicalCache
from gamma_kit.fovea.figures import EXAMPLES
from gamma_kit.fovea.inference import ENSEMBLES, Located, check_same_geometry, locate
from gamma_kit.fovea.report import REPORT_COLUMNS, report_rows
from gamma_kit.fovea.roi import policy_of_models
from gamma_kit.geometry import EyeSideError, read_side_overrides
from gamma_kit.metrics import evaluate_fovea

__all__ = ["ENSEMBLES", "CHECKPOINT_CHOICES", "predict", "check_gt_inside"]


def check_gt_inside(gt: pd.DataFrame, sizes: dict[str, tuple[int, int]], name: str) -> None:
    """ValueError naming the ids whose GT point lies outside their image."""
    bad = [f"{i} ({gt.at[i, 'Fovea_X']:g}, {gt.at[i, 'Fovea_Y']:g}) not in {sizes[i][0]}x{sizes[i][1]}"
           for i in gt.index if i in sizes and not (0 <= gt.at[i, "Fovea_X"] <= sizes[i][0]
                                                  and 0 <= gt.at[i, "Fovea_Y"] <= sizes[i][1])]
    if bad:
        raise ValueError(f"{name}: ground-truth fovea outside the image for {len(bad)} id(s): {bad[:5]}")


def _check_outputs(out_csv: Path, figures_dir: str | Path | None, inputs: list) -> None:
    """Refuse outputs that are, or lie inside, an input, or cannot be written, before any work."""
    from gamma_kit.safety import check_output_path

    if out_csv.is_dir():
        raise ValueError(f"--out {out_csv} is a folder: give the CSV file to write")
    check_output_path(out_csv, inputs, "--out")
    if out_csv.suffix.lower() != ".csv":
        raise ValueError(f"--out {out_csv}: the submission is a .csv file (columns data,Fovea_X,Fovea_Y); "
                         "were --out and --gt swapped?")
    check_output_path(_scores_path(out_csv), inputs, "scores file")
    check_output_path(_report_path(out_csv), inputs, "report file")
    check_output_path(_review_dir(out_csv), inputs, "review folder")
    if figures_dir is not None:
        check_output_path(figures_dir, inputs, "--figures")


def _scores_path(out_csv: Path) -> Path:
    return out_csv.with_name(out_csv.stem + "_scores.json")


def _review_dir(out_csv: Path) -> Path:
    return out_csv.with_name(out_csv.stem + "_review")


def _review(rows: list[dict], paths: dict[str, Path], folder: Path) -> list[Path]:
    """Review sheets (``gamma_kit.review``): each photo with a cross at its predicted fovea."""
    import cv2

    from gamma_kit.review import ReviewEntry, review_sheets

    def cross(x: float, y: float):
        def draw(image):
            size = max(6, round(image.shape[1] / 60))
            cv2.drawMarker(image, (round(x), round(y)), (255, 255, 0), cv2.MARKER_CROSS, 2 * size,
                           max(2, size // 3))
            return image
        return draw

    return review_sheets([ReviewEntry(r["id"], paths[r["id"]], r["flags"], cross(r["x"], r["y"])) for r in rows],
                         folder)


def _report_path(out_csv: Path) -> Path:
    """The fovea report beside the submission CSV (``report.REPORT_COLUMNS``)."""
    return out_csv.with_name(out_csv.stem + "_report.csv")


def _load_models(files: list[Path], exported: str | Path | None, device: str, backend: str = "paddle"
                 ) -> tuple[list, list[dict], list]:
    """(models, their configs, their files or export folders): the exported models of ``exported``
    (Paddle Inference or onnxruntime, ``backend``, on ``device``'s kind) or the dynamic models of
    checkpoint ``files``."""
    if exported is not None:
        return load_exported(exported, device="gpu" if device.startswith("gpu") else "cpu", backend=backend)
    models, cfgs = zip(*(load_checkpoint(f) for f in files))
    return list(models), list(cfgs), files


#: Photos decoded and located at a time: memory is bounded by this, not by the folder. A multiple of
#: the batch size keeps the network's batches those of a single pass (numbers identical).
CHUNK_BATCHES = 4


def _located_in_chunks(models, codecs, paths: dict[str, Path], cache: CanonicalCache, roi, chunk: int,
                       progress: bool, **chain) -> tuple[Located, list, list]:
    """``inference.locate`` over ``paths`` ``chunk`` photos at a time (decode, canonical frame, ROI,
    heatmaps): (the positions of every photo, with the crops and heatmaps of the first
    ``figures.EXAMPLES`` only, for the figures; the CanonicalFrame of every photo; the
    ``report.report_rows`` of every photo). The photos whose eye side is undecidable are named in
    one error at the end, before anything is written."""
    from tqdm import tqdm

    parts, frames, failed, rows = [], [], [], []
    ids = list(paths)
    photos = read_ahead(ids, lambda i: cache.get(i, paths[i]))      # the next photos decode meanwhile
    with contextlib.closing(photos), tqdm(total=len(ids), desc="predict", unit="img", disable=not progress,
                                          leave=False) as bar:
        for start in range(0, len(ids), chunk):
            canon = []
            for i, got in itertools.islice(photos, chunk):
                if isinstance(got, EyeSideError):
                    rotation = describe_orientation(paths[i])      # a photo an EXIF tag turns: the likely cause
                    failed.append(f"{paths[i]} ({rotation})" if rotation else str(paths[i]))
                elif isinstance(got, Exception):
                    raise got
                else:
                    canon.append(got)
                bar.update()
            if canon and not failed:
                found = locate(models, canon, codecs, roi=roi, **chain)
                rows += report_rows(found, [c.frame for c in canon], codecs, roi.anchor)
                parts.append(found.without_examples_beyond(max(0, EXAMPLES - len(frames))))
                frames += [c.frame for c in canon]
    if failed:
        raise ValueError(f"cannot decide the eye side of {len(failed)} image(s): {failed[:10]}; for each, "
                         f"{SIDE_OVERRIDE_HINT}")
    return Located.concat(parts), frames, rows


def _flags(found, anchor: str) -> dict:
    """The ids predict names: empty heatmaps, no disc to anchor the ROI (fixed window used), guarded positions."""
    return {"empty": [i for i, e in zip(found.ids, found.empty) if e], "roi_anchor": anchor,
            "roi_fallback": [] if anchor == "fixed" else [i for i, a in zip(found.ids, found.anchored) if not a],
            "guarded": [i for i, g in zip(found.ids, found.guarded) if g]}


def _score(pred_df: pd.DataFrame, gt_df: pd.DataFrame, sizes: dict, gt_name: str, scores_path: Path) -> dict:
    """Challenge scores of the predictions that have a GT row (gamma_kit.metrics), also written to ``scores_path``."""
    check_gt_inside(gt_df, sizes, gt_name)
    scores = evaluate_fovea(pred_df.loc[[i for i in sizes if i in gt_df.index]], gt_df, sizes)
    atomic_write_text(scores_path, json.dumps({"aed": scores["aed"], "score": scores["score"], "n": scores["n"],
                                               "per_image": scores["per_image"]["ed"].to_dict()}, indent=1))
    return scores


def predict(checkpoints: Sequence[str | Path] | None, images: str | Path | dict, out_csv: str | Path,
            ensemble: str = "coords", flip: bool = False, side_overrides: str | Path | None = None,
            gt: str | Path | None = None, device: str = "auto", figures_dir: str | Path | None = None,
            cache_dir: str | Path | None = None, amp: bool = False, progress: bool = True,
            cache: CanonicalCache | None = None, exported: str | Path | None = None,
            batch_size: int = 8, which: str = "auto", review: bool = False, backend: str = "paddle") -> dict:
    """Predict every image of ``images`` (a folder, or id -> path) and write ``out_csv``.

    Models: ``checkpoints`` (dynamic, ``checkpoints.find_checkpoints``; ``which`` of each fold folder:
    auto (averaged where training wrote it, else best), best, last, averaged) or ``exported`` (a folder
    of gamma_kit.fovea.export, read by ``checkpoints.load_exported``, run by Paddle Inference, or with
    ``backend="onnx"`` by onnxruntime on the export's ``model.onnx`` files); not both.
    ``amp``: float16 autocast on a GPU (ignored on the CPU and for exported models).
    ``cache``: a :class:`CanonicalCache` at the models' scale to share decoded images with
    the caller (otherwise one is made here, with ``cache_dir`` and ``side_overrides``).
    Before any work, outputs that are or lie inside an input (images, ``gt``, checkpoints,
    export, side overrides) or cannot be written are refused (ValueError).
    The ROI sits where the checkpoints' ``roi`` config puts it (gamma_kit.fovea.roi: the fixed
    window, or anchored on the detected disc; ``roi_fallback`` lists images whose disc could
    not anchor it and got the fixed window; ``guarded`` those whose decoded position the outlier
    guard replaced by the disc prior).
    Photos are read, located and let go ``CHUNK_BATCHES`` batches at a time (the positions are those
    of a single pass). Returns ``{"predictions": DataFrame, "n_models", "device", "empty": [ids],
    "roi_anchor", "roi_fallback": [ids], "guarded": [ids], "scores": dict | None, "report": path,
    "flagged": int, "review": [paths]}``; scores also go to ``<out_csv stem>_scores.json``, and a row
    per photo with what a reviewer needs to doubt it to ``<out_csv stem>_report.csv``
    (``gamma_kit.fovea.report``); ``review``: review sheets in ``<out_csv stem>_review/``
    (``gamma_kit.review``), the photos with the most flags first.
    """
    from gamma_kit.runtime import select_device

    if ensemble not in ENSEMBLES:
        raise ValueError(f"ensemble must be one of {ENSEMBLES}, got {ensemble!r}")
    if (exported is None) == (not checkpoints):
        raise ValueError("give either checkpoints or an exported model folder (--checkpoints or --exported)")
    out_csv = Path(out_csv)
    files = find_checkpoints(checkpoints, which) if exported is None else []
    paths = list_images(images) if not isinstance(images, dict) else dict(images)
    image_inputs = [images] if not isinstance(images, dict) else list(paths.values())
    _check_outputs(out_csv, figures_dir, [*image_inputs, gt, side_overrides, exported, *(checkpoints or []), *files])
    # a broken GT fails before the work; GT ids match file names by value (1 <-> 0001.jpg), each needs an image
    gt_df = match_gt_to_images(read_fovea_gt(gt), paths, gt, warn=False) if gt is not None else None
    dev = select_device(device)
    # float16 autocast only helps (and works) on a GPU; exported models run as they were exported
    amp = bool(amp) and dev.startswith("gpu") and exported is None
    models, cfgs, files = _load_models(files, exported, dev, backend)
    codecs = [build_codec(c) for c in cfgs]
    ref = check_same_geometry(files, codecs)
    decodes = sorted({c["data"]["decode"] for c in cfgs})
    if len(decodes) > 1:
        raise ValueError(f"the models decode photos differently (data.decode {decodes}): ensemble models of one config")
    if cache is None:
        cache = CanonicalCache(ref.scale, cache_dir, read_side_overrides(side_overrides) if side_overrides else {},
                               in_memory=False, decode=decodes[0])
    else:
        cache.check_serves(ref.scale, decodes[0], "the checkpoints")
    roi = policy_of_models(cfgs)
    found, frames, rows = _located_in_chunks(list(models), codecs, paths, cache, roi, CHUNK_BATCHES * batch_size,
                                             progress, ensemble=ensemble, flip=flip, amp=amp, batch_size=batch_size,
                                             fill_empty=True)
    pred_df = found.frame()
    write_fovea_csv(out_csv, pred_df)
    atomic_write_text(_report_path(out_csv), pd.DataFrame(rows, columns=list(REPORT_COLUMNS)).to_csv(index=False))
    sheets = _review(rows, paths, _review_dir(out_csv)) if review else []
    scores = None if gt_df is None else _score(pred_df, gt_df, {i: f.image_size for i, f in zip(found.ids, frames)},
                                               str(gt), _scores_path(out_csv))
    if figures_dir is not None:
        from gamma_kit.fovea.figures import plot_prediction_figures

        plot_prediction_figures(figures_dir, found, frames, ref, gt_df)
    return {"predictions": pred_df, "n_models": len(models), "device": dev, **_flags(found, roi.anchor),
            "scores": scores, "report": _report_path(out_csv), "flagged": sum(1 for r in rows if r["flags"]),
            "review": sheets}
