"""Heatmap codec for fovea localisation: one object encodes targets (dataset) and
decodes network outputs (inference), so the two cannot drift apart.

Conventions
- Heatmaps are float arrays of shape (H, W) = (roi_h, roi_w) at the codec's scale,
  or batches (N, H, W) / (N, 1, H, W). The original code stored them as (W, H);
  the kit uses (H, W) throughout.
- Points are (x, y) = (column, row) in *heatmap pixels*. As in the original method,
  the heatmap sample [r, c] stands for the point (c, r): encode and decode share
  this convention, so a round trip is unbiased.
- ``roi_size``, ``roi_centre``, ``radius`` and ``kernel_size`` are given in full-scale
  canonical pixels (SPEC 2); ``scale`` shrinks all of them (1/4 scale: ROI 152x100,
  radius 20, kernel 20). ``heatmap_to_canonical`` / ``canonical_to_heatmap`` move
  points between heatmap pixels and the full-scale canonical frame.

Decoders
- ``dark_kernel`` (default, the original): correlate the heatmap with a parabolic
  template ``K = 1 - (2 d / ks)^2`` (d < ks/2 from the kernel centre (ks/2, ks/2)),
  evaluated at stride 2 over the original loop bounds, the *last* maximum in the
  original loop order (x outer, y inner) wins, the position is the window corner
  + ks/2. Scores come from one FFT correlation; every window within float noise of
  the best is re-scored with the original expression (bit-identical values), so the
  chosen position is exactly the loop's, ties included. Tied windows that hold one
  value on the template support (flat-topped maps) share one re-score.
- ``dark_kernel_subpixel``: the same template at stride 1, refined by a 1-D
  parabola fit through the maximum and its neighbours in x and y.
- ``argmax``: the first maximum sample.
A heatmap whose sum is below ``empty_sum`` (original: 1000 at full scale, scaled by
scale^2) is *empty* (``empty`` set): by default (``on_empty="original"``, as the
original) its position is the original fallback (384, 240) (full-scale ROI pixels, times
scale); with ``on_empty="nan"`` it is NaN.

The original constants live here once (``ORIGINAL_*``, ``ORIGINAL_CODEC``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

try:  # scipy's pocketfft takes workers= and is ~2x faster here; scipy comes with paddleseg
    import scipy.fft as _fft
    _FFT_KW = {"workers": -1}

    def _fast_len(n: int) -> int:
        return int(_fft.next_fast_len(n, real=True))
except ImportError:  # pragma: no cover
    _fft = np.fft
    _FFT_KW = {}

    def _fast_len(n: int) -> int:
        return n

__all__ = ["HeatmapCodec", "DecodeResult", "parabolic_kernel", "DECODERS", "EMPTY_POLICIES", "ORIGINAL_CODEC",
           "ORIGINAL_EMPTY_FALLBACK", "ORIGINAL_EMPTY_SUM"]

DECODERS = ("dark_kernel", "dark_kernel_subpixel", "argmax")
EMPTY_POLICIES = ("nan", "original")

#: The original recipe's constants (SPEC 2), full-scale canonical pixels. This is their one
#: source: ``HeatmapCodec``'s defaults and ``config.DEFAULTS["codec"]`` (= ``ORIGINAL_CODEC``)
#: use them; configs/fovea/unet_heatmap.yml restates them for readers (a test checks it).
ORIGINAL_ROI_SIZE = (608, 400)
ORIGINAL_ROI_CENTRE = (1140.0, 1040.0)
ORIGINAL_RADIUS = 80
ORIGINAL_PEAK = 10.0
ORIGINAL_KERNEL_SIZE = 80          # test time (the original function's default was 112)
ORIGINAL_SIGMA = 1.0
ORIGINAL_STRIDE = 2
ORIGINAL_DECODER = "dark_kernel"
ORIGINAL_ON_EMPTY = "original"     # near-empty maps fall back to ORIGINAL_EMPTY_FALLBACK
ORIGINAL_EMPTY_SUM = 1000.0
ORIGINAL_EMPTY_FALLBACK = (384.0, 240.0)
#: ``HeatmapCodec(**ORIGINAL_CODEC)`` is the original codec (YAML-friendly lists).
ORIGINAL_CODEC = {"roi_size": list(ORIGINAL_ROI_SIZE), "roi_centre": list(ORIGINAL_ROI_CENTRE),
                  "radius": ORIGINAL_RADIUS, "peak": ORIGINAL_PEAK, "kernel_size": ORIGINAL_KERNEL_SIZE,
                  "scale": 1.0, "sigma": ORIGINAL_SIGMA, "stride": ORIGINAL_STRIDE,
                  "decoder": ORIGINAL_DECODER, "on_empty": ORIGINAL_ON_EMPTY}
#: Score differences below this fraction of sum|heatmap| / ks^2 (an upper bound of any
#: score) are treated as float noise of the FFT correlation (its error is < 1e-13 of it).
_TIE_RTOL = 1e-9
#: Near-tied windows are re-scored with the original expression in chunks of this many.
_RESCORE_CHUNK = 128
#: From this many near-tied windows on, windows whose template support holds one constant
#: value share one exact re-score (flat-topped maps: hundreds of tied windows).
_GROUP_MIN = 16


def parabolic_kernel(kernel_size: int) -> np.ndarray:
    """Return the original (ks, ks) float64 template ``1 - (2 d / ks)^2`` for
    d < ks/2, else 0, with d measured from (ks/2, ks/2) in sample indices."""
    idx = np.arange(kernel_size, dtype=np.float64) - kernel_size / 2
    dist = np.sqrt(idx[:, None] ** 2 + idx[None, :] ** 2) * 2 / kernel_size
    return np.where(dist < 1, 1 - dist ** 2, 0.0)


@dataclass
class DecodeResult:
    """Decoded positions of a batch of heatmaps.

    xy: (N, 2) float64 (x, y) in heatmap pixels (NaN where empty and on_empty="nan");
    score: (N,) the winning template score (or heatmap value for argmax; NaN for empty
        maps under the template decoders, which do not search them);
    empty: (N,) bool, heatmap sum below the codec's ``empty_sum``.
    """

    xy: np.ndarray
    score: np.ndarray
    empty: np.ndarray


class HeatmapCodec:
    """Encode fovea points as the original heatmap target and decode heatmaps.

    Args:
        roi_size: (w, h) of the region of interest, full-scale canonical pixels.
        radius: target radius r (target is 0 for d >= r), full-scale pixels.
        peak: target value at the centre (original 10).
        kernel_size: dark-kernel template size ks, full-scale pixels (original 80
            at test time).
        scale: working scale; sizes above are multiplied by it and rounded.
        sigma: target shape, ``peak * exp(-(d / (r * sigma))^2)`` (original 1).
        roi_centre: (x, y) centre of the ROI in the full-scale canonical frame.
        stride: dark-kernel search stride (original 2).
        decoder: one of ``DECODERS``.
        on_empty: ``"original"`` (the fallback (384, 240) x scale; default) or ``"nan"``
            (an explicit empty result).
        empty_sum: heatmap sum below which a map is empty; default 1000 * scale^2.
    """

    def __init__(self, roi_size: Sequence[int] = ORIGINAL_ROI_SIZE, radius: float = ORIGINAL_RADIUS,
                 peak: float = ORIGINAL_PEAK, kernel_size: int = ORIGINAL_KERNEL_SIZE, scale: float = 1.0,
                 sigma: float = ORIGINAL_SIGMA, roi_centre: Sequence[float] = ORIGINAL_ROI_CENTRE,
                 stride: int = ORIGINAL_STRIDE, decoder: str = ORIGINAL_DECODER,
                 on_empty: str = ORIGINAL_ON_EMPTY, empty_sum: float | None = None) -> None:
        if decoder not in DECODERS:
            raise ValueError(f"decoder must be one of {DECODERS}, got {decoder!r}")
        if on_empty not in EMPTY_POLICIES:
            raise ValueError(f"on_empty must be one of {EMPTY_POLICIES}, got {on_empty!r}")
        if not scale > 0:
            raise ValueError(f"scale must be > 0, got {scale}")
        self.scale = float(scale)
        self.roi_size_full = (int(roi_size[0]), int(roi_size[1]))
        self.roi_centre = (float(roi_centre[0]), float(roi_centre[1]))
        self.width = int(round(self.roi_size_full[0] * self.scale))
        self.height = int(round(self.roi_size_full[1] * self.scale))
        self.radius = float(radius) * self.scale
        self.peak = float(peak)
        self.sigma = float(sigma)
        self.kernel_size = int(round(kernel_size * self.scale))
        self.stride = int(stride)
        if self.kernel_size < 2 or self.kernel_size > min(self.width, self.height):
            raise ValueError(f"kernel_size {kernel_size} x scale {scale} = {self.kernel_size} px must be "
                             f"in [2, {min(self.width, self.height)}] (the heatmap is "
                             f"{self.width}x{self.height})")
        if self.radius <= 0 or self.stride < 1:
            raise ValueError(f"radius and stride must be positive, got {radius}, {stride}")
        self.decoder = decoder
        self.on_empty = on_empty
        self.empty_sum = (ORIGINAL_EMPTY_SUM * self.scale ** 2 if empty_sum is None
                          else float(empty_sum))
        self.kernel = parabolic_kernel(self.kernel_size)
        self._kernel_fft: np.ndarray | None = None
        # FFT grid: padded to sizes with small prime factors (608 = 2^5 * 19 -> 625 = 5^4: 1.5x faster)
        self._fft_shape = (_fast_len(self.height), _fast_len(self.width))
        # the template support (K > 0) row by row: a disc, so each row is one run of columns,
        # the supported rows are contiguous and the middle column lies in every run
        support = self.kernel > 0
        self._sup_rows = np.flatnonzero(support.any(axis=1))
        self._sup_lo = support[self._sup_rows].argmax(axis=1)
        self._sup_hi = self.kernel_size - support[self._sup_rows, ::-1].argmax(axis=1)  # exclusive

    # ------------------------------------------------------------------ geometry
    @property
    def heatmap_size(self) -> tuple[int, int]:
        """(w, h) of the heatmap in pixels."""
        return self.width, self.height

    @property
    def roi_origin(self) -> tuple[float, float]:
        """Top-left (x, y) of the ROI in the full-scale canonical frame ((836, 840))."""
        return (self.roi_centre[0] - self.roi_size_full[0] / 2,
                self.roi_centre[1] - self.roi_size_full[1] / 2)

    @property
    def roi_origin_px(self) -> tuple[int, int]:
        """Top-left (x, y) of the fixed-ROI crop in pixels of the scaled canonical image."""
        return (int(round(self.roi_origin[0] * self.scale)), int(round(self.roi_origin[1] * self.scale)))

    def origins_px(self, centres: np.ndarray | None = None, n: int | None = None) -> np.ndarray:
        """(N, 2) int top-left corners, in pixels of the scaled canonical image, of ROI crops
        centred at ``centres`` (N, 2) full-scale canonical (rounded as ``roi_origin_px``, so
        the fixed centre gives exactly the fixed ROI); None: the fixed ROI, ``n`` times."""
        if centres is None:
            return np.tile(np.asarray(self.roi_origin_px, np.int64), (int(n or 0), 1))
        c = np.asarray(centres, dtype=np.float64).reshape(-1, 2) - np.asarray(self.roi_size_full) / 2
        return np.round(c * self.scale).astype(np.int64)

    def heatmap_to_canonical(self, xy: np.ndarray, origins: np.ndarray | None = None) -> np.ndarray:
        """(N, 2) heatmap pixels of ROI crops -> (N, 2) full-scale canonical. ``origins``:
        (N, 2) crop corners from ``origins_px`` (default: the fixed ROI)."""
        o = np.asarray(self.roi_origin_px if origins is None else origins, dtype=np.float64)
        return (np.asarray(xy, dtype=np.float64) + o) / self.scale

    def canonical_to_heatmap(self, xy: np.ndarray, origins: np.ndarray | None = None) -> np.ndarray:
        """(N, 2) full-scale canonical -> (N, 2) heatmap pixels of the ROI crops (the inverse)."""
        o = np.asarray(self.roi_origin_px if origins is None else origins, dtype=np.float64)
        return np.asarray(xy, dtype=np.float64) * self.scale - o

    # ------------------------------------------------------------------ encode
    def encode(self, xy: np.ndarray) -> np.ndarray:
        """Target heatmaps ``peak * exp(-(d / (r sigma))^2)`` for d < r, else 0.

        xy: (2,) or (N, 2) points in heatmap pixels. Returns float32 (H, W) or
        (N, H, W); d is measured from sample [r, c] taken as point (c, r).
        """
        pts = np.asarray(xy, dtype=np.float64)
        single = pts.ndim == 1
        pts = np.atleast_2d(pts)
        if pts.shape[-1] != 2 or pts.ndim != 2:
            raise ValueError(f"points must have shape (2,) or (N, 2), got {np.shape(xy)}")
        n = len(pts)
        # the target is 0 beyond r: evaluate only a (b, b) box around each point, all points at
        # once, and paste the boxes into a zero canvas padded by b so no index leaves it
        b = 2 * int(np.ceil(self.radius)) + 2
        c0 = np.floor(pts[:, 0]).astype(np.int64) - b // 2 + 1   # box corner (may lie outside)
        r0 = np.floor(pts[:, 1]).astype(np.int64) - b // 2 + 1
        off = np.arange(b)
        cols = c0[:, None] + off                                    # (n, b) sample columns
        rows = r0[:, None] + off
        dx2 = (cols[:, None, :] - pts[:, 0, None, None]) ** 2
        dy2 = (rows[:, :, None] - pts[:, 1, None, None]) ** 2
        d = np.sqrt(dx2 + dy2) / self.radius
        vals = np.where(d < 1, self.peak * np.exp(-(d / self.sigma) ** 2), 0.0).astype(np.float32)
        canvas = np.zeros((n, self.height + 2 * b, self.width + 2 * b), np.float32)
        cc = np.clip(cols, -b, self.width + b - 1) + b               # far-away points: clipped, and
        rr = np.clip(rows, -b, self.height + b - 1) + b              # their boxes are all 0 there
        inside = ((cols >= -b) & (cols < self.width + b))[:, None, :] & \
            ((rows >= -b) & (rows < self.height + b))[:, :, None]
        canvas[np.arange(n)[:, None, None], rr[:, :, None], cc[:, None, :]] = np.where(inside, vals, 0)
        maps = canvas[:, b:b + self.height, b:b + self.width]
        maps = np.ascontiguousarray(maps)
        return maps[0] if single else maps

    # ------------------------------------------------------------------ decode
    def _as_batch(self, heatmaps: np.ndarray) -> np.ndarray:
        hm = np.asarray(heatmaps)
        if hm.ndim == 4 and hm.shape[1] == 1:
            hm = hm[:, 0]
        elif hm.ndim == 2:
            hm = hm[None]
        if hm.ndim != 3 or hm.shape[1:] != (self.height, self.width):
            raise ValueError(f"heatmaps must have shape (H, W), (N, H, W) or (N, 1, H, W) with "
                             f"(H, W) = ({self.height}, {self.width}), got {np.shape(heatmaps)}")
        return hm

    def _correlate(self, hm: np.ndarray) -> np.ndarray:
        """Dense template scores: (N, H - ks + 1, W - ks + 1), mean of window * K."""
        ks = self.kernel_size
        shape = self._fft_shape
        if self._kernel_fft is None:
            self._kernel_fft = np.conj(_fft.rfft2(self.kernel, s=shape))
        spec = _fft.rfft2(hm.astype(np.float64), s=shape, **_FFT_KW)
        spec *= self._kernel_fft
        full = _fft.irfft2(spec, s=shape, **_FFT_KW)
        # circular correlation over a zero-padded (>= H, >= W) grid: offsets up to
        # (H - ks, W - ks) never wrap
        return full[:, : self.height - ks + 1, : self.width - ks + 1] / (ks * ks)

    def _exact_scores(self, hm2d: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """The original's score ``np.mean(window * K)`` for windows with corners (rows, cols),
        (M,) float64. A row-wise mean of the contiguous (M, ks*ks) products runs the same
        pairwise summation as the original's per-window ``np.mean``: the values are identical."""
        ks = self.kernel_size
        windows = np.lib.stride_tricks.sliding_window_view(hm2d, (ks, ks))
        out = np.empty(len(rows), dtype=np.float64)
        for s in range(0, len(rows), _RESCORE_CHUNK):
            w = windows[rows[s:s + _RESCORE_CHUNK], cols[s:s + _RESCORE_CHUNK]]
            out[s:s + _RESCORE_CHUNK] = np.multiply(w, self.kernel).reshape(len(w), -1).mean(axis=1)
        return out

    def _constant_support(self, hm2d: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """(M,) bool: the window with corner (rows, cols) holds one value on the template
        support. Counts unequal neighbour pairs inside the support with integer prefix sums:
        horizontal pairs along each row's run, vertical pairs down the middle column."""
        ks, mid = self.kernel_size, self.kernel_size // 2
        a = self._sup_rows
        r0, c0 = int(rows.min()), int(cols.min())     # only the box the windows cover
        box = hm2d[r0:int(rows.max()) + ks, c0:int(cols.max()) + ks]
        rows, cols = rows - r0, cols - c0
        dh = np.zeros(box.shape, np.int32)
        np.cumsum(box[:, 1:] != box[:, :-1], axis=1, out=dh[:, 1:])     # dh[y, x]: pairs left of x
        dv = np.zeros(box.shape, np.int32)
        np.cumsum(box[1:] != box[:-1], axis=0, out=dv[1:])              # dv[y, x]: pairs above y
        width = box.shape[1]
        base = (rows * width + cols)[:, None]                             # flat gathers: cheaper
        dh = dh.ravel()
        unequal = (dh[base + (a * width + self._sup_hi - 1)] - dh[base + (a * width + self._sup_lo)]).sum(axis=1)
        unequal += dv[rows + a[-1], cols + mid] - dv[rows + a[0], cols + mid]
        return unequal == 0

    def _rescore(self, hm2d: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """Exact scores of the windows (rows, cols), as :meth:`_exact_scores` returns them.

        Windows that hold one value v on the template support have products v * K there and
        0 elsewhere (K = 0 off the support; the map is finite), so they share one exact score
        per v: one representative per value is re-scored. (A zero's sign can differ off the
        support; it cannot change a non-zero sum, and -0 == 0 in the comparisons.)"""
        if len(rows) < _GROUP_MIN or not np.isfinite(hm2d).all():
            return self._exact_scores(hm2d, rows, cols)
        const = self._constant_support(hm2d, rows, cols)
        out = np.empty(len(rows), dtype=np.float64)
        rest = np.flatnonzero(~const)
        out[rest] = self._exact_scores(hm2d, rows[rest], cols[rest])
        grouped = np.flatnonzero(const)
        if len(grouped):
            mid_r = self._sup_rows[len(self._sup_rows) // 2]
            values = hm2d[rows[grouped] + mid_r, cols[grouped] + self.kernel_size // 2]
            _, first, inverse = np.unique(values, return_index=True, return_inverse=True)
            rep = grouped[first]
            out[grouped] = self._exact_scores(hm2d, rows[rep], cols[rep])[inverse.ravel()]
        return out

    def _dark_kernel_one(self, hm2d: np.ndarray, dense: np.ndarray) -> tuple[float, float, float]:
        ks, st = self.kernel_size, self.stride
        n_i = (self.width - ks) // st   # original loop bounds, x (outer loop)
        n_j = (self.height - ks) // st  # y (inner loop)
        if n_i < 1 or n_j < 1:
            raise ValueError(f"kernel {ks} px with stride {st} leaves no window in a "
                             f"{self.width}x{self.height} heatmap")
        # loop order: i (x) outer, j (y) inner -> scores laid out as (i, j)
        scores = dense[: n_j * st : st, : n_i * st : st].T
        flat = scores.ravel()
        best = flat.max()
        bound = np.abs(hm2d).sum(dtype=np.float64) / (ks * ks)
        tol = _TIE_RTOL * max(bound, np.finfo(np.float64).tiny)
        cand = np.flatnonzero(flat >= best - tol)
        # every near-tie is re-scored exactly as the loop did (bit-identical values), so the
        # "last maximum wins" rule sees the loop's own numbers; on flat-topped maps the many
        # tied windows with one value on the support share one re-score
        exact = self._rescore(hm2d, (cand % n_j) * st, (cand // n_j) * st)
        k = cand[np.flatnonzero(exact == exact.max())[-1]]
        best = exact.max()
        i, j = divmod(int(k), n_j)
        return i * st + ks / 2, j * st + ks / 2, float(best)

    def _subpixel_one(self, dense: np.ndarray) -> tuple[float, float, float]:
        ks = self.kernel_size
        r, c = np.unravel_index(int(np.argmax(dense)), dense.shape)

        def offset(m1: float, m0: float, p1: float) -> float:
            den = m1 - 2 * m0 + p1
            return 0.0 if den >= 0 else float(np.clip(0.5 * (m1 - p1) / den, -0.5, 0.5))

        h, w = dense.shape
        ox = offset(dense[r, c - 1], dense[r, c], dense[r, c + 1]) if 0 < c < w - 1 else 0.0
        oy = offset(dense[r - 1, c], dense[r, c], dense[r + 1, c]) if 0 < r < h - 1 else 0.0
        return c + ox + ks / 2, r + oy + ks / 2, float(dense[r, c])

    def decode(self, heatmaps: np.ndarray, decoder: str | None = None) -> DecodeResult:
        """Decode heatmaps of shape (H, W), (N, H, W) or (N, 1, H, W).

        Returns a :class:`DecodeResult` with (N, 2) positions in heatmap pixels.
        """
        decoder = decoder or self.decoder
        if decoder not in DECODERS:
            raise ValueError(f"decoder must be one of {DECODERS}, got {decoder!r}")
        hm = self._as_batch(heatmaps)
        n = hm.shape[0]
        xy = np.empty((n, 2), dtype=np.float64)
        score = np.empty(n, dtype=np.float64)
        empty = hm.reshape(n, -1).sum(axis=1, dtype=np.float64) < self.empty_sum
        if decoder == "argmax":
            flat = hm.reshape(n, -1)
            idx = flat.argmax(axis=1)
            xy[:, 0], xy[:, 1] = idx % self.width, idx // self.width
            score[:] = flat[np.arange(n), idx]
        else:
            # empty maps are not searched (the original returned its fallback before its loop; their
            # positions are set below); one map per FFT: a batched FFT is ~2x slower per map (cache)
            score[empty] = np.nan
            for b in np.flatnonzero(~empty):
                dense = self._correlate(hm[b:b + 1])[0]
                if decoder == "dark_kernel":
                    x, y, s = self._dark_kernel_one(hm[b], dense)
                else:
                    x, y, s = self._subpixel_one(dense)
                xy[b], score[b] = (x, y), s
        if empty.any():
            if self.on_empty == "nan":
                xy[empty] = np.nan
            else:
                xy[empty] = np.asarray(ORIGINAL_EMPTY_FALLBACK) * self.scale
        return DecodeResult(xy=xy, score=score, empty=empty)

    def config(self) -> dict:
        """Constructor arguments, for saving beside checkpoints."""
        return {"roi_size": list(self.roi_size_full), "radius": self.radius / self.scale,
                "peak": self.peak, "kernel_size": self.kernel_size / self.scale,
                "scale": self.scale, "sigma": self.sigma, "roi_centre": list(self.roi_centre),
                "stride": self.stride, "decoder": self.decoder, "on_empty": self.on_empty}
