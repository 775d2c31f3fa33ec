"""HeatmapCodec: encode values, round trips, and the vectorised dark-kernel decoder
against the loop re-statement of the original in bench/originals.py (including its tie rule)."""
from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pytest

from gamma_kit.fovea.codec import ORIGINAL_CODEC, HeatmapCodec, parabolic_kernel

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
from originals import original_loop_decode, original_target_loop  # noqa: E402  (the original's loops, restated once)


@pytest.fixture(scope="module")
def quarter() -> HeatmapCodec:
    return HeatmapCodec(scale=0.25)


def test_sizes_follow_scale(quarter):
    full = HeatmapCodec()
    assert full.heatmap_size == (608, 400) and full.kernel_size == 80 and full.radius == 80
    assert quarter.heatmap_size == (152, 100) and quarter.kernel_size == 20 and quarter.radius == 20
    assert full.roi_origin == (836.0, 840.0)
    assert quarter.empty_sum == pytest.approx(1000 / 16)


def test_kernel_values():
    k = parabolic_kernel(80)
    assert k.shape == (80, 80) and k[40, 40] == 1.0
    assert k[40, 60] == pytest.approx(1 - (2 * 20 / 80) ** 2)
    assert k[40, 0] == 0.0 and k[0, 0] == 0.0       # d = ks/2 is outside (strict <)
    assert np.array_equal(k, k.T)


def test_encode_known_values(quarter):
    m = quarter.encode([50.0, 40.0])
    assert m.shape == (100, 152) and m.dtype == np.float32
    assert m[40, 50] == pytest.approx(10.0)
    assert m[40, 60] == pytest.approx(10 * math.exp(-0.25))  # d = r/2
    assert m[40, 70] == 0.0 and m[40, 69] > 0                 # d = r excluded
    ref = original_target_loop(50.3, 40.7, 152, 100, 20)
    np.testing.assert_allclose(quarter.encode([50.3, 40.7]), ref, rtol=1e-6, atol=1e-6)


def test_encode_batch_and_bad_shape(quarter):
    maps = quarter.encode(np.array([[10.0, 10.0], [100.0, 60.0]]))
    assert maps.shape == (2, 100, 152)
    assert maps[1, 60, 100] == pytest.approx(10.0)
    with pytest.raises(ValueError, match="shape"):
        quarter.encode(np.zeros((2, 3)))


def test_point_transforms_round_trip(quarter):
    pts = np.array([[1140.0, 1040.0], [900.5, 1200.25]])
    hm = quarter.canonical_to_heatmap(pts)
    np.testing.assert_allclose(hm[0], [76.0, 50.0])
    np.testing.assert_allclose(quarter.heatmap_to_canonical(hm), pts)


@pytest.mark.parametrize("decoder,tol", [("dark_kernel", 0.0), ("dark_kernel_subpixel", 0.35),
                                         ("argmax", 0.0)])
def test_round_trip_on_grid(quarter, decoder, tol):
    # even coordinates lie on the stride-2 grid of window centres (corner + ks/2)
    pts = np.array([[40.0, 30.0], [76.0, 50.0], [100.0, 60.0]])
    res = quarter.decode(quarter.encode(pts), decoder=decoder)
    np.testing.assert_allclose(res.xy, pts, atol=tol)
    assert not res.empty.any()


def test_subpixel_beats_stride_quantisation(quarter):
    pts = np.array([[61.0, 41.0], [77.3, 52.7]])
    grid = quarter.decode(quarter.encode(pts)).xy
    sub = quarter.decode(quarter.encode(pts), decoder="dark_kernel_subpixel").xy
    assert np.abs(sub - pts).max() < 0.3
    assert np.abs(grid - pts).max() >= 0.7


def test_matches_loop_on_random_heatmaps(quarter):
    rng = np.random.default_rng(7)
    for k in range(40):
        if k % 4 == 0:   # pure noise: many close scores
            hm = rng.random((100, 152)).astype(np.float32)
        else:            # noisy peak
            p = rng.uniform([10, 10], [142, 90])
            hm = quarter.encode(p) * rng.uniform(0.3, 1.7, (100, 152)).astype(np.float32)
        got = quarter.decode(hm).xy[0]
        assert tuple(got) == original_loop_decode(hm, 20), k


