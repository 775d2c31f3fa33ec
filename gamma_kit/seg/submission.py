"""Predict a folder of photos into the task 3 submission: masks, zip, manifest and reports.

Submission layout (SPEC 3): ``OUT/Disc_Cup_Segmentations/<id>.bmp`` and
``OUT/Disc_Cup_Segmentations.zip`` holding that folder. The output folder keeps
``predict_manifest.json`` (the files this run wrote); a rerun removes those first and refuses
other ``.bmp`` files there, so the zip holds exactly this run's masks. A two-stage run also writes
``stage1_report.json``: the photos where stage 1 was unsure or found no disc, (under ``"crops"``)
those whose crop window breaks ``crop.window_problem``'s rule, (under ``"stage2"``) those whose
segmented disc does not look like the disc the crop was centred on (``disc_check.disc_doubt``), and (under
``"rescued"``) those where another of stage 1's candidates gave the crop kept. Every run writes
``seg_report.csv``: a row per photo with its disc and cup areas, vCDR, what the two stages did and the
flags a reviewer should look at (``report_row``).
Every photo still gets its mask, so the submission stays complete.
"""
from __future__ import annotations

import contextlib
import io
import json
import os
import time
import warnings
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
from tqdm import tqdm

from gamma_kit.data import (IMAGE_DIR, SUBMISSION_DIR, DataWarning, check_fundus_image, check_photo_sizes,
                            find_mask_dir, find_task_dir, image_size, list_images, list_masks, read_ahead, read_image,
                            read_mask, write_image)
from gamma_kit.geometry import sharing_small
from gamma_kit.metrics import cup_of, disc_of, seg_image_metrics, summarise_seg, vcdr
from gamma_kit.safety import WriteBehind, atomic_write_bytes, atomic_write_text
from gamma_kit.seg.postprocess import overlay, parse_postprocess, postprocess_labels
from gamma_kit.seg.predictor import PhotoPrediction, load_model
from gamma_kit.seg.prepare import labels_to_mask

__all__ = ["SUBMISSION_DIR", "MANIFEST_NAME", "STAGE1_REPORT", "SEG_REPORT", "REPORT_COLUMNS", "REPORT_FLAGS",
           "report_row", "PredictionRun", "predict_folder",
           "write_submission_zip", "find_gt_mask_dir", "test_images"]

MANIFEST_NAME = "predict_manifest.json"
STAGE1_REPORT = "stage1_report.json"
SEG_REPORT = "seg_report.csv"
#: seg_report.csv's columns; ``flags`` holds any of ``REPORT_FLAGS``, separated by spaces
REPORT_COLUMNS = ("id", "disc_area_px", "cup_area_px", "vcdr", "stage1_source", "stage1_confidence", "stage2",
                  "flags")
REPORT_FLAGS = ("not_fundus", "no_disc_found", "stage1_unsure", "window", "rescued", "stage2_doubt", "no_disc",
                "no_cup")
_MANIFEST_EVERY = 20          # photos between two manifest saves


def find_gt_mask_dir(data_root: str | os.PathLike | None, split: str = "testing") -> Path | None:
    """GT masks of ``split`` if present: ``<task>/<split>/Disc_Cup_Mask`` or ``<task>/<split>_GT/...``."""
    return find_mask_dir(find_task_dir(data_root, "seg"), split)


def test_images(data_root: str | os.PathLike | None, split: str = "testing") -> dict[str, Path]:
    """{id: path} of the fundus images of ``split`` under a GAMMA task 3 root."""
    return list_images(find_task_dir(data_root, "seg") / split / IMAGE_DIR)


test_images.__test__ = False  # not a pytest test


def write_submission_zip(pred_dir: str | os.PathLike, zip_path: str | os.PathLike | None = None,
                         names: list[str] | None = None) -> Path:
    """Zip ``pred_dir`` (the ``Disc_Cup_Segmentations`` folder) with the folder name as the top entry;
    ``names`` (file names in it) restricts the zip to those files (this run's masks)."""
    pred_dir = Path(pred_dir)
    if names is None:
        files = sorted(p for p in pred_dir.iterdir() if p.suffix.lower() == ".bmp")
    else:
        files = [pred_dir / n for n in sorted(names)]
    if not files:
        raise ValueError(f"{pred_dir}: no .bmp predictions to zip")
    zip_path = Path(zip_path) if zip_path else pred_dir.with_suffix(".zip")
    buf = io.BytesIO()
    # level 1: a BMP mask deflates 2.3x faster than at the default 6, to ~30 KB instead of ~12 KB per photo
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
        for p in files:
            zf.write(p, f"{pred_dir.name}/{p.name}")
    return atomic_write_bytes(zip_path, buf.getvalue())


