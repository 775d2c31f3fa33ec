"""GAMMA data layer: where the data lies, reading photos, checking them, masks, id tables.

A small package, one job per module; import the names from ``gamma_kit.data``:

- ``layouts``: the challenge layouts under a data root (``$GAMMA_DATA``), AI Studio's mounts and
  the challenge zips, the splits (``load_fovea_split``, ``load_seg_split``);
- ``images``: robust decoding (by content, broken JPEGs refused, EXIF orientation), ``read_image``,
  ``list_images``, ``write_image``;
- ``checks``: is a photo usable (size, a circular field of view on a dark surround);
- ``masks``: 0 / 128 / 255 masks from a folder or a submission zip, and their checks;
- ``tables``: image ids and the task 2 ground-truth table, and the task 2 submission CSV.

Conventions: images are RGB ``uint8`` (H, W, 3); masks (H, W) ``uint8`` with 0 = cup,
128 = disc rim, 255 = background; points (x, y) = (column, row). Every reader raises
``FileNotFoundError`` or ``ValueError`` naming the file and what was expected, and nothing here
deletes or modifies input files. Files are written through ``gamma_kit.safety``'s atomic writers.
"""
from gamma_kit.data.checks import (FOV_DARK_LEVEL, FOV_DARK_SHARE, MIN_FUNDUS_SIDE, NOISE_STEP_LIMIT,
                                   check_fundus_image, check_photo_size, check_photo_sizes)
from gamma_kit.data.images import (IMAGE_EXTS, DataWarning, describe_orientation, exif_orientation, image_size,
                                   jpeg_end, list_images, read_ahead, read_image, read_image_reduced, reading,
                                   sniff_format, write_image)
from gamma_kit.data.layouts import (AISTUDIO_DATA, CHALLENGE_ZIPS, DATA_ENV, IMAGE_DIR, MASK_DIRS, FoveaSplit,
                                    SegSplit, extract_zip, find_challenge_data, find_fovea_gt, find_mask_dir,
                                    find_task_dir, load_fovea_split, load_seg_split, resolve_data_root)
from gamma_kit.data.masks import (MASK_EXTS, MASK_VALUES, SUBMISSION_DIR, MaskSet, check_mask_fits, check_mask_values,
                                  decode_mask, list_masks, open_masks, present_values, read_mask,
                                  unexpected_mask_values)
from gamma_kit.data.tables import (GT_COLUMNS, check_gt_matches_images, id_key, match_gt_to_images, read_fovea_gt,
                                   rekey_ids, write_fovea_csv)

__all__ = [
    "IMAGE_DIR", "MASK_DIRS", "MASK_VALUES", "IMAGE_EXTS", "MASK_EXTS", "GT_COLUMNS", "DATA_ENV",
    "MIN_FUNDUS_SIDE", "FOV_DARK_LEVEL", "FOV_DARK_SHARE", "NOISE_STEP_LIMIT", "DataWarning",
    "resolve_data_root", "read_image", "read_image_reduced", "read_mask", "present_values", "unexpected_mask_values",
    "check_mask_values", "check_fundus_image", "check_photo_size", "check_photo_sizes",
    "sniff_format", "jpeg_end", "exif_orientation", "describe_orientation", "reading",
    "image_size", "list_images", "list_masks", "decode_mask", "SUBMISSION_DIR", "MaskSet", "open_masks",
    "check_mask_fits", "read_fovea_gt", "id_key", "rekey_ids", "match_gt_to_images", "check_gt_matches_images",
    "find_task_dir", "find_fovea_gt", "find_mask_dir", "AISTUDIO_DATA", "CHALLENGE_ZIPS", "extract_zip",
    "find_challenge_data", "FoveaSplit", "SegSplit", "load_fovea_split", "load_seg_split", "write_image",
    "read_ahead",
    "write_fovea_csv",
]
