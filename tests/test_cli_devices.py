"""Every --device of the kit's CLIs offers runtime.DEVICE_CHOICES and defaults to auto, and
seg predict --exported hands --device to the exported predictor (issue 16.10)."""
from __future__ import annotations

import argparse

import pytest

from gamma_kit.runtime import DEVICE_CHOICES


def _device_actions(parser: argparse.ArgumentParser, path: str = ""):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _device_actions(sub, f"{path} {name}".strip())
        elif action.dest == "device":
            yield path, action


def test_every_device_flag_defaults_to_auto():
    from gamma_kit.fovea.__main__ import build_parser as fovea_parser
    from gamma_kit.fovea.config import load_config
    from gamma_kit.resources import shipped_configs
    from gamma_kit.seg.__main__ import build_parser as seg_parser

    seen = {}
    for prog, parser in (("seg", seg_parser()), ("fovea", fovea_parser())):
        for path, action in _device_actions(parser):
            seen[f"{prog} {path}"] = action.default
            assert tuple(action.choices) == DEVICE_CHOICES, (prog, path)
    assert {"seg train", "seg predict", "seg evaluate", "seg demo", "fovea train", "fovea cv", "fovea predict",
            "fovea demo"} <= set(seen)
    # fovea train/cv leave it unset so that the config's train.device decides: auto in every shipped config
    assert {k for k, v in seen.items() if v != "auto"} == {"fovea train", "fovea cv", "fovea predict"}
    assert all(seen[k] is None for k in ("fovea train", "fovea cv", "fovea predict"))
    assert all(load_config(p)["train"]["device"] == "auto" for _, p, _ in shipped_configs("fovea"))


def test_every_python_api_that_takes_a_device_defaults_to_auto():
    """The library's own entry points, not only the CLIs: a GPU machine gets its GPU without asking."""
    import inspect

    from gamma_kit.engine import InferenceModel
    from gamma_kit.fovea.checkpoints import ExportedModel, load_exported
    from gamma_kit.fovea.predict import predict
    from gamma_kit.seg import paddlex_api
    from gamma_kit.seg.demo import run_demo
    from gamma_kit.seg.export import StaticPredictor
    from gamma_kit.seg.predictor import SegPredictor, load_model
    from gamma_kit.seg.training import run_training

    apis = [InferenceModel, ExportedModel, load_exported, predict, paddlex_api.load_model, run_demo,
            StaticPredictor, SegPredictor.from_dir, load_model, run_training, paddlex_api.UNet.train]
    defaults = {f.__qualname__: inspect.signature(f).parameters["device"].default for f in apis}
    assert defaults == {name: "auto" for name in defaults}


def test_fovea_predict_without_device_uses_auto(monkeypatch, tmp_path):
    import gamma_kit.fovea.predict as fovea_predict
    from gamma_kit.fovea.__main__ import main

    got = {}

    def fake_predict(*args, **kwargs):
        got.update(kwargs)
        raise ValueError("stop here")

    monkeypatch.setattr(fovea_predict, "predict", fake_predict)
    assert main(["predict", "--checkpoints", str(tmp_path), "--images", str(tmp_path), "--out",
                 str(tmp_path / "s.csv")]) == 2
    assert got["device"] == "auto"


def test_demo_device_defaults_to_auto(capsys):
    from gamma_kit.demo import main

    with pytest.raises(SystemExit):
        main(["--help"])
    assert "--device {auto,cpu,gpu}" in capsys.readouterr().out


@pytest.mark.parametrize("flags, expected", [([], "auto"), (["--device", "cpu"], "cpu")])
def test_seg_predict_exported_gets_the_device(monkeypatch, tmp_path, capsys, flags, expected):
    import gamma_kit.seg.export as seg_export
    from gamma_kit.seg.__main__ import main

    got = {}

    class FakeStatic:
        def __init__(self, export_dir, **kwargs):
            got.update(kwargs, export_dir=export_dir)
            raise ValueError("stop here")

    monkeypatch.setattr(seg_export, "StaticPredictor", FakeStatic)
    assert main(["predict", "--exported", str(tmp_path), "--images", str(tmp_path), *flags]) == 2
    assert "stop here" in capsys.readouterr().err
    assert got["device"] == expected and got["export_dir"] == str(tmp_path)
