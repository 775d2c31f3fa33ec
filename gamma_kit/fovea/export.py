"""Static export of fovea fold models and a Paddle Inference predictor for them.

``export_static(run, out)`` writes, for every fold of a run folder (its averaged.pdparams
where training wrote one, else best.pdparams; or ``which`` = best / last / averaged; or one
fold folder / checkpoint file)::

    out/export.json               # manifest, written last: models, their files and byte sizes
    out/fold<k>/model.json        # static graph (Paddle 3.x; older Paddle: model.pdmodel)
    out/fold<k>/model.pdiparams   # weights
    out/fold<k>/config.yml        # the checkpoint's config: codec (ROI, scale, decoder) and model

Input of each static model: (N, 3, h, w) float32 raw 0-255 RGB ROI crops (placed as the
config's ``roi`` section says) at the
codec's scale (N free); output (N, 1, h, w) heatmaps. Every file is written to a temporary
name, fsynced and renamed (gamma_kit.safety), so an interrupted export leaves no manifest
and is refused as a whole.

This module only writes. ``gamma_kit.fovea.checkpoints.load_exported(out)`` reads an export back
(manifest and every file checked) as one ``ExportedModel`` per fold, run by ``paddle.inference``
(on the CPU with oneDNN disabled: Paddle 3.3.1's CPU predictor raises NotImplementedError with it
on; SPEC 4); ``predict(..., exported=out)`` uses them through the same inference chain as the
dynamic models (gamma_kit.fovea.inference), so positions agree.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Sequence

import gamma_kit  # noqa: F401  (threads before paddle)
from gamma_kit.safety import atomic_write_text
from gamma_kit.fovea.checkpoints import (CHECKPOINT_CHOICES, CONFIG_NAME, EXPORT_FORMAT, MANIFEST_NAME, MODEL_PREFIX,
                                         find_checkpoints, load_checkpoint)
from gamma_kit.fovea.run_dir import fold_of

__all__ = ["export_static", "add_export_cli"]


def _model_name(path: Path, k: int, taken: set[str]) -> str:
    fold = fold_of(path)
    name = fold.name if fold.name.startswith("fold") else f"model{k}"
    return name if name not in taken else f"{name}_{k}"


def export_static(checkpoints: str | os.PathLike | Sequence[str | os.PathLike], out_dir: str | os.PathLike,
                  which: str = "auto", onnx: bool = False) -> Path:
    """Export every fold model of ``checkpoints`` (run folder(s), fold folder(s) or
    ``.pdparams`` files; ``which`` = auto / best / last / averaged for folders, as
    ``checkpoints.find_checkpoints``) to ``out_dir``; returns it.

    ``out_dir`` must not be, or lie inside, an input, and must be new or empty
    (FileExistsError otherwise: an earlier export is never overwritten). ``onnx``: each fold also gets
    ``model.onnx`` (``engine.to_onnx``, the ``onnx`` extra), listed in the manifest like its other files.
    """
    import paddle

    from gamma_kit.engine import ONNX_NAME, to_onnx
    from gamma_kit.fovea.config import build_codec, dump_config
    from gamma_kit.safety import check_output_path, deferred_interrupts, fsync_replace

    sources = [checkpoints] if isinstance(checkpoints, (str, os.PathLike)) else list(checkpoints)
    files = find_checkpoints(sources, which)
    out = check_output_path(out_dir, [*sources, *files], "export folder")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise FileExistsError(f"export folder {out_dir} exists and is not empty: choose a new folder "
                              "(an earlier export is never overwritten)")
    loaded = [load_checkpoint(f) for f in files]       # every checkpoint checked before anything is written
    out.mkdir(parents=True, exist_ok=True)
    entries, taken = [], set()
    for k, (f, (model, cfg)) in enumerate(zip(files, loaded), 1):
        codec = build_codec(cfg)
        name = _model_name(f, k, taken)
        taken.add(name)
        model.eval()
        spec = [paddle.static.InputSpec([None, 3, codec.height, codec.width], "float32", "x")]
        static = paddle.jit.to_static(model, input_spec=spec, full_graph=True)
        dest = out / name
        dest.mkdir()
        tmp = Path(tempfile.mkdtemp(dir=out, prefix=f".{name}.", suffix=".tmp"))
        try:
            with deferred_interrupts():
                paddle.jit.save(static, str(tmp / MODEL_PREFIX))
                if onnx:
                    graph = next(p for p in (tmp / f"{MODEL_PREFIX}.json", tmp / f"{MODEL_PREFIX}.pdmodel")
                                 if p.is_file())
                    to_onnx(graph, tmp / f"{MODEL_PREFIX}.pdiparams", tmp / ONNX_NAME)
                (tmp / CONFIG_NAME).write_text(dump_config(cfg))
                sizes = {}
                for p in sorted(tmp.iterdir()):
                    sizes[p.name] = p.stat().st_size
                    fsync_replace(p, dest / p.name)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        entries.append({"name": name, "source": str(f), "files": sizes,
                        "input_shape": [None, 3, codec.height, codec.width], "config": cfg["name"]})
    atomic_write_text(out / MANIFEST_NAME, json.dumps({"format": EXPORT_FORMAT, "kind": "gamma_kit.fovea",
                                                       "models": entries}, indent=1))
    return out


def add_export_cli(subparsers) -> None:
    """Add the ``export`` command to the fovea CLI's subparsers (``args.run(args)`` runs it)."""
    p = subparsers.add_parser("export", help="static export of fold checkpoints for Paddle Inference")
    p.add_argument("--checkpoints", nargs="+", required=True, help="run folder(s), fold folder(s) or .pdparams")
    p.add_argument("--out", required=True, help="new (or empty) folder for the exported models")
    p.add_argument("--which", choices=CHECKPOINT_CHOICES, default="auto",
                   help="checkpoint of each fold folder (auto: averaged where training wrote it, else best)")
    p.add_argument("--format", choices=("paddle", "onnx"), default="paddle",
                   help="onnx: also model.onnx per fold, for predict --onnx (onnxruntime; the onnx extra)")
    p.set_defaults(run=_run_export)


def _run_export(args) -> int:
    out = export_static(args.checkpoints, args.out, which=args.which, onnx=args.format == "onnx")
    n = len(json.loads((out / MANIFEST_NAME).read_text())["models"])
    flag = "--onnx" if args.format == "onnx" else "--exported"
    print(f"exported {n} model(s) to {out} (predict with: python -m gamma_kit.fovea predict {flag} {out} ...)")
    return 0