class _SubmissionFolder:
    """The output folder of one predict run: its masks, the manifest of what it wrote, the zip."""

    def __init__(self, out_dir: Path):
        self.out_dir = out_dir
        self.pred_dir = out_dir / SUBMISSION_DIR
        self.manifest = out_dir / MANIFEST_NAME
        self.written: list[str] = []
        self.not_fundus: list[dict] = []

    def open(self) -> None:
        """Remove the masks (and overlays) an earlier predict wrote here, as its manifest lists them;
        refuse when other ``.bmp`` files are in the way (they would end up in the zip)."""
        if self.manifest.is_file():
            try:
                old = json.loads(self.manifest.read_text())
            except json.JSONDecodeError as exc:
                raise ValueError(f"{self.manifest}: not valid JSON ({exc}); move the output folder aside") from exc
            for rel in old.get("files", []):
                f = self.out_dir / rel
                if f.is_file() and self.out_dir.resolve() in f.resolve().parents:
                    f.unlink()
        if self.pred_dir.is_dir():
            foreign = sorted(p.name for p in self.pred_dir.iterdir() if p.suffix.lower() == ".bmp")
            if foreign:
                raise ValueError(f"{self.pred_dir} already holds {len(foreign)} .bmp file(s) this kit did not "
                                 f"write (e.g. {foreign[:3]}); they would go into the zip: choose an empty --out")
        self.pred_dir.mkdir(parents=True, exist_ok=True)
        self.save_manifest()

    def save_manifest(self) -> None:
        # copies: the writer thread saves while the predicting thread may add a doubted photo
        atomic_write_text(self.manifest, json.dumps({"files": list(self.written), "not_fundus": list(self.not_fundus)},
                                                    indent=1))

    def write_mask(self, image_id: str, mask: np.ndarray) -> None:
        ok, bmp = cv2.imencode(".bmp", mask)
        if not ok:
            raise ValueError(f"{self.pred_dir / f'{image_id}.bmp'}: OpenCV could not encode the {mask.shape} "
                             "mask as BMP")
        atomic_write_bytes(self.pred_dir / f"{image_id}.bmp", bmp.tobytes())
        self.written.append(f"{SUBMISSION_DIR}/{image_id}.bmp")
        if len(self.written) % _MANIFEST_EVERY == 0:
            self.save_manifest()

    def close(self) -> Path:
        """The final manifest and the zip of this run's masks; returns the zip's path."""
        self.save_manifest()
        return write_submission_zip(self.pred_dir, names=[Path(w).name for w in self.written])


@dataclass
class PredictionRun:
    """What ``predict_folder`` wrote and measured. ``ids``: the photos predicted, in order (their masks
    are ``pred_dir/<id>.bmp``); ``stage1`` lists the photos where stage 1 was unsure or found no disc
    (dicts: id, file, source, confidence, note, fallback); ``not_fundus`` the photos that
    ``data.check_fundus_image`` doubts (dicts: id, file, reason), predicted anyway; ``crops`` the photos
    whose crop window breaks ``crop.window_problem``'s rule (dicts: id, file, note); ``stage2`` the
    photos whose segmented disc ``disc_check.disc_doubt`` doubts (dicts: id, file, note); ``report``
    ``seg_report.csv`` (``flagged``: its rows with a flag), ``review`` the review sheets written."""

    pred_dir: Path
    zip_path: Path
    ids: list[str]
    seconds_per_image: float
    model_seconds_per_image: float
    metrics: dict | None = None
    metrics_raw: dict | None = None
    overlays: list[Path] = field(default_factory=list)
    stage1: list[dict] = field(default_factory=list)
    stage1_report: Path | None = None
    not_fundus: list[dict] = field(default_factory=list)
    crops: list[dict] = field(default_factory=list)
    stage2: list[dict] = field(default_factory=list)
    report: Path | None = None
    flagged: int = 0
    review: list[Path] = field(default_factory=list)


_FALLBACK_ACTION = {"whole-image model": "used the whole-image model's segmentation",
                    "image centre": "cropped at the image centre"}


