"""Where the kit's YAML configs are, in a source checkout and in an installed wheel.

In a checkout (``pip install -e .``) they are ``<repo>/configs``; a wheel carries a copy as
package data under ``gamma_kit/_configs`` (setup.py's build step). ``config_path("fovea/unet_heatmap_cpu.yml")``
returns the file from whichever exists, so defaults work from any working directory.

``resolve_config(text, task)`` is the one rule by which every ``--config`` of the kit (and the
config loaders behind them) turns what the user typed into a file: a path that exists wins;
otherwise a shipped config of ``task`` by name, so a wheel user can type
``--config roi_liteunet_cpu.yml``, ``seg/roi_liteunet_cpu.yml`` or the README's
``configs/seg/roi_liteunet_cpu.yml`` from any folder. ``shipped_configs(task)`` lists them
(``gamma-kit-seg configs``, ``gamma-kit-fovea configs``).
"""
from __future__ import annotations

import os
import re
from pathlib import Path, PurePosixPath

__all__ = ["TASKS", "configs_dir", "config_path", "shipped_configs", "resolve_config", "format_config_list"]

_PACKAGE = Path(__file__).resolve().parent
#: The config folders under ``configs_dir()``, one per task.
TASKS = ("fovea", "seg")
_SUFFIXES = (".yml", ".yaml")


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


def _check_task(task: str) -> None:
    if task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}, got {task!r}")


def _description(path: Path, limit: int = 100) -> str:
    """The first sentence (up to ``. `` or ``: ``) of the YAML's header comment, at most ``limit``
    characters; '' when the file starts without a comment."""
    header = []
    try:
        with path.open(encoding="utf-8") as f:
            for line in f:
                if not line.startswith("#"):
                    break
                header.append(line.lstrip("#").strip())
    except OSError:
        return ""
    first = re.split(r"[.:](?:\s|$)", " ".join(header), maxsplit=1)[0].strip()
    return first if len(first) <= limit else first[:limit - 3].rstrip() + "..."


def shipped_configs(task: str) -> list[tuple[str, Path, str]]:
    """The shipped configs of ``task`` ("fovea" or "seg"): (name, path, one-line description),
    sorted by name; ``_base_/`` fragments are not configs of their own and are left out."""
    _check_task(task)
    folder = configs_dir() / task
    return [(p.name, p, _description(p)) for p in sorted(folder.iterdir())
            if p.is_file() and p.suffix in _SUFFIXES]


def format_config_list(task: str) -> str:
    """The text of ``gamma-kit-<task> configs``: one line per shipped config, ``name  path  description``."""
    rows = shipped_configs(task)
    wn, wp = (max(len(str(r[k])) for r in rows) for k in (0, 1))
    return "\n".join(f"{n:<{wn}}  {str(p):<{wp}}  {d}".rstrip() for n, p, d in rows)


def resolve_config(config: str | os.PathLike, task: str) -> Path:
    """The config file that ``--config TEXT`` means for ``task``.

    A path that exists (relative to the working directory, or absolute) always wins. Otherwise
    TEXT names a shipped config: ``NAME.yml``, ``NAME``, ``<task>/NAME.yml`` or
    ``configs/<task>/NAME.yml`` finds ``configs_dir()/<task>/NAME.yml``. Raises
    ``FileNotFoundError`` naming TEXT and listing the shipped configs of ``task``, or
    ``ValueError`` when TEXT names a folder or another task's config.
    """
    _check_task(task)
    path = Path(config).expanduser()
    if path.is_file():
        return path
    if path.is_dir():
        raise ValueError(f"config {config} is a folder; expected a .yml file")
    parts = PurePosixPath(str(config).replace("\\", "/")).parts
    if parts[:1] == ("configs",):
        parts = parts[1:]
    if len(parts) == 2 and parts[0] in TASKS:
        if parts[0] != task:
            raise ValueError(f"config {config} is a {parts[0]} config; this command takes a {task} config "
                             f"(shipped: {', '.join(n for n, _, _ in shipped_configs(task))})")
        parts = parts[1:]
    if len(parts) == 1 and not path.is_absolute():
        folder = configs_dir() / task
        for name in (parts[0], *(parts[0] + s for s in _SUFFIXES if not parts[0].endswith(_SUFFIXES))):
            if (folder / name).is_file():
                return folder / name
    names = ", ".join(n for n, _, _ in shipped_configs(task))
    raise FileNotFoundError(f"config file {config} not found (no such file relative to {Path.cwd()}, and no "
                            f"shipped {task} config of that name; shipped: {names}; "
                            f"`gamma-kit-{task} configs` lists them with their paths)")
