"""Shared by the fovea inference and export tests: tiny synthetic data and a run folder of
random tiny fold models (the weights do not matter when two paths are compared)."""
from __future__ import annotations

from pathlib import Path

from gamma_kit.fovea.config import build_model, dump_config, load_config
from gamma_kit.fovea.demo import CPU_CONFIG


def tiny_synth(root: Path, n_train: int, n_test: int, seed: int) -> Path:
    """gamma_kit.synth data at both GAMMA aspect ratios, ~1/4 size."""
    from gamma_kit.synth import generate

    generate(root, n_train, n_test, seed=seed, sizes=[(748, 500), (489, 484)], progress=False)
    return root


def random_run(run: Path, seeds: tuple[int, ...] = (11, 12)) -> tuple[Path, dict]:
    """``run/fold<k>/best.pdparams`` + ``config.yml`` of width-4 CPU-config models, one per seed,
    on the fixed ROI window (the old chains these runs are compared with had no other; a
    disc-anchored run also needs the offset that training learns)."""
    import paddle

    cfg = load_config(CPU_CONFIG, ["model.width=4", "train.device=cpu", "roi.anchor=fixed"])
    for k, seed in enumerate(seeds, 1):
        paddle.seed(seed)
        d = run / f"fold{k}"
        d.mkdir(parents=True)
        paddle.save(build_model(cfg).state_dict(), str(d / "best.pdparams"))
        (d / "config.yml").write_text(dump_config(cfg))
    return run, cfg