def report_row(image_id: str, photo: PhotoPrediction, mask: np.ndarray, not_fundus: bool = False) -> dict:
    """One row of ``seg_report.csv`` for the mask written for a photo: disc and cup areas (px), the
    vertical cup-to-disc ratio (``metrics.vcdr``, the challenge metric's definition: a measurement
    of the mask, not a diagnosis), stage 1's source and confidence, stage 2's verdict ("ok" or its
    doubt) and the flags (``REPORT_FLAGS``) a reviewer should look at."""
    loc = photo.location
    disc, cup = np.count_nonzero(disc_of(mask)), np.count_nonzero(cup_of(mask))
    flags = [name for name, on in (
        ("not_fundus", not_fundus), ("no_disc_found", loc is not None and loc.source == "image-centre"),
        ("stage1_unsure", loc is not None and loc.unsure and loc.source != "image-centre"),
        ("window", bool(photo.crop_note)), ("rescued", bool(photo.rescue)), ("stage2_doubt", bool(photo.doubt)),
        ("no_disc", disc == 0), ("no_cup", disc > 0 and cup == 0)) if on]
    return {"id": image_id, "disc_area_px": disc, "cup_area_px": cup, "vcdr": round(vcdr(mask), 4),
            "stage1_source": "" if loc is None else loc.source,
            "stage1_confidence": "" if loc is None else round(float(loc.confidence), 3),
            "stage2": "" if photo.crop_labels is None else (photo.doubt or "ok"), "flags": " ".join(flags)}


class _Reports:
    """What the two stages did not see, photo by photo: stage 1 unsure or without a disc, crop windows
    that break ``crop.window_problem``'s rule, discs that stage 2 doubts. Each is named in one line
    through ``log`` as it happens and, for a two-stage model, listed in ``stage1_report.json``."""

    def __init__(self, log):
        self.log = log
        self.stage1: list[dict] = []
        self.crops: list[dict] = []
        self.stage2: list[dict] = []
        self.rescued: list[dict] = []

    def add(self, image_id: str, path: Path, photo: PhotoPrediction) -> None:
        loc = photo.location
        if loc is not None and (loc.unsure or photo.fallback):
            what = "found no disc in" if loc.source == "image-centre" else "was unsure on"
            self.log(f"stage 1 {what} {path.name} ({loc.note or loc.source}): "
                     f"{_FALLBACK_ACTION.get(photo.fallback, 'cropped at its best guess')}")
            self.stage1.append({"id": image_id, "file": str(path), "source": loc.source,
                                "confidence": float(loc.confidence), "note": loc.note,
                                "fallback": photo.fallback or "none"})
        if photo.crop_note:
            self.log(f"crop of {path.name}: {photo.crop_note}; segmented anyway")
            self.crops.append({"id": image_id, "file": str(path), "note": photo.crop_note})
        if photo.rescue:
            self.log(f"stage 2 on {path.name}: {photo.rescue}")
            self.rescued.append({"id": image_id, "file": str(path), "note": photo.rescue})
        if photo.doubt:
            self.log(f"stage 2 doubts the disc of {path.name}: {photo.doubt}; its mask is written anyway")
            self.stage2.append({"id": image_id, "file": str(path), "note": photo.doubt})

    def write(self, out_dir: Path, n: int) -> Path:
        path = atomic_write_text(out_dir / STAGE1_REPORT, json.dumps(
            {"count": len(self.stage1), "photos": self.stage1, "crops": self.crops, "stage2": self.stage2,
             "rescued": self.rescued}, indent=1))
        if self.stage1:
            self.log(f"stage 1 unsure or without a disc on {len(self.stage1)} of {n} photo(s); listed in {path}")
        if self.stage2:
            self.log(f"stage 2 doubts the disc of {len(self.stage2)} of {n} photo(s); listed under \"stage2\" "
                     f"in {path}")
        if self.rescued:
            self.log(f"stage 2 kept another of stage 1's candidates on {len(self.rescued)} of {n} photo(s); listed "
                     f"under \"rescued\" in {path}")
        return path


