"""Every config under configs/seg/ through every door a Paddle user opens (issue 16.1, 16.2, 16.7).

Routes:
- ``kit``: ``python -m gamma_kit.seg`` train, predict, export;
- ``tools``: this repository's ``tools/`` (PaddleSeg 2.8 flags, the kit's compat layer first): train with
  ``--do_eval``, val, predict, export;
- ``ps280``: PaddleSeg 2.8.0's own ``tools/train.py`` (vendored, unmodified) on the pinned pip paddleseg 2.8.0;
- ``ps291``: PaddleSeg 2.9.1's own, unmodified tools with its source tree on ``PYTHONPATH``: train with
  ``--do_eval``, val, predict, export (``FLAGS_enable_pir_api=0 ... --output_op none``, the form its
  ``deploy/python/infer.py`` runs on Paddle 3);
- ``infer``: ``seg export``'s folder under PaddleSeg 2.9.1's ``deploy/python/infer.py`` with its default flags.

What each (config, route) must do is declared in ``EXPECTED``: it works (every step exits 0 and writes
what PaddleSeg writes), or it fails at a named step with a named message, for a stated reason, with the
command to use instead. A test asserts that what happens is what is declared, so a config added without
declarations, or a route that starts or stops working, fails here. With ``GAMMA_KIT_ROUTES_JSON=FILE``
each test appends its outcome to FILE (JSON lines); ``python docs/routes_table.py`` runs these tests that
way and writes the README's table and docs/routes.md from the outcomes.

Runs are tiny (2 iterations, 32 px transforms through a child YAML whose ``_base_`` is the shipped
config, so the model, loss, optimizer and schedule are the shipped ones). The vendored PaddleSeg trees
live at ``../shared/vendor``; their routes skip cleanly without them.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import pytest
import yaml

from seg_fixtures import dataset_opts, make_tiny_seg_data

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "configs" / "seg"
VENDOR = REPO.parent / "shared" / "vendor"
PS280, PS291 = VENDOR / "PaddleSeg-2.8.0", VENDOR / "PaddleSeg-2.9.1"

ROUTES = {"kit": "kit CLI", "tools": "repo tools/", "ps280": "PaddleSeg 2.8.0 own tools",
          "ps291": "PaddleSeg 2.9.1 own tools", "infer": "PaddleSeg infer.py"}
STEPS = {"kit": ("train", "predict", "export"), "tools": ("train", "val", "predict", "export"),
         "ps280": ("train",), "ps291": ("train", "val", "predict", "export"), "infer": ("export", "infer")}


@dataclass(frozen=True)
class Works:
    note: str = ""


@dataclass(frozen=True)
class Fails:
    step: str
    match: str          # a piece of the output that names the cause
    reason: str
    instead: str


SHIPPED = sorted(p.name for p in CONFIGS.glob("*.yml"))
TWO_STAGE = {"roi_liteunet_cpu.yml", "roi_unet_512.yml"}      # stage 2 of the two-stage path: trained on crops
_KIT_MODEL = Fails("train", "The specified component (LiteUNet) was not found",
                   "LiteUNet is the kit's CPU model (gamma_kit.seg.models); PaddleSeg's own tools do not import it",
                   "python tools/train.py --config configs/seg/{config} (this repo's tools/), or "
                   "python -m gamma_kit.seg train --config {config}")
_ZERO_D = Fails("train", "array is 0-dimensional",
                "PaddleSeg 2.8.0's train loop indexes the 0-D loss of Paddle >= 2.5 at its first log step "
                "(fixed in 2.9)", "python tools/train.py --config configs/seg/{config} (this repo's tools/)")
_CE_PROMOTION = Fails("train", "Type promotion only support",
                      "PaddleSeg 2.8.0's CrossEntropyLoss multiplies a float32 by an int64 tensor, which Paddle 3 "
                      "refuses", "python tools/train.py --config configs/seg/{config} (this repo's tools/)")
_ON_CROPS = Works("predict.py and infer.py segment disc crops (seg prepare --roi); full photos: python -m "
                  "gamma_kit.seg predict, or this repo's tools/predict.py")

EXPECTED: dict[tuple[str, str], Works | Fails] = {}
for _c in SHIPPED:
    _lite = yaml.safe_load((CONFIGS / _c).read_text()).get("model", {}).get("type") == "LiteUNet"
    EXPECTED[_c, "kit"] = EXPECTED[_c, "tools"] = Works()
    EXPECTED[_c, "infer"] = _ON_CROPS if _c in TWO_STAGE else Works()
    EXPECTED[_c, "ps291"] = _KIT_MODEL if _lite else (_ON_CROPS if _c in TWO_STAGE else Works())
EXPECTED["liteunet_gamma_cpu.yml", "ps280"] = EXPECTED["roi_liteunet_cpu.yml", "ps280"] = _KIT_MODEL
EXPECTED["unet_gamma_512.yml", "ps280"] = EXPECTED["roi_unet_512.yml", "ps280"] = _ZERO_D
EXPECTED["unet_gamma_512_mixedloss.yml", "ps280"] = _CE_PROMOTION


def test_every_shipped_config_has_a_declared_outcome_on_every_route():
    declared = {c for c, _ in EXPECTED}
    assert declared == set(SHIPPED)
    assert {(c, r) for c in SHIPPED for r in ROUTES} == set(EXPECTED)
    for (c, r), e in EXPECTED.items():
        assert not isinstance(e, Fails) or e.step in STEPS[r], (c, r)


# ------------------------------------------------------------------------------------------ the runs


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict[str, dict[str, Path]]:
    """Tiny prepared data: whole photos (``whole``) and disc crops (``roi``, prepare --roi at 48 px);
    for each: the prepared folder, photos to predict, and crops to predict."""
    from gamma_kit.seg.prepare import RoiSettings, prepare_dataset, split_dataset

    root = tmp_path_factory.mktemp("routes_data")
    task = make_tiny_seg_data(root / "gamma", n_train=4, n_test=1, size=(240, 160), seed=3)
    photos = task / "testing" / "fundus color images"
    out = {}
    for kind, roi in (("whole", None), ("roi", RoiSettings(size=48))):
        prepared = root / f"prepared_{kind}"
        prepare_dataset(root / "gamma", prepared, roi=roi, progress=False)
        split_dataset(prepared, val_value=0.25, seed=0)
        crops = root / f"crops_{kind}"
        crops.mkdir()
        first = sorted((prepared / "JPEGImages").iterdir())[0]
        (crops / first.name).write_bytes(first.read_bytes())
        out[kind] = {"prepared": prepared, "photos": photos, "crops": crops}
    return out


def _child_config(config: str, prepared: Path, folder: Path) -> Path:
    """A YAML whose ``_base_`` is the shipped config, pointing its datasets at ``prepared`` with 32 px
    transforms (``seg_fixtures.dataset_opts``): predict.py and export.py of PaddleSeg take no --opts."""
    child: dict = {"_base_": str(CONFIGS / config)}
    for opt in dataset_opts(prepared):
        key, value = opt.split("=", 1)
        section, name = key.split(".")
        child.setdefault(section, {})[name] = yaml.safe_load(value)
    path = folder / f"route_{config}"
    path.write_text(yaml.safe_dump(child))
    return path


def _env(route: str, step: str) -> dict[str, str]:
    """PaddleSeg 2.9.1's package for its own tools and infer.py; the kit's steps run on the pinned pip 2.8.0."""
    env = dict(os.environ)
    if route == "ps291" or step == "infer":
        env["PYTHONPATH"] = str(PS291) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def _commands(route: str, cfg: Path, images: Path, work: Path) -> dict[str, list[str]]:
    py, run = sys.executable, work / "run"
    weights = str(run / "best_model" / "model.pdparams")
    train = ["--config", str(cfg), "--iters", "2", "--batch_size", "2", "--log_iters", "1", "--device", "cpu",
             "--do_eval", "--save_interval", "2", "--seed", "0", "--save_dir", str(run)]
    use = ["--config", str(cfg), "--model_path", weights]
    if route == "kit":
        seg = [py, "-m", "gamma_kit.seg"]
        return {"train": [*seg, "train", "--config", str(cfg), "--iters", "2", "--batch-size", "2", "--device", "cpu",
                          "--seed", "0", "--save-dir", str(run)],
                "predict": [*seg, "predict", "--model", str(run), "--images", str(images), "--out", str(work / "pred"),
                            "--device", "cpu"],
                "export": [*seg, "export", "--model", str(run), "--out", str(work / "export")]}
    if route == "infer":
        return {"export": [py, "-m", "gamma_kit.seg", "train", "--config", str(cfg), "--iters", "2",
                           "--batch-size", "2", "--device", "cpu", "--seed", "0", "--save-dir", str(run)],
                "infer": [py, str(PS291 / "deploy" / "python" / "infer.py"), "--config",
                          str(work / "export" / "deploy.yaml"), "--image_path", str(images), "--save_dir",
                          str(work / "pred"), "--device", "cpu"]}
    tools = {"tools": REPO / "tools", "ps280": PS280 / "tools", "ps291": PS291 / "tools"}[route]
    return {"train": [py, str(tools / "train.py"), *train],
            "val": [py, str(tools / "val.py"), *use, "--device", "cpu"],
            "predict": [py, str(tools / "predict.py"), *use, "--image_path", str(images), "--save_dir",
                        str(work / "pred"), "--device", "cpu"],
            "export": [py, str(tools / "export.py"), *use, "--save_dir", str(work / "export"),
                       *(["--output_op", "none"] if route == "ps291" else [])]}


def _wrote(route: str, step: str, work: Path, images: Path) -> str | None:
    """What is missing after a step that exited 0 (None: it wrote what it should)."""
    n = len(list(images.iterdir()))
    if step == "train":
        need = [work / "run" / "iter_2" / "model.pdparams"]
        if route != "kit":
            need.append(work / "run" / "best_model" / "model.pdparams")
    elif step == "predict" and route == "kit":
        return None if len(list((work / "pred" / "Disc_Cup_Segmentations").glob("*.bmp"))) >= n else "no masks in pred/"
    elif step in ("predict", "infer"):
        sub = work / "pred" / ("pseudo_color_prediction" if step == "predict" else "")
        return None if len(list(sub.glob("*.png"))) >= n else f"fewer than {n} masks in {sub}"
    elif step == "export":
        need = [work / "export" / "deploy.yaml", work / "export" / "model.pdiparams"]
    else:
        return None
    missing = [str(p.relative_to(work)) for p in need if not p.is_file()]
    return f"missing {', '.join(missing)}" if missing else None


def _record(config: str, route: str, expected, actual: dict) -> None:
    path = os.environ.get("GAMMA_KIT_ROUTES_JSON")
    if path:
        row = {"config": config, "route": route, "expected": {"kind": type(expected).__name__, **asdict(expected)},
               **actual}
        with open(path, "a", encoding="utf-8") as f:
            f.write(json.dumps(row) + "\n")


@pytest.mark.slow
@pytest.mark.parametrize("route", list(ROUTES))
@pytest.mark.parametrize("config", SHIPPED)
def test_route(config, route, data, tmp_path):
    expected = EXPECTED[config, route]
    if route != "kit" and route != "tools":
        needs = PS280 if route == "ps280" else PS291
        if not needs.is_dir():
            pytest.skip(f"{needs} is not here (the vendored PaddleSeg trees live in ../shared/vendor)")
    kind = "roi" if config in TWO_STAGE else "whole"
    d = data[kind]
    cfg = _child_config(config, d["prepared"], tmp_path)
    # PaddleSeg's own predict.py / infer.py run a crop model on what they are given: crops
    images = d["crops"] if kind == "roi" and route in ("ps291", "infer") else d["photos"]
    commands = _commands(route, cfg, images, tmp_path)
    if route == "infer":    # seg export after the kit's train
        commands["export"] = [commands["export"], [sys.executable, "-m", "gamma_kit.seg", "export", "--model",
                                                   str(tmp_path / "run"), "--out", str(tmp_path / "export")]]
    steps, failed = [], None
    for step in STEPS[route]:
        start = time.perf_counter()
        for cmd in (commands[step] if isinstance(commands[step][0], list) else [commands[step]]):
            res = subprocess.run(cmd, cwd=tmp_path, env=_env(route, step), capture_output=True, text=True, timeout=600)
            if res.returncode != 0:
                break
        output = res.stdout + res.stderr
        missing = _wrote(route, step, tmp_path, images) if res.returncode == 0 else None
        steps.append({"step": step, "rc": res.returncode, "seconds": round(time.perf_counter() - start, 1)})
        if res.returncode != 0 or missing:
            failed = {"step": step, "rc": res.returncode, "missing": missing, "tail": output[-1500:]}
            break
    _record(config, route, expected, {"steps": steps, "failed": failed})
    if isinstance(expected, Works):
        assert failed is None, failed
    else:
        assert failed is not None, f"{config} via {route} works now: update EXPECTED (it was declared to fail)"
        assert failed["step"] == expected.step and failed["rc"] != 0, failed
        assert expected.match in failed["tail"], failed["tail"]
        assert "Traceback" not in failed["tail"] or route in ("ps280", "ps291"), failed["tail"]


def test_kit_model_configs_say_which_doors_work():
    """Configs of the kit's own model say in their header that PaddleSeg's own tools cannot build it,
    and give the command that works (issue 16.1)."""
    lite = [c for c in SHIPPED if EXPECTED[c, "ps291"] is _KIT_MODEL]
    assert lite == ["liteunet_gamma_cpu.yml", "roi_liteunet_cpu.yml"]
    for c in lite:
        header = "".join(line for line in (CONFIGS / c).read_text().splitlines(True) if line.startswith("#"))
        assert "PaddleSeg's own tools" in header and "(LiteUNet) was not found" in header
        assert f"python tools/train.py --config configs/seg/{c}" in header
