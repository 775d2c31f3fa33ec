"""Model-side timings: fovea U-Net forward / train step and parameters (original config
vs CPU config), end-to-end 5-fold ensemble prediction per image, segmentation inference
per full-size image (CPU config vs the original 512 UNet). Models are randomly
initialised: time does not depend on the weights.

    python bench/bench_models.py --data DIR [--quick] [--json FILE]

The original fovea config (64 wide, 5x5, 608x400) takes tens of seconds per forward on 2
cores: ONE batch-1 forward is timed (``--quick``: at 304x200 and scaled by 4, marked
"est."); its batch-10 train step is estimated as forward x 10 x (train-step / forward
ratio measured on the same architecture at 152x100, batch 10). Its 5-fold ensemble is
1 measured forward x 5 plus the measured overheads (JPEG decode, crop, 5 original loop
decodes). Memory: process RSS peak minus RSS before the block (psutil, sampled every 5 ms).
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import REPO, RssPeak, emit, fmt_mb, fmt_s, row, time_call  # noqa: E402

import numpy as np  # noqa: E402

import paddle  # noqa: E402

from gamma_kit.data import list_images, load_fovea_split, read_image  # noqa: E402
from gamma_kit.fovea.config import build_codec, build_model, dump_config, load_config  # noqa: E402
from gamma_kit.fovea.dataset import CanonicalImage  # noqa: E402
from gamma_kit.fovea.inference import locate  # noqa: E402
from gamma_kit.fovea.loss import heatmap_loss  # noqa: E402
from gamma_kit.fovea.model import count_parameters  # noqa: E402
from gamma_kit.geometry import CanonicalFrame  # noqa: E402
from originals import ORIGINAL_CROP, original_decode  # noqa: E402

FOVEA_ORIG = REPO / "configs" / "fovea" / "unet_heatmap.yml"
FOVEA_CPU = REPO / "configs" / "fovea" / "unet_heatmap_cpu.yml"
SEG_CPU = REPO / "configs" / "seg" / "liteunet_gamma_cpu.yml"
SEG_ORIG = REPO / "configs" / "seg" / "unet_gamma_512.yml"


def forward_time(model, shape: tuple[int, ...], repeat: int) -> tuple[dict, float]:
    """Eval-mode forward of a zero-mean random batch; returns (time_call dict, RSS peak MiB)."""
    x = paddle.to_tensor(np.random.default_rng(0).uniform(0, 255, shape).astype("float32"))
    model.eval()

    def run():
        with paddle.no_grad():
            model(x).numpy()

    with RssPeak() as mem:
        t = time_call(run, repeat=repeat, warmup=1 if repeat > 1 else 0)
    return t, mem.peak_mb


def train_step_time(model, shape: tuple[int, ...], repeat: int) -> tuple[dict, float]:
    """One Adam step with the kit's heatmap loss on a random batch of ``shape``."""
    rng = np.random.default_rng(0)
    x = paddle.to_tensor(rng.uniform(0, 255, shape).astype("float32"))
    y = paddle.to_tensor(rng.uniform(0, 10, (shape[0], 1) + shape[2:]).astype("float32"))
    opt = paddle.optimizer.Adam(1e-3, parameters=model.parameters())
    model.train()

    def run():
        loss = heatmap_loss(model(x), y, 0.0005)
        loss.backward()
        opt.step()
        opt.clear_grad()
        float(loss)

    with RssPeak() as mem:
        t = time_call(run, repeat=repeat, warmup=1)
    return t, mem.peak_mb


def fovea_measure_cpu() -> dict:
    """CPU config: parameters, batch-1 forward, batch-8 train step (measured first, while
    the process is small, so the RSS deltas mean something)."""
    import warnings

    warnings.filterwarnings("ignore", message="When training, we now always track global mean")
    cpu_cfg = load_config(FOVEA_CPU)
    cc = build_codec(cpu_cfg)
    paddle.seed(0)
    m_cpu = build_model(cpu_cfg)
    cw, ch = cc.heatmap_size
    f_cpu, mem_fc = forward_time(m_cpu, (1, 3, ch, cw), 5)
    s_cpu, mem_sc = train_step_time(m_cpu, (8, 3, ch, cw), 3)
    return {"cpu_cfg": cpu_cfg, "cc": cc, "p_cpu": count_parameters(m_cpu), "f_cpu": f_cpu, "mem_fc": mem_fc,
            "s_cpu": s_cpu, "mem_sc": mem_sc}