def _review(table: list[dict], files: dict[str, Path], pred_dir: Path, review_dir) -> list[Path]:
    """Review sheets of a run: each photo with the outlines of the mask written for it."""
    from gamma_kit.review import ReviewEntry, review_sheets

    def outlines(image_id: str):
        return lambda image: overlay(image, read_mask(pred_dir / f"{image_id}.bmp"),
                                     thickness=max(2, round(image.shape[1] / 150)))   # seen on a thumbnail

    return review_sheets([ReviewEntry(r["id"], files[r["id"]], r["flags"], outlines(r["id"])) for r in table],
                         review_dir)


def _check_inputs(model, images, out_dir: Path, gt_dir, overlay_dir, inputs: tuple, review_dir=None):
    """(photos {id: path}, GT masks {id: path}, predictor) after the checks made before any work:
    outputs not onto inputs, photo sizes, GT ids that have a photo and its size."""
    from gamma_kit.safety import check_output_path

    check_output_path(out_dir, [*inputs, *(() if isinstance(images, dict) else (images,)), gt_dir],
                      "output folder")
    for folder, what in ((overlay_dir, "overlay folder"), (review_dir, "review folder")):
        if folder is not None:
            check_output_path(folder, [*inputs, gt_dir], what)
    files = images if isinstance(images, dict) else list_images(images)
    check_photo_sizes(files)
    predictor = model if hasattr(model, "predict_labels") else load_model(model)
    gt_files = list_masks(gt_dir) if gt_dir is not None else {}
    missing = sorted(set(gt_files) - set(files))
    if missing:
        raise ValueError(f"{gt_dir}: ground truth for id(s) {missing[:10]} that have no image to predict")
    for i, gt_path in gt_files.items():          # from the headers: a wrong size stops nothing half-way
        if image_size(gt_path) != image_size(files[i]):
            w, h = image_size(gt_path)
            pw, ph = image_size(files[i])
            raise ValueError(f"{gt_path}: mask size {w}x{h} differs from its image {pw}x{ph} (w x h)")
    return files, gt_files, predictor


def _predict_photo(predictor, image: np.ndarray, name: str, upsample: str, tta: bool,
                   location=None) -> PhotoPrediction:
    if hasattr(predictor, "predict_photo"):
        return predictor.predict_photo(image, name=name, upsample=upsample, tta=tta, location=location)
    return PhotoPrediction(predictor.predict_labels(image, upsample=upsample))


def _warn_not_fundus(not_fundus: list[dict], n: int, manifest: Path) -> None:
    if not_fundus:
        warnings.warn(DataWarning(
            f"{len(not_fundus)} of {n} photo(s) show no circular field of view on a dark surround "
            f"(not fundus photographs?) and were predicted anyway: {[Path(d['file']).name for d in not_fundus[:10]]}"
            f"; reasons in {manifest}"), stacklevel=3)


def _reader(predictor):
    """What the read-ahead threads do with each (id, path): the photo, the reason when
    ``data.check_fundus_image`` doubts it (predicted anyway), and, when stage 1 is classical,
    its location (the check's downscaled copy serves stage 1 too: ``geometry.sharing_small``)."""
    ahead = bool(getattr(predictor, "locates_classically", lambda: False)())

    def read(item: tuple[str, Path]) -> tuple[np.ndarray, str | None, object]:
        path = item[1]
        image = read_image(path)
        doubt = location = None
        with sharing_small(image):
            try:
                check_fundus_image(image, path.name)
            except ValueError as exc:
                doubt = str(exc)
            if ahead:
                location = predictor.locate(image, path.name)
        return image, doubt, location

    return read