def test_matches_loop_full_scale():
    codec = HeatmapCodec()
    rng = np.random.default_rng(3)
    hm = codec.encode([300.0, 190.0]) + rng.random((400, 608), dtype=np.float32)
    assert tuple(codec.decode(hm).xy[0]) == original_loop_decode(hm, 80)


def test_constructed_ties_last_window_wins(quarter):
    # two identical peaks on the window grid: the original keeps the later one in
    # its loop order (x outer, y inner): larger x wins, then larger y
    one = quarter.encode([40.0, 30.0])
    hm = np.maximum(one, np.roll(one, 60, axis=1))          # copy at x = 100
    assert tuple(quarter.decode(hm).xy[0]) == (100.0, 30.0) == original_loop_decode(hm, 20)
    hm = np.maximum(one, np.roll(one, 30, axis=0))          # copy at y = 60, same x
    assert tuple(quarter.decode(hm).xy[0]) == (40.0, 60.0) == original_loop_decode(hm, 20)
    flat = np.ones((100, 152), np.float32)                   # every interior window ties
    assert tuple(quarter.decode(flat).xy[0]) == original_loop_decode(flat, 20)


def test_loop_bounds_quirk(quarter):
    # the original's range((W - ks) // 2) never reaches the last valid window, so a
    # peak at the far corner decodes one step inside
    hm = quarter.encode([142.0, 90.0])
    assert tuple(quarter.decode(hm).xy[0]) == original_loop_decode(hm, 20) == (140.0, 88.0)


def test_empty_heatmap_policies():
    zero = np.zeros((100, 152), np.float32)
    res = HeatmapCodec(scale=0.25, on_empty="nan").decode(zero)
    assert res.empty[0] and np.isnan(res.xy).all()
    for codec in (HeatmapCodec(scale=0.25), HeatmapCodec(scale=0.25, on_empty="original")):  # default: original
        res = codec.decode(zero)
        assert res.empty[0] and tuple(res.xy[0]) == (96.0, 60.0)   # (384, 240) / 4
    res = HeatmapCodec(on_empty="original").decode(np.zeros((400, 608)))
    assert tuple(res.xy[0]) == (384.0, 240.0)
    weak = HeatmapCodec(scale=0.25).encode([50.0, 50.0]) * 0.005   # sum ~ 40 < 62.5
    assert HeatmapCodec(scale=0.25).decode(weak).empty[0]


def test_bad_inputs(quarter):
    with pytest.raises(ValueError, match=r"\(H, W\) = \(100, 152\)"):
        quarter.decode(np.zeros((400, 608)))
    with pytest.raises(ValueError, match="decoder"):
        HeatmapCodec(decoder="soft")
    with pytest.raises(ValueError, match="on_empty"):
        HeatmapCodec(on_empty="zero")
    with pytest.raises(ValueError, match="kernel_size"):
        HeatmapCodec(kernel_size=500)


def test_batch_layouts(quarter):
    maps = quarter.encode(np.array([[40.0, 30.0], [80.0, 50.0]]))
    a = quarter.decode(maps).xy
    b = quarter.decode(maps[:, None]).xy
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(a, [[40, 30], [80, 50]])


def test_flat_topped_peaks_match_loop(quarter):
    # peaks clipped flat: hundreds of windows tie exactly, others differ by float noise only
    rng = np.random.default_rng(11)
    for _ in range(6):
        hm = np.minimum(quarter.encode(rng.uniform([15, 15], [137, 85])) * 1.5, 6.0)
        assert tuple(quarter.decode(hm).xy[0]) == original_loop_decode(hm, 20)
    full = HeatmapCodec()
    hm = np.minimum(full.encode([250.0, 180.0]) * 1.5, 6.0)
    assert tuple(full.decode(hm).xy[0]) == original_loop_decode(hm, 80)


