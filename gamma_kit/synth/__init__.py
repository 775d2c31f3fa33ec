"""Synthetic GAMMA-format data: fundus photos with fovea ground truth and disc/cup masks.

For trying the kit end to end without the challenge data, and for tests::

    python -m gamma_kit.synth --out DIR --train 100 --test 100 --seed 0
    python -m gamma_kit.synth --out DIR --train 8 --test 4 --seed 0 --sizes 748x500,489x484

``render_fundus`` draws one photo (pure: everything random comes from the generator it
is given); ``generate`` writes the task 2 and task 3 layouts (see ``writer``). Images are
RGB ``uint8`` (H, W, 3), masks (H, W) ``uint8`` with 0 = cup, 128 = disc rim,
255 = background, points (x, y) = (column, row). The photos are still drawings of fundus
photos, but their disc region is made to be as hard as on real ones (real disc sizes, a
faint cup with a blurred edge, vessels bending at it, peripapillary atrophy, bright
lesions and reflexes elsewhere, varied cameras and media; ``bench/bench_synth_realism.py``
compares them with real photos): fit to exercise the pipelines and to rank methods,
not to stand in for accuracy on real eyes.
"""
from gamma_kit.synth.render import (FundusLayout, SynthSample, cup_rim_contrast, render_fundus, sample_layout,
                                    vertical_cdr)
from gamma_kit.synth.writer import DEFAULT_SIZES, META_COLUMNS, generate, parse_sizes, split_ids

__all__ = ["FundusLayout", "SynthSample", "render_fundus", "sample_layout", "vertical_cdr", "cup_rim_contrast",
           "DEFAULT_SIZES", "META_COLUMNS", "generate", "parse_sizes", "split_ids"]
