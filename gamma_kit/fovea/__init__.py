"""GAMMA task 2: fovea localisation with the 2nd-place (November round) U-Net heatmap
method (SPEC 2), made configurable and fast.

Modules: ``codec`` (heatmap encode/decode), ``model`` (U-Net), ``loss``, ``folds``,
``config``, ``dataset``, ``train``, ``predict``, ``figures``, ``demo``.
Command line: ``python -m gamma_kit.fovea --help``.
"""
from gamma_kit.fovea.codec import HeatmapCodec

__all__ = ["HeatmapCodec"]
