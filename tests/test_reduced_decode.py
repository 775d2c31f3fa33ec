"""Reduced JPEG decode (data.read_image_reduced; a fovea config's data.decode: reduced): the photo's
geometry unchanged, nearly the same canonical pixels, and a whole decode wherever the scale does not
allow a half-size one."""
from __future__ import annotations

import numpy as np
import pytest
import yaml
from PIL import Image

import gamma_kit  # noqa: F401
from gamma_kit.data import load_fovea_split, read_image, read_image_reduced, write_image
from gamma_kit.fovea.config import load_config
from gamma_kit.fovea.dataset import CanonicalCache
from gamma_kit.fovea.demo import CPU_CONFIG
from gamma_kit.geometry import CanonicalFrame, reduced_decode_factor
from gamma_kit.synth import generate

from fovea_fixtures import random_run


def _smooth(h: int, w: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (h // 16 + 2, w // 16 + 2, 3), dtype=np.uint8)
    import cv2

    return cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)


@pytest.fixture(scope="module")
def gamma_photos(tmp_path_factory):
    """Two synthetic photos at the GAMMA cameras' full sizes (the sizes a half-size decode is for)."""
    root = tmp_path_factory.mktemp("gamma")
    generate(root, 2, 0, seed=3, sizes=[(2992, 2000), (1956, 1934)], progress=False)
    return load_fovea_split(root, "training").images


def test_read_image_reduced_halves_a_jpeg(tmp_path):
    img = _smooth(203, 301)
    p = write_image(tmp_path / "odd.jpg", img)
    half, factor, size = read_image_reduced(p, 2)
    assert (factor, size, half.shape) == (2, (301, 203), (102, 151, 3))   # ceil(203 / 2) x ceil(301 / 2)
    full = read_image(p).astype(np.float32)
    pad = np.pad(full, ((0, 1), (0, 1), (0, 0)), mode="edge")
    blocks = pad.reshape(102, 2, 151, 2, 3).mean(axis=(1, 3))          # pixel i covers pixels 2i, 2i + 1
    assert np.abs(blocks - half).mean() < 2.0
    png = write_image(tmp_path / "odd.png", img)
    same, factor, size = read_image_reduced(png, 2)                    # not a JPEG: whole
    assert factor == 1 and size == (301, 203) and np.array_equal(same, read_image(png))
    with pytest.raises(ValueError, match="1, 2, 4 or 8"):
        read_image_reduced(p, 3)


def test_read_image_reduced_decodes_turned_jpegs_whole(tmp_path):
    p = tmp_path / "turned.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(_smooth(64, 96)).save(p, exif=exif)
    img, factor, size = read_image_reduced(p, 2)
    assert factor == 1 and size == (64, 96) and np.array_equal(img, read_image(p))


def test_reduced_decode_factor_known_answers():
    assert reduced_decode_factor((2992, 2000), 0.25) == reduced_decode_factor((1956, 1934), 0.25) == 2
    assert reduced_decode_factor((4288, 2848), 0.25) == 2          # IDRiD
    assert reduced_decode_factor((2992, 2000), 1.0) == 1           # the original config's full scale
    assert reduced_decode_factor((748, 500), 0.25) == 1            # a small photo: the network needs its pixels
    frame = CanonicalFrame((2992, 2000), 1.0, (518.0, 33.0), False)
    assert frame.allows_factor(2, 0.25) and not frame.allows_factor(2, 0.5) and frame.allows_factor(1, 1.0)


def test_warp_image_checks_the_reduced_size(gamma_photos):
    frame = CanonicalFrame((2992, 2000), 1.0, (518.0, 33.0), False)
    with pytest.raises(ValueError, match=r"at 1/2: 1496x1000"):
        frame.warp_image(np.zeros((2000, 2992, 3), np.uint8), 0.25, factor=2)


def test_reduced_cache_keeps_the_geometry_and_nearly_the_pixels(gamma_photos, tmp_path):
    for i, p in gamma_photos.items():
        full = CanonicalCache(0.25).get(i, p)
        half = CanonicalCache(0.25, tmp_path / "c", decode="reduced").get(i, p)
        assert half.size == full.size and half.frame == full.frame           # GAMMA sizes: the constants
        assert half.image.shape == full.image.shape == (484, 489, 3)
        assert np.abs(half.image.astype(np.int16) - full.image).mean() < 1.0   # grey levels
        assert np.hypot(*np.subtract(half.disc, full.disc)) < 20                # canonical px; disc ~250
        again = CanonicalCache(0.25, tmp_path / "c", decode="reduced").get(i, p)   # its own disk entries
        assert np.array_equal(again.image, half.image) and again.disc == half.disc
        assert np.array_equal(CanonicalCache(0.25, tmp_path / "c").get(i, p).image, full.image)
    with pytest.raises(ValueError, match="data.decode must be one of"):
        CanonicalCache(0.25, decode="half")
    CanonicalCache(0.25, decode="reduced").check_serves(0.25, "reduced", "the config")
    with pytest.raises(ValueError, match=r"scale 0.25 \(full decode\), the config at 0.25 \(reduced decode\)"):
        CanonicalCache(0.25).check_serves(0.25, "reduced", "the config")


def test_reduced_cache_decodes_a_small_field_whole(gamma_photos, tmp_path):
    """A 2000x2000 photo suggests a field that a half-size decode serves, but its field is ~500 px
    across: the frame found refuses the factor, and the photo is decoded whole (same item)."""
    small = read_image(next(iter(gamma_photos.values())))
    import cv2

    small = cv2.resize(small, (748, 500), interpolation=cv2.INTER_AREA)
    canvas = np.zeros((2000, 2000, 3), np.uint8)
    canvas[750:1250, 626:1374] = small
    p = write_image(tmp_path / "frame.jpg", canvas)
    assert reduced_decode_factor((2000, 2000), 0.25) == 2
    full = CanonicalCache(0.25).get("a", p)
    half = CanonicalCache(0.25, decode="reduced").get("a", p)
    assert not full.frame.allows_factor(2, 0.25)
    assert half.frame == full.frame and np.array_equal(half.image, full.image) and half.disc == full.disc


def test_config_default_decodes_whole_and_predict_refuses_mixed_decodes(tmp_path, gamma_photos):
    from gamma_kit.fovea.predict import predict

    assert load_config(CPU_CONFIG)["data"]["decode"] in ("full", "reduced")
    assert load_config("unet_heatmap.yml")["data"]["decode"] == "full"           # the original
    run, _ = random_run(tmp_path / "run")
    cfg2 = yaml.safe_load((run / "fold2" / "config.yml").read_text())
    cfg2["data"]["decode"] = "reduced" if cfg2["data"]["decode"] == "full" else "full"
    (run / "fold2" / "config.yml").write_text(yaml.safe_dump(cfg2))
    with pytest.raises(ValueError, match="decode photos differently"):
        predict([run], gamma_photos, tmp_path / "sub.csv", device="cpu", progress=False)
    assert not (tmp_path / "sub.csv").exists()
