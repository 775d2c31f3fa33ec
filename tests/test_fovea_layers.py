"""The fovea package's imports run one way (issue 18): every module sits on a floor, and a module
imports only from lower floors (module-level and function-level imports alike), so there is no
import circle and no arrow back up. A new module must be given its floor here."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

FOVEA = Path(__file__).resolve().parents[1] / "gamma_kit" / "fovea"

#: 0: pieces with no fovea imports; 1: config and data; 2: a run folder on disk, the inference
#: chain; 3: a model on disk (it reads run folders), figures; 4: what builds on them (trainer,
#: export writer); 5: the entry points of training and prediction; 6-7: the faces (demo, CLI)
FLOORS = {
    "codec": 0, "model": 0, "loss": 0, "folds": 0, "roi": 0, "parallel": 0,
    "config": 1, "dataset": 1,
    "run_dir": 2, "inference": 2,
    "checkpoints": 3, "figures": 3,
    "trainer": 4, "export": 4,
    "train": 5, "predict": 5,
    "demo": 6, "__init__": 6,
    "__main__": 7,
}


def fovea_imports(path: Path) -> set[str]:
    """The gamma_kit.fovea modules that ``path`` imports anywhere in its code."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = []
        if isinstance(node, ast.ImportFrom) and node.module:
            names.append(node.module)
            if node.module == "gamma_kit.fovea":                # from gamma_kit.fovea import inference
                names += [f"gamma_kit.fovea.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        found |= {n.split(".")[2] for n in names if n.startswith("gamma_kit.fovea.")}
    return found - {path.stem}


def test_every_module_has_a_floor():
    assert sorted(p.stem for p in FOVEA.glob("*.py")) == sorted(FLOORS)


@pytest.mark.parametrize("module", sorted(FLOORS))
def test_imports_only_go_down(module):
    up = {m: FLOORS[m] for m in fovea_imports(FOVEA / f"{module}.py") if FLOORS[m] >= FLOORS[module]}
    assert not up, f"{module} (floor {FLOORS[module]}) imports {up}"


def test_the_checker_sees_function_level_imports(tmp_path):
    f = tmp_path / "x.py"
    f.write_text("def g():\n    from gamma_kit.fovea.predict import predict\n    from gamma_kit.fovea import trainer\n")
    assert fovea_imports(f) == {"predict", "trainer"}
