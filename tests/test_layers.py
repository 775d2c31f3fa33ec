"""The package's imports run one way (issue 18): no import circle anywhere in ``gamma_kit``, the
shared pieces never import a task or a face, a task never imports the other task or a face, and
inside each task every module sits on a floor and imports only from lower floors (module-level and
function-level imports alike). A new module must be given its place here."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "gamma_kit"

#: The faces: what users run (CLIs, demos, the environment report). Nothing imports them but faces.
FACES = {"demo", "evaluate", "doctor", "fovea.__main__", "fovea.demo", "seg.__main__", "seg.demo", "synth.__main__"}
TASKS = ("fovea", "seg")

#: fovea: 0 pieces with no fovea imports; 1 config and data; 2 a run folder on disk, the inference
#: chain; 3 a model on disk (it reads run folders), figures, the per-photo report; 4 what builds on
#: them (trainer, export writer); 5 the entry points of training and prediction; 6-7 the faces.
#: seg: 0 the kit's model; 1 PaddleSeg's patches, a model folder on disk; 2 data preparation, a run
#: folder; 3 training, stage 2's check of a crop; 4 the predictor; 5 post-processing; 6 the submission
#: run and the export; 7 the PaddleX-2-style API; 8-9 the faces.
FLOORS = {
    "fovea": {
        "codec": 0, "model": 0, "loss": 0, "folds": 0, "roi": 0, "parallel": 0, "augment": 0,
        "config": 1, "dataset": 1,
        "run_dir": 2, "inference": 2,
        "checkpoints": 3, "figures": 3, "report": 3,
        "trainer": 4, "export": 4,
        "train": 5, "predict": 5,
        "demo": 6, "__init__": 6,
        "__main__": 7,
    },
    "seg": {
        "models": 0,
        "compat": 1, "model_dir": 1,
        "prepare": 2, "run_dir": 2,
        "training": 3, "disc_check": 3,
        "predictor": 4,
        "postprocess": 5,
        "submission": 6, "export": 6,
        "paddlex_api": 7,
        "demo": 8, "__init__": 8,
        "__main__": 9,
    },
}


def module_name(path: Path) -> str:
    """``gamma_kit/seg/predictor.py`` -> ``seg.predictor``; a package's ``__init__`` -> the package."""
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts) or "gamma_kit"


MODULES = {module_name(p): p for p in PACKAGE.rglob("*.py")}


def kit_imports(path: Path) -> set[str]:
    """The kit's modules (as ``module_name`` gives them) that ``path`` imports anywhere in its code."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = []
        if isinstance(node, ast.ImportFrom) and node.module:   # a module, or a name inside one
            names += [f"{node.module}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        for name in names:
            if not name.startswith("gamma_kit."):
                continue
            name = name[len("gamma_kit."):]
            while name and name not in MODULES:          # data.read_image -> data; fovea.inference stays
                name = name.rpartition(".")[0]
            if name:
                found.add(name)
    return found - ({module_name(path)} if PACKAGE in path.parents else set())


GRAPH = {m: kit_imports(p) for m, p in MODULES.items()}


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def task_of(module: str) -> str | None:
    return next((t for t in TASKS if module == t or module.startswith(t + ".")), None)


def test_no_import_circle_in_the_package():
    assert circles(GRAPH) == []


def test_shared_pieces_import_no_task_and_no_face():
    bad = {m: sorted(i for i in deps if task_of(i) or i in FACES)
           for m, deps in GRAPH.items() if task_of(m) is None and m not in FACES}
    assert {m: d for m, d in bad.items() if d} == {}


def test_a_task_imports_neither_the_other_task_nor_a_face():
    bad = {}
    for m, deps in GRAPH.items():
        t = task_of(m)
        if t is None or m in FACES:
            continue
        wrong = sorted(i for i in deps if (task_of(i) not in (None, t)) or i in FACES)
        if wrong:
            bad[m] = wrong
    assert bad == {}


@pytest.mark.parametrize("task", TASKS)
def test_every_task_module_has_a_floor(task):
    assert sorted(p.stem for p in (PACKAGE / task).glob("*.py")) == sorted(FLOORS[task])


@pytest.mark.parametrize("task,module", [(t, m) for t in TASKS for m in sorted(FLOORS[t])])
def test_imports_only_go_down(task, module):
    floors = FLOORS[task]
    name = task if module == "__init__" else f"{task}.{module}"
    inside = {d.split(".", 1)[1] if "." in d else "__init__" for d in GRAPH[name] if task_of(d) == task}
    up = {m: floors[m] for m in inside if floors[m] >= floors[module]}
    assert not up, f"{name} (floor {floors[module]}) imports {up}"


def test_the_checker_sees_function_level_imports_and_circles(tmp_path):
    f = tmp_path / "x.py"
    f.write_text("def g():\n    from gamma_kit.fovea.predict import predict\n    from gamma_kit.fovea import trainer\n"
                 "    from gamma_kit.data import read_image\n")
    assert kit_imports(f) == {"fovea.predict", "fovea.trainer", "data"}
    assert circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
