"""Where the kit's YAML configs are, in a source checkout and in an installed wheel.

In a checkout (``pip install -e .``) they are ``<repo>/configs``; a wheel carries a copy as
package data under ``gamma_kit/_configs`` (setup.py's build step). ``config_path("fovea/unet_heatmap_cpu.yml")``
returns the file from whichever exists, so defaults work from any working directory.
"""
from __future__ import annotations

from pathlib import Path

__all__ = ["configs_dir", "config_path"]

_PACKAGE = Path(__file__).resolve().parent


def configs_dir() -> Path:
    """The folder holding ``fovea/`` and ``seg/`` configs."""
    for d in (_PACKAGE / "_configs", _PACKAGE.parent / "configs"):
        if (d / "fovea").is_dir() and (d / "seg").is_dir():
            return d
    raise FileNotFoundError(f"gamma_kit's configs are missing: neither {_PACKAGE / '_configs'} (an installed "
                            f"wheel) nor {_PACKAGE.parent / 'configs'} (a source checkout) exists; reinstall gamma_kit")


def config_path(name: str) -> Path:
    """Path of a shipped config, e.g. ``config_path("seg/liteunet_gamma_cpu.yml")``."""
    p = configs_dir() / name
    if not p.is_file():
        raise FileNotFoundError(f"no shipped config {name!r} in {configs_dir()}")
    return p