def predict_folder(model, images: str | os.PathLike | dict[str, Path],
                   out_dir: str | os.PathLike, postprocess=False,
                   gt_dir: str | os.PathLike | None = None, overlay_dir: str | os.PathLike | None = None,
                   upsample: str = "nearest", progress: bool = True, tta: bool = False,
                   inputs: tuple = (), log=print, review_dir: str | os.PathLike | None = None) -> PredictionRun:
    """Predict every image, write ``out_dir/Disc_Cup_Segmentations/<id>.bmp`` and the zip.

    ``model`` is a model directory or anything with ``predict_photo``/``predict_labels``
    (``predictor.SegPredictor``, ``export.StaticPredictor``); a two-stage (ROI) model locates, crops,
    segments and pastes back. ``images`` is a folder or {id: path}. With ``gt_dir`` the run is
    scored with ``gamma_kit.metrics`` photo by photo; with ``postprocess`` (True = the default
    steps, or a tuple of ``postprocess.POSTPROCESS_STEPS``) ``metrics`` is the post-processed score and
    ``metrics_raw`` the score without it. ``tta``: flip test-time augmentation. ``overlay_dir``
    gets one PNG per image (prediction yellow, truth green). ``inputs``: folders/files the output
    must not be or lie inside. Photos are streamed: memory holds the photo being predicted, the few
    read ahead and the masks of the last two waiting to be written (``safety.WriteBehind``).
    ``review_dir`` gets review sheets (``gamma_kit.review``: thumbnails with the outlines, the photos
    with the most ``seg_report.csv`` flags first).

    Photos where stage 1 was unsure or found no disc are printed through ``log`` (one line each and
    a count) and listed in ``out_dir/stage1_report.json``, as (under ``"crops"``) are the photos whose
    crop window breaks ``crop.window_problem``'s rule and (under ``"stage2"``) those whose segmented
    disc is implausible (``disc_check.disc_doubt``); all are segmented and written anyway. Photos
    below ``data.MIN_FUNDUS_SIDE`` px on the short side are refused before any work
    (``data.check_photo_sizes``). Photos that ``data.check_fundus_image`` doubts (no circular field
    of view: a black frame, a scan of something else) are predicted anyway (a dark one goes to stage
    1's fallback), named in one ``DataWarning`` and listed with the reason under ``"not_fundus"`` in
    the manifest.
    """
    steps = parse_postprocess(postprocess)
    out_dir = Path(out_dir)
    files, gt_files, predictor = _check_inputs(model, images, out_dir, gt_dir, overlay_dir, inputs, review_dir)
    folder = _SubmissionFolder(out_dir)
    folder.open()
    pp = (lambda lab: postprocess_labels(lab, steps)) if steps else None
    reports = _Reports(log)
    rows, rows_raw, overlays, table = {}, {}, [], []
    t_model, t_start = 0.0, time.perf_counter()
    photos = read_ahead(files.items(), _reader(predictor))   # the next photos decode while this one runs
    # each mask is encoded, written and fsynced on another thread while the next photo runs
    with contextlib.closing(photos), WriteBehind() as writer:
        for (i, path), got in tqdm(photos, total=len(files), desc="predict", disable=not progress):
            if isinstance(got, Exception):
                raise got
            image, doubt, location = got
            not_fundus = doubt is not None
            if not_fundus:
                folder.not_fundus.append({"id": i, "file": str(path), "reason": doubt})
            t1 = time.perf_counter()
            photo = _predict_photo(predictor, image, path.name, upsample, tta, location)
            mask = labels_to_mask(photo.finished(pp))
            t_model += time.perf_counter() - t1
            reports.add(i, path, photo)
            table.append(report_row(i, photo, mask, not_fundus))
            writer.submit(folder.write_mask, i, mask)
            gt = read_mask(gt_files[i], expected_size=mask.shape[::-1]) if i in gt_files else None
            if gt is not None:
                rows[i] = seg_image_metrics(mask, gt, name=i)
                rows_raw[i] = seg_image_metrics(labels_to_mask(photo.labels), gt, name=i) if steps else rows[i]
            if overlay_dir is not None:
                overlays.append(write_image(Path(overlay_dir) / f"{i}.png", overlay(image, mask, gt)))
    t_total = time.perf_counter() - t_start        # wall time: reading, checking, predicting, writing, scoring
    zip_path = folder.close()
    report = atomic_write_text(out_dir / SEG_REPORT,
                               pd.DataFrame(table, columns=list(REPORT_COLUMNS)).to_csv(index=False))
    review = _review(table, files, folder.pred_dir, review_dir) if review_dir is not None else []
    run = PredictionRun(folder.pred_dir, zip_path, [Path(w).stem for w in folder.written], t_total / len(files),
                        t_model / len(files), overlays=overlays, stage1=reports.stage1,
                        not_fundus=folder.not_fundus, crops=reports.crops, stage2=reports.stage2, report=report,
                        flagged=sum(1 for r in table if r["flags"]), review=review)
    _warn_not_fundus(folder.not_fundus, len(files), folder.manifest)
    if getattr(predictor, "roi", None) is not None:
        run.stage1_report = reports.write(out_dir, len(files))
    if rows:
        run.metrics = summarise_seg(rows)
        run.metrics_raw = summarise_seg(rows_raw) if steps else run.metrics
    return run