def fovea_measure_orig(quick: bool, cc) -> dict:
    """Original config: parameters, ONE batch-1 forward at 608x400 (quick: 304x200 x 4), and the
    train-step / forward ratio of the same architecture at 152x100, batch 2."""
    orig_cfg = load_config(FOVEA_ORIG)
    oc = build_codec(orig_cfg)
    paddle.seed(0)
    m_orig = build_model(orig_cfg)
    ow, oh = oc.heatmap_size
    cw, ch = cc.heatmap_size
    if quick:
        t, mem_f = forward_time(m_orig, (1, 3, oh // 2, ow // 2), 1)
        f_orig, f_note = t["median"] * 4, "est. from 304x200 x 4"
    else:
        t, mem_f = forward_time(m_orig, (1, 3, oh, ow), 1)
        f_orig, f_note = t["median"], "1 forward measured"
    fs, _ = forward_time(m_orig, (2, 3, ch, cw), 1)
    ts, mem_ts = train_step_time(m_orig, (2, 3, ch, cw), 1)
    return {"oc": oc, "p_orig": count_parameters(m_orig), "f_orig": f_orig, "f_note": f_note, "mem_f": mem_f,
            "step_ratio": ts["median"] / fs["median"], "mem_ts": mem_ts}


def fovea_rows(c: dict, o: dict) -> list[dict]:
    rows = []
    f_orig, step_ratio = o["f_orig"], o["step_ratio"]
    step_orig = f_orig * 10 * step_ratio
    f_cpu, s_cpu = c["f_cpu"], c["s_cpu"]
    rows.append(row("Fovea U-Net parameters", f"{o['p_orig'] / 1e6:.1f} M (64 wide, 5x5)",
                    f"{c['p_cpu'] / 1e6:.2f} M (16 wide, 3x3)", o["p_orig"] / c["p_cpu"]))
    rows.append(row("Fovea forward, batch 1", f"{fmt_s(f_orig)} (608x400; {o['f_note']})",
                    f"{fmt_s(f_cpu['median'])} (152x100)", f_orig / f_cpu["median"],
                    memory=f"original {fmt_mb(o['mem_f'], 'RSS delta')}; CPU {fmt_mb(c['mem_fc'], 'RSS delta')}"))
    rows.append(row("Fovea train step (per image)",
                    f"{fmt_s(step_orig / 10)} (batch 10, est.: forward x 10 x {step_ratio:.1f})",
                    f"{fmt_s(s_cpu['median'] / 8)} (batch 8, measured)", step_orig / 10 / (s_cpu["median"] / 8),
                    memory=f"original arch. at 152x100 b2 {fmt_mb(o['mem_ts'], 'RSS delta')}; CPU b8 "
                           f"{fmt_mb(c['mem_sc'], 'RSS delta')}",
                    note=f"step/forward ratio {step_ratio:.1f} measured on the original architecture at 152x100, "
                         f"batch 2; a 200-epoch run of 80 images would take ~{step_orig / 10 * 80 * 200 / 86400:.0f} "
                         f"days here; CPU config: {s_cpu['median'] / 8 * 80:.1f} s per 80-image epoch (steps only)"))
    return rows


def ensemble_measure(data: Path, c: dict, quick: bool) -> dict:
    """CPU config, end to end per image: JPEG -> canonical -> ROI -> 5 forwards -> decode -> image
    coordinates (measured); plus the original pipeline's measured overheads (JPEG + crop, loop decode)."""
    test = load_fovea_split(data, "testing")
    paths = list(test.images.values())[: 2 if quick else 4]
    cpu_cfg, cc = c["cpu_cfg"], c["cc"]
    paddle.seed(1)
    models = [build_model(cpu_cfg) for _ in range(5)]
    for m in models:
        m.eval()

    def kit_one(path: Path) -> np.ndarray:
        image = read_image(path)
        frame = CanonicalFrame.from_image(image)             # eye side detected, not typed
        canon = CanonicalImage(path.stem, path, (image.shape[1], image.shape[0]), frame, cc.scale,
                               frame.warp_image(image, scale=cc.scale))
        # the kit's one inference chain: ROI crop -> 5 heatmaps -> decode, average -> image
        return locate(models, [canon], [cc] * len(models), batch_size=1).image_xy

    kit_one(paths[0])   # warm-up
    with RssPeak() as mem:
        t0 = time.perf_counter()
        for p in paths:
            kit_one(p)
        t_cpu = (time.perf_counter() - t0) / len(paths)
    # the same through the public predict() with 5 saved checkpoints (includes loading them)
    from gamma_kit.fovea.predict import predict

    with tempfile.TemporaryDirectory() as tmp:
        for k, m in enumerate(models, 1):
            d = Path(tmp) / "run" / f"fold{k}"
            d.mkdir(parents=True)
            paddle.save(m.state_dict(), str(d / "best.pdparams"))
            # random weights, so no training learned the disc-to-fovea offset and spread: IDRiD's
            # (docs/results.md, "a window that fits every camera"), which the auto window rule needs
            fold_cfg = {**cpu_cfg, "roi": {**cpu_cfg["roi"], "disc_offset": [718.0, 93.0], "prior_spread": [46.0, 60.0]}}
            (d / "config.yml").write_text(dump_config(fold_cfg))
        t0 = time.perf_counter()
        predict([Path(tmp) / "run"], {p.stem: p for p in paths}, Path(tmp) / "sub.csv", device="cpu",
                progress=False)
        t_pred = (time.perf_counter() - t0) / len(paths)

    oc = build_codec(load_config(FOVEA_ORIG))

    def orig_pre(path: Path) -> np.ndarray:
        import cv2

        img = cv2.imread(str(path))[:, :, ::-1]
        h, w = img.shape[:2]
        ox, oy = ORIGINAL_CROP.get((w, h), (0, 0))
        img = img[oy:oy + 1934, ox:ox + 1956][:, ::-1]     # hand-typed side: right eye assumed
        x0, y0 = oc.roi_origin_px
        return np.ascontiguousarray(img[y0:y0 + oc.height, x0:x0 + oc.width].transpose(2, 0, 1), np.float32)

    t_pre = time_call(lambda: orig_pre(paths[0]), repeat=3)["median"]
    hm = np.random.default_rng(0).random((oc.height, oc.width), dtype=np.float32) * 10
    t0 = time.perf_counter()
    original_decode(hm)
    t_loop = time.perf_counter() - t0
    t_kdec = time_call(lambda: oc.decode(hm), repeat=5)["median"]
    return {"t_cpu": t_cpu, "mem": mem.peak_mb, "t_pred": t_pred, "n": len(paths), "t_pre": t_pre,
            "t_loop": t_loop, "t_kdec": t_kdec}


def ensemble_rows(e: dict, o: dict) -> list[dict]:
    f_orig = o["f_orig"]
    t_orig = e["t_pre"] + 5 * f_orig + 5 * e["t_loop"]
    t_orig_kit = e["t_pre"] + 5 * f_orig + 5 * e["t_kdec"]
    return [row("Fovea 5-fold ensemble, end to end (per image)",
                f"{fmt_s(t_orig)} (est.: 5 x {fmt_s(f_orig)} forward + 5 x {fmt_s(e['t_loop'])} loop decode "
                f"+ {fmt_s(e['t_pre'])} JPEG/crop)",
                f"{fmt_s(e['t_cpu'])} (CPU config, measured on {e['n']} GAMMA-size images)", t_orig / e["t_cpu"],
                target="<= 2 s", met=bool(e["t_cpu"] <= 2.0), memory=f"CPU config {fmt_mb(e['mem'], 'RSS delta')}",
                note=f"kit predict() incl. loading 5 checkpoints: {fmt_s(e['t_pred'])}/image; original config with "
                     f"the kit's decoder: {fmt_s(t_orig_kit)}/image; CPU config includes eye-side detection")]


def seg_measure(data: Path, which: str, quick: bool) -> dict:
    """Per full-size image: JPEG decode, and SegPredictor.predict_labels (resize, forward, arg-max,
    nearest resize back) of the CPU config or the original 512 UNet (random weights)."""
    from paddleseg.cvlibs import SegBuilder

    from gamma_kit.seg.predictor import SegPredictor
    from gamma_kit.seg.training import load_config as seg_config

    imgs = list_images(data / "task3_disc_cup_segmentation" / "testing" / "fundus color images")
    paths = list(imgs.values())[: 2 if quick else 4]
    images = [read_image(p) for p in paths]
    rep = len(images) if which == "cpu" else 1
    paddle.seed(0)
    b = SegBuilder(seg_config(SEG_CPU if which == "cpu" else SEG_ORIG))
    pred = SegPredictor(b.model, b.val_transforms, 3)
    n_par = sum(int(np.prod(p.shape)) for p in b.model.parameters())
    if which == "cpu":
        pred.predict_labels(images[0])   # warm-up (the original's single run includes its warm-up)
    with RssPeak() as mem:
        t0 = time.perf_counter()
        for im in images[:rep]:
            pred.predict_labels(im)
        t = (time.perf_counter() - t0) / rep
    t_read = time_call(lambda: read_image(paths[0]), repeat=3)["median"]
    return {"t": t, "mem": mem.peak_mb, "params": n_par, "t_read": t_read,
            "sizes": sorted({f"{im.shape[1]}x{im.shape[0]}" for im in images}), "n": rep}


def seg_rows(sc: dict, so: dict) -> list[dict]:
    tc, to, t_read = sc["t"], so["t"], sc["t_read"]
    return [row("Segmentation inference (per full-size image)",
                f"{fmt_s(to + t_read)} (UNet 512, {so['params'] / 1e6:.1f} M)",
                f"{fmt_s(tc + t_read)} (LiteUNet 160, {sc['params'] / 1e6:.2f} M)", (to + t_read) / (tc + t_read),
                target="<= 1 s", met=bool(tc + t_read <= 1.0),
                memory=f"UNet {fmt_mb(so['mem'], 'RSS delta')}; LiteUNet {fmt_mb(sc['mem'], 'RSS delta')}",
                note=f"incl. JPEG decode {fmt_s(t_read)}; model + resizes only: {fmt_s(to)} vs {fmt_s(tc)}; "
                     f"images {', '.join(sc['sizes'])}; UNet timed on {so['n']} image(s), LiteUNet on {sc['n']}")]


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True, help="synthetic data root (python -m gamma_kit.synth)")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    paddle.set_device("cpu")
    data = Path(args.data)
    # small models first (meaningful RSS deltas), then the original-size ones
    c = fovea_measure_cpu()
    e = ensemble_measure(data, c, args.quick)   # its RSS delta is small: the CPU-config forward ran first
    sc = seg_measure(data, "cpu", args.quick)
    o = fovea_measure_orig(args.quick, c["cc"])
    so = seg_measure(data, "orig", args.quick)
    rows = fovea_rows(c, o) + ensemble_rows(e, o) + seg_rows(sc, so)
    raw = {"f_orig_s": o["f_orig"], "step_orig_per_image_s": o["f_orig"] * o["step_ratio"],
           "step_cpu_per_image_s": c["s_cpu"]["median"] / 8, "f_cpu_s": c["f_cpu"]["median"],
           "ensemble_cpu_s": e["t_cpu"], "seg_cpu_s": sc["t"] + sc["t_read"]}
    result = {"rows": rows, "notes": [], "raw": raw}
    emit(result, args.json)
    return result


if __name__ == "__main__":
    main()
