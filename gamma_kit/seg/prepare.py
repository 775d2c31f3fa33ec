"""Prepare GAMMA task 3 data for PaddleSeg, and split it into list files.

``prepare_dataset`` reproduces the original notebook's preparation (SPEC 3) without
touching the user's files: it writes a NEW folder ::

    OUT/JPEGImages/<id>.jpg       # the fundus image (copied, or resized to its mask's size)
    OUT/Annotations/<id>.png      # labels 0 = cup, 1 = disc rim, 2 = background
    OUT/prepare_report.json       # what was written and every skipped pair with its reason

GAMMA mask values map 0 -> 0, 128 -> 1, 255 -> 2 (a lookup table, so nothing else can
appear). A pair whose image or mask is missing or unreadable, whose mask has other
values, or whose photo fails ``data.check_fundus_image`` (short side below
``MIN_FUNDUS_SIDE`` px, or no circular field of view: not a fundus photograph), is skipped
and reported with the file and the reason (the original deleted such files).

``split_dataset`` writes ``train_list.txt``, ``val_list.txt`` (and ``test_list.txt`` when
asked) and ``labels.txt`` as ``paddlex --split_dataset --format SEG`` did: one line
``JPEGImages/<id>.jpg Annotations/<id>.png`` per image, paths relative to the folder. The
original used ``--val_value 0.0001`` (one validation image); any positive share here gives
at least one validation image.
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from gamma_kit.data import extract_zip  # noqa: F401  (lives in gamma_kit.data; importable from here too)
from gamma_kit.data import (IMAGE_DIR, check_fundus_image, check_mask_fits, find_mask_dir, find_task_dir, list_images,
                            list_masks, present_values, read_image, read_mask, unexpected_mask_values, write_image)
from gamma_kit.safety import atomic_copy, atomic_write_bytes, atomic_write_text
from gamma_kit.seg.model_dir import CROPS_NAME, RoiSettings  # noqa: F401  (RoiSettings: importable from here too)

__all__ = ["extract_zip", "IMAGE_SUBDIR", "LABEL_SUBDIR", "LABEL_NAMES", "CUP", "RIM", "BACKGROUND",
           "DEFAULT_PREPARED_DIR",
           "mask_to_labels", "labels_to_mask", "PrepareReport", "RoiSettings", "prepare_dataset", "split_dataset",
           "read_list_file", "read_crops", "roi_crops_for", "check_roi_windows", "CROPS_NAME"]

IMAGE_SUBDIR = "JPEGImages"
LABEL_SUBDIR = "Annotations"
LABEL_NAMES = ("cup", "disc", "background")  # label index -> meaning; GAMMA value = 128 * index
CUP, RIM, BACKGROUND = 0, 1, 2               # the label indices by name
DEFAULT_PREPARED_DIR = Path("data") / "seg_prepared"  # the configs' dataset_root, relative to the repo root
REPORT_NAME = "prepare_report.json"

_MASK_TO_LABEL = np.full(256, 255, np.uint8)
_MASK_TO_LABEL[[0, 128, 255]] = [0, 1, 2]
_LABEL_TO_MASK = np.full(256, 255, np.uint8)
_LABEL_TO_MASK[[0, 1, 2]] = [0, 128, 255]


def mask_to_labels(mask: np.ndarray) -> np.ndarray:
    """GAMMA mask (H, W) uint8 in {0, 128, 255} -> labels (H, W) uint8 in {0, 1, 2}."""
    mask = np.asarray(mask)
    if mask.dtype != np.uint8 or mask.ndim != 2:
        raise ValueError(f"expected an (H, W) uint8 mask, got {mask.dtype} {mask.shape}")
    bad = unexpected_mask_values(mask)
    if bad.size:
        raise ValueError(f"mask values must be 0, 128 or 255; found {bad[:10].tolist()}")
    return _MASK_TO_LABEL[mask]


def labels_to_mask(labels: np.ndarray) -> np.ndarray:
    """Labels (H, W) in {0, 1, 2} (any integer dtype) -> GAMMA mask (H, W) uint8 in {0, 128, 255}."""
    labels = np.asarray(labels)
    if labels.ndim != 2:
        raise ValueError(f"expected an (H, W) label map, got shape {labels.shape}")
    if labels.size and (labels.min() < 0 or labels.max() > 2):
        raise ValueError(f"labels must be 0 (cup), 1 (disc) or 2 (background); found {labels.min()}..{labels.max()}")
    labels = labels.astype(np.uint8, copy=False)
    if not labels.size:
        return _LABEL_TO_MASK[labels]
    return cv2.LUT(np.ascontiguousarray(labels), _LABEL_TO_MASK)   # the same table, ~7x faster on a full-size photo


@dataclass
class PrepareReport:
    """Outcome of ``prepare_dataset``: ids written, ids resized, and skipped pairs with reasons."""

    out_dir: str
    source: str
    written: list[str] = field(default_factory=list)
    resized: list[str] = field(default_factory=list)
    bad_pairs: dict[str, str] = field(default_factory=dict)
    status: str = "complete"
    roi: dict | None = None
    crops: int = 0

    def summary(self) -> str:
        what = (f"{self.crops} disc-centred crop pairs of {len(self.written)} photos" if self.roi
                else f"{len(self.written)} image/label pairs")
        lines = [f"prepared {what} from {self.source} into {self.out_dir}"]
        if self.resized:
            lines.append(f"  {len(self.resized)} image(s) resized to their mask's size: {self.resized[:10]}")
        for i, reason in self.bad_pairs.items():
            lines.append(f"  skipped {i}: {reason}")
        return "\n".join(lines)


OWNED_FILES = (REPORT_NAME, CROPS_NAME, "train_list.txt", "val_list.txt", "test_list.txt", "labels.txt")


def _check_out_dir(out: Path, inputs: list[Path], overwrite: bool) -> None:
    from gamma_kit.safety import check_writable

    out_r = out.resolve()
    for folder in inputs:
        f = folder.resolve()
        if out_r == f or f in out_r.parents or out_r in f.parents:
            raise ValueError(f"output folder {out} overlaps the input folder {folder}; "
                             "prepare writes a new folder and never writes into the user's data")
    check_writable(out, "output folder")
    if out.exists():
        if not out.is_dir():
            raise ValueError(f"output {out} exists and is not a folder")
        if any(out.iterdir()) and not (out / REPORT_NAME).is_file():
            raise ValueError(f"output folder {out} exists, is not empty and was not written by prepare; "
                             "choose a new folder")
        if any(out.iterdir()) and not overwrite:
            raise ValueError(f"output folder {out} already holds a prepared dataset; "
                             "pass overwrite=True (--overwrite) to write it again")


def _clear_previous(out: Path) -> None:
    """Remove what an earlier (possibly interrupted) prepare wrote into ``out``: image and label
    files in its two subfolders, hidden ``.tmp`` files, the list files, crops.json and the report.
    Nothing else (a user's file in ``out`` stays)."""
    for sub, exts in ((IMAGE_SUBDIR, (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff")), (LABEL_SUBDIR, (".png",))):
        d = out / sub
        if d.is_dir():
            for p in d.iterdir():
                if p.is_file() and (p.suffix.lower() in exts or (p.name.startswith(".") and p.name.endswith(".tmp"))):
                    p.unlink()
    for name in OWNED_FILES:
        (out / name).unlink(missing_ok=True)
    for p in out.glob(".*.tmp"):
        p.unlink()


def _unlistable(ids) -> list[str]:
    """Ids that a PaddleSeg list line ('image label', split on whitespace) cannot hold."""
    return [i for i in ids if any(c.isspace() for c in i) or not i]


def _write_png(path: Path, labels: np.ndarray) -> None:
    ok, png = cv2.imencode(".png", labels)
    if not ok:
        raise ValueError(f"{path}: PNG encoding failed")
    atomic_write_bytes(path, png.tobytes())


def roi_crops_for(image_id: str, mask: np.ndarray, roi: RoiSettings, index: int) -> list:
    """The ``roi.copies`` jittered ``DiscCrop`` windows for one training mask (seeded by
    ``roi.seed`` and the photo's ``index``); raises ValueError when the mask has no disc."""
    from gamma_kit.crop import DiscCrop, disc_box_from_mask

    found = disc_box_from_mask(mask)
    if found is None:
        raise ValueError(f"mask of {image_id} has no disc (no value below 255); --roi crops around the disc")
    (cx, cy), diameter = found
    rng = np.random.default_rng([roi.seed, index])
    h, w = mask.shape
    out = []
    for _ in range(roi.copies):
        scale = rng.uniform(1 - roi.scale_jitter, 1 + roi.scale_jitter) if roi.side is None else 1.0
        side = roi.window_side(diameter * scale)
        dx, dy = rng.uniform(-roi.jitter, roi.jitter, 2) * side
        out.append(DiscCrop.around((cx + dx, cy + dy), (w, h), roi.size, side=round(side)))
    return out


def check_roi_windows(roi: RoiSettings, ids, images: dict[str, Path], masks: dict[str, Path]) -> None:
    """Refuse ``roi`` before anything is written when the window it gives breaks
    ``crop.window_problem``'s rule on one of the photos ``ids`` (its ground-truth disc; the window
    before the random scale jitter; the photo at its mask's size, as the crops are cut). A pair
    whose mask cannot be read or has no disc is left to ``prepare_dataset`` (skipped, reported)."""
    from gamma_kit.crop import disc_box_from_mask

    now = f"--roi-side {roi.side}" if roi.side is not None else f"--roi-factor {roi.factor:g}"
    for i in ids:
        try:
            mask = read_mask(masks[i])
        except (ValueError, FileNotFoundError):
            continue
        found = disc_box_from_mask(mask)
        problem = roi.window_problem(found[1], mask.shape[::-1]) if found is not None else None
        if problem:
            raise ValueError(f"{images[i]}: {problem}; change --roi-factor, --roi-side or --roi-size (now {now}, "
                             f"--roi-size {roi.size})")


def prepare_dataset(data_root: str | os.PathLike | None, out_dir: str | os.PathLike = DEFAULT_PREPARED_DIR,
                    split: str = "training", mask_dir: str | os.PathLike | None = None,
                    overwrite: bool = False, progress: bool = True, roi: RoiSettings | None = None) -> PrepareReport:
    """Write ``out_dir/JPEGImages`` + ``out_dir/Annotations`` (0/1/2 PNG labels) from a GAMMA task 3 split.

    ``data_root`` is the task folder or a parent (or None for ``$GAMMA_DATA``). Images are
    copied byte for byte unless their size differs from the mask's, in which case they are
    resized to the mask (INTER_AREA when shrinking) as the original did. Returns the report,
    also written to ``out_dir/prepare_report.json``.

    With ``roi`` (``RoiSettings``), each photo gives ``roi.copies`` disc-centred crops
    ``<id>.jpg`` (first copy) and ``<id>_c<k>.jpg`` at ``roi.size`` px, with label crops
    (255 = background outside the photo), and ``out_dir/crops.json`` records
    ``{"roi": settings, "crops": {crop_id: {"source": id, "box": [x0, y0, x1, y1], ...}}}``.

    Pairs that cannot be used (see the module docstring) are skipped and listed in the
    report's ``bad_pairs`` with the reason; ``ValueError`` when none is left. ``roi`` settings whose
    window is unusable on a photo (``check_roi_windows``) are refused before anything is written.

    ``overwrite`` first removes what an earlier prepare wrote here (also an interrupted one),
    so the folder holds exactly the new set. Ids with whitespace (which list files cannot
    hold) are refused before anything is written.
    """
    task = find_task_dir(data_root, "seg")
    image_dir = task / split / IMAGE_DIR
    mask_dir = Path(mask_dir) if mask_dir is not None else find_mask_dir(task, split, required=True)
    images = list_images(image_dir)
    masks = list_masks(mask_dir)
    bad_names = _unlistable(sorted(set(images) | set(masks)))
    if bad_names:
        files = [str((images.get(i) or masks.get(i)).name) for i in bad_names]
        raise ValueError(f"{image_dir}: file names with spaces cannot go into PaddleSeg list files "
                         f"(one 'image label' pair per line): {files[:10]}; rename them")
    out = Path(out_dir)
    _check_out_dir(out, [image_dir, mask_dir], overwrite)
    if roi is not None:
        check_roi_windows(roi, sorted(set(images) & set(masks)), images, masks)
    out.mkdir(parents=True, exist_ok=True)
    if overwrite:
        _clear_previous(out)
    report = PrepareReport(out_dir=str(out), source=str(task / split), status="in progress",
                           roi=roi.to_json() if roi else None)
    atomic_write_text(out / REPORT_NAME, json.dumps(asdict(report), indent=1))  # marks the folder as prepare's
    (out / IMAGE_SUBDIR).mkdir(exist_ok=True)
    (out / LABEL_SUBDIR).mkdir(exist_ok=True)

    for i in sorted(set(images) - set(masks)):
        report.bad_pairs[i] = f"image {images[i].name} has no mask in {mask_dir}"
    for i in sorted(set(masks) - set(images)):
        report.bad_pairs[i] = f"mask {masks[i].name} has no image in {image_dir}"

    crops: dict[str, dict] = {}
    for index, i in enumerate(tqdm(sorted(set(images) & set(masks)), desc="prepare", disable=not progress)):
        try:
            image = read_image(images[i])
            check_fundus_image(image, images[i])     # a thumbnail or a non-fundus picture teaches nothing
            mask = read_mask(masks[i])
        except (ValueError, FileNotFoundError) as exc:
            report.bad_pairs[i] = str(exc)
            continue
        (mh, mw), (ih, iw) = mask.shape, image.shape[:2]
        try:
            resized = check_mask_fits((mw, mh), (iw, ih), masks[i], images[i])
        except ValueError as exc:             # another aspect ratio: resizing would squash the photo
            report.bad_pairs[i] = str(exc)
            continue
        if resized:
            shrink = mw * mh < iw * ih
            image = cv2.resize(image, (mw, mh), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
            report.resized.append(i)
        if roi is not None:
            try:
                windows = roi_crops_for(i, mask, roi, index)
            except ValueError as exc:
                report.bad_pairs[i] = str(exc)
                continue
            labels = mask_to_labels(mask)
            for k, c in enumerate(windows):
                cid = i if k == 0 else f"{i}_c{k}"
                write_image(out / IMAGE_SUBDIR / f"{cid}.jpg", c.crop_image(image))
                _write_png(out / LABEL_SUBDIR / f"{cid}.png", c.crop_mask(labels, fill=2))
                crops[cid] = {"source": i, "box": list(c.box), "image_size": [mw, mh], "size": c.size}
            report.crops += len(windows)
            report.written.append(i)
            continue
        suffix = images[i].suffix.lower()
        target = out / IMAGE_SUBDIR / f"{i}{'.jpg' if suffix in ('.jpg', '.jpeg') else '.png'}"
        if not resized and suffix in (".jpg", ".jpeg", ".png"):
            atomic_copy(images[i], target)
        else:
            write_image(target, image)
        _write_png(out / LABEL_SUBDIR / f"{i}.png", mask_to_labels(mask))
        report.written.append(i)

    if roi is not None:
        atomic_write_text(out / CROPS_NAME, json.dumps({"roi": roi.to_json(), "crops": crops}, indent=1))
    report.status = "complete"
    atomic_write_text(out / REPORT_NAME, json.dumps(asdict(report), indent=1))
    if not report.written:
        raise ValueError(f"{task / split}: no usable image/mask pair; reasons: "
                         f"{list(report.bad_pairs.items())[:5]}")
    return report


def read_crops(dataset_dir: str | os.PathLike) -> dict | None:
    """``crops.json`` of a ``prepare --roi`` folder ({"roi": ..., "crops": ...}), or None if absent."""
    p = Path(dataset_dir) / CROPS_NAME
    if not p.is_file():
        return None
    try:
        d = json.loads(p.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{p}: not valid JSON ({exc})") from exc
    if not isinstance(d, dict) or "roi" not in d:
        raise ValueError(f"{p}: expected a top-level 'roi' key (written by prepare --roi)")
    return d


def _pairs(dataset_dir: Path) -> dict[str, tuple[str, str]]:
    img_dir, lab_dir = dataset_dir / IMAGE_SUBDIR, dataset_dir / LABEL_SUBDIR
    for d in (img_dir, lab_dir):
        if not d.is_dir():
            raise FileNotFoundError(f"{d} not found: split needs a prepared folder with {IMAGE_SUBDIR}/ and "
                                    f"{LABEL_SUBDIR}/ (python -m gamma_kit.seg prepare ...)")
    images = list_images(img_dir)
    labels = list_images(lab_dir, (".png",))
    missing = sorted(set(images) ^ set(labels))
    if missing:
        raise ValueError(f"{dataset_dir}: images and labels do not pair up for id(s) {missing[:10]}")
    return {i: (f"{IMAGE_SUBDIR}/{images[i].name}", f"{LABEL_SUBDIR}/{labels[i].name}") for i in images}


def split_dataset(dataset_dir: str | os.PathLike = DEFAULT_PREPARED_DIR, val_value: float = 0.0001,
                  test_value: float = 0.0, seed: int = 0) -> dict[str, Path]:
    """Shuffle the prepared pairs (seeded) and write the list files; return {name: path}.

    ``val_value`` / ``test_value`` are shares in [0, 1); a positive share gives
    ``max(1, round(share * n))`` images. In a ``prepare --roi`` folder the shares count source
    photos, and all crops of one photo go to the same list. Lines are ``JPEGImages/<id>.jpg Annotations/<id>.png``.
    ``labels.txt`` lists the label values found in the annotations, one per line.
    """
    dataset_dir = Path(dataset_dir)
    for name, v in (("val_value", val_value), ("test_value", test_value)):
        if not 0.0 <= v < 1.0:
            raise ValueError(f"{name} must be a share in [0, 1), got {v}")
    pairs = _pairs(dataset_dir)
    crops = read_crops(dataset_dir)
    groups: dict[str, list[str]] = {}
    for i in sorted(pairs):   # the crops of one photo (prepare --roi --roi-copies) stay in one list
        source = crops["crops"].get(i, {}).get("source", i) if crops else i
        groups.setdefault(source, []).append(i)
    sources = sorted(groups)
    n = len(sources)
    n_val = max(1, round(val_value * n)) if val_value > 0 else 0
    n_test = max(1, round(test_value * n)) if test_value > 0 else 0
    if n - n_val - n_test < 1:
        raise ValueError(f"{dataset_dir}: {n} image(s) cannot give {n_val} validation and {n_test} test "
                         "images and keep one for training")
    order = [sources[k] for k in np.random.default_rng(seed).permutation(n)]
    parts = {name: [i for src in part for i in groups[src]]
             for name, part in (("val_list.txt", order[:n_val]), ("test_list.txt", order[n_val:n_val + n_test]),
                                ("train_list.txt", order[n_val + n_test:]))}
    ids = sorted(pairs)
    written = {}
    for name, part in parts.items():
        if name == "test_list.txt" and not part:
            (dataset_dir / name).unlink(missing_ok=True)  # a stale list from an earlier split
            continue
        written[name] = atomic_write_text(dataset_dir / name, "".join(f"{pairs[i][0]} {pairs[i][1]}\n"
                                                                      for i in part))
    found = set()
    for i in ids:
        lab = cv2.imread(str(dataset_dir / pairs[i][1]), cv2.IMREAD_UNCHANGED)
        if lab is None:
            raise ValueError(f"{dataset_dir / pairs[i][1]}: cannot be read as a PNG label image")
        found.update(present_values(lab).tolist())
    written["labels.txt"] = atomic_write_text(dataset_dir / "labels.txt", "".join(f"{v}\n" for v in sorted(found)))
    return written


def read_list_file(list_path: str | os.PathLike, dataset_root: str | os.PathLike,
                   need_labels: bool = True) -> list[tuple[Path, Path | None]]:
    """Read a PaddleSeg list file; every named file must exist under ``dataset_root``.

    Raises ``FileNotFoundError`` naming the list file, the line and the missing file.
    """
    list_path, root = Path(list_path), Path(dataset_root)
    if not list_path.is_file():
        raise FileNotFoundError(f"list file {list_path} not found (relative paths are taken from the working "
                                f"directory {Path.cwd()}); run `python -m gamma_kit.seg split` first")
    out = []
    for k, line in enumerate(list_path.read_text(encoding="utf-8").splitlines(), 1):
        items = line.split()
        if not items:
            continue
        if len(items) != 2 and need_labels:
            raise ValueError(f"{list_path}:{k}: expected 'image label', got {line!r}")
        paths = [root / it for it in items]
        for p in paths:
            if not p.is_file():
                raise FileNotFoundError(f"{list_path}:{k}: {p} does not exist (entries are joined with "
                                        f"dataset_root {root})")
        out.append((paths[0], paths[1] if len(paths) > 1 else None))
    if not out:
        raise ValueError(f"list file {list_path} is empty")
    return out