def _plateau_maps(codec: HeatmapCodec, rng: np.random.Generator) -> list[np.ndarray]:
    """Maps with flat regions: clipped peaks, two plateaus (equal and unequal heights),
    a plateau over a negative background, and random 0/1 blocks (flat patches with edges)."""
    w, h = codec.heatmap_size
    m = codec.radius
    peak = lambda: codec.encode(rng.uniform([m, m], [w - m, h - m]))  # noqa: E731
    return [np.minimum(peak() * 1.5, 6.0),
            np.maximum(np.minimum(peak() * 1.5, 6.0), np.minimum(peak() * 1.5, 6.0)),
            np.maximum(np.minimum(peak() * 1.5, 6.0), np.minimum(peak() * 1.5, 5.0)),
            np.minimum(peak() * 1.5, 6.0) - 0.05,
            np.kron(rng.integers(0, 2, (h // 25 + 1, w // 25 + 1)), np.ones((25, 25)))[:h, :w] * 3.0]


@pytest.mark.parametrize("kernel_size", [80, 84])   # 20 and 21 px at 1/4 scale: even and odd
def test_constant_support_matches_brute_force(kernel_size):
    codec = HeatmapCodec(scale=0.25, kernel_size=kernel_size)
    ks, support = codec.kernel_size, codec.kernel > 0
    rng = np.random.default_rng(5)
    for hm in _plateau_maps(codec, rng):
        hm = hm.astype(np.float64)
        rows, cols = (g.ravel() for g in np.mgrid[:codec.height - ks + 1, :codec.width - ks + 1])
        windows = np.lib.stride_tricks.sliding_window_view(hm, (ks, ks))[rows, cols]
        on = windows[:, support]
        brute = (on == on[:, :1]).all(axis=1)
        assert brute.any() and not brute.all()
        np.testing.assert_array_equal(codec._constant_support(hm, rows, cols), brute)


def test_grouped_rescore_is_bit_identical(quarter):
    # windows sharing one value on the support share one re-score: the values must be the
    # ones a full re-score gives, bit for bit (also over a negative background, where the
    # products off the support are -0.0), and maps that are not finite skip the grouping
    rng = np.random.default_rng(9)
    n_i, n_j = (152 - 20) // 2, (100 - 20) // 2
    k = np.arange(n_i * n_j)
    rows, cols = (k % n_j) * 2, (k // n_j) * 2
    for hm in _plateau_maps(quarter, rng):
        hm = hm.astype(np.float64)
        np.testing.assert_array_equal(quarter._rescore(hm, rows, cols), quarter._exact_scores(hm, rows, cols))
    hm[0, 0] = np.inf
    with np.errstate(invalid="ignore"):   # inf * 0 = nan in the windows that hold it, as in the loop
        np.testing.assert_array_equal(quarter._rescore(hm, rows, cols), quarter._exact_scores(hm, rows, cols))


def test_plateau_maps_match_loop():
    rng = np.random.default_rng(21)
    for codec in (HeatmapCodec(scale=0.25), HeatmapCodec(scale=0.25, kernel_size=84)):
        for hm in _plateau_maps(codec, rng):
            assert tuple(codec.decode(hm).xy[0]) == original_loop_decode(hm, codec.kernel_size)


def test_original_constants_have_one_source():
    """codec.ORIGINAL_CODEC is the one copy: the codec's defaults, config.DEFAULTS and the
    shipped original YAML (which restates it for readers) all agree with it, on_empty included."""
    import inspect

    import yaml

    from gamma_kit.fovea.config import DEFAULTS, load_config
    from gamma_kit.resources import config_path

    assert DEFAULTS["codec"] == ORIGINAL_CODEC and ORIGINAL_CODEC["on_empty"] == "original"
    defaults = {k: v.default for k, v in inspect.signature(HeatmapCodec).parameters.items()
                if k in ORIGINAL_CODEC}
    assert {k: list(v) if isinstance(v, tuple) else v for k, v in defaults.items()} == ORIGINAL_CODEC
    assert HeatmapCodec().config() == HeatmapCodec(**ORIGINAL_CODEC).config()
    path = config_path("fovea/unet_heatmap.yml")
    restated = yaml.safe_load(path.read_text())["codec"]
    assert restated == {k: ORIGINAL_CODEC[k] for k in restated}, path
    assert load_config(path)["codec"] == ORIGINAL_CODEC
    assert load_config(config_path("fovea/unet_heatmap_cpu.yml"))["codec"]["on_empty"] == "original"
