"""gamma_kit.resources: --config NAME finds a shipped config from any folder (a path that exists wins),
unknown names list the shipped ones, and the configs commands list them with their paths."""
from __future__ import annotations

from pathlib import Path

import pytest

from gamma_kit.resources import configs_dir, format_config_list, resolve_config, shipped_configs

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def elsewhere(tmp_path, monkeypatch):
    """An empty working directory outside the repo, as a wheel user has."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.mark.parametrize("text", ["roi_liteunet_cpu.yml", "roi_liteunet_cpu", "seg/roi_liteunet_cpu.yml",
                                  "configs/seg/roi_liteunet_cpu.yml"])
def test_a_shipped_name_resolves_from_any_folder(elsewhere, text):
    assert resolve_config(text, "seg") == configs_dir() / "seg" / "roi_liteunet_cpu.yml"


def test_a_path_that_exists_wins(elsewhere):
    own = elsewhere / "roi_liteunet_cpu.yml"
    own.write_text("# mine\n")
    assert resolve_config("roi_liteunet_cpu.yml", "seg") == Path("roi_liteunet_cpu.yml")
    assert resolve_config(own, "seg") == own
    (elsewhere / "seg").mkdir()
    (elsewhere / "seg" / "unet_gamma_512.yml").write_text("# mine too\n")
    assert resolve_config("seg/unet_gamma_512.yml", "seg") == Path("seg/unet_gamma_512.yml")


def test_unknown_names_and_wrong_tasks_say_what_exists(elsewhere):
    with pytest.raises(FileNotFoundError) as err:
        resolve_config("roi_litunet_cpu.yml", "seg")
    msg = str(err.value)
    assert "config file roi_litunet_cpu.yml not found" in msg and str(elsewhere) in msg
    assert all(name in msg for name, _, _ in shipped_configs("seg")) and "gamma-kit-seg configs" in msg
    with pytest.raises(ValueError, match="is a seg config; this command takes a fovea config .*unet_heatmap_cpu.yml"):
        resolve_config("seg/roi_liteunet_cpu.yml", "fovea")
    with pytest.raises(FileNotFoundError, match="no shipped fovea config"):
        resolve_config("roi_liteunet_cpu.yml", "fovea")       # a seg name is not a fovea config
    with pytest.raises(FileNotFoundError, match="not found"):
        resolve_config("/no/such/dir/unet_heatmap_cpu.yml", "fovea")   # an absolute path is never a name
    with pytest.raises(FileNotFoundError, match="not found"):
        resolve_config("_base_/gamma_seg_dataset.yml", "seg")   # fragments are not configs
    (elsewhere / "folder.yml").mkdir()
    with pytest.raises(ValueError, match="folder.yml is a folder"):
        resolve_config("folder.yml", "seg")
    with pytest.raises(ValueError, match="task must be one of"):
        resolve_config("x.yml", "fundus")


def test_shipped_configs_are_the_config_files_with_their_header_line():
    for task in ("fovea", "seg"):
        rows = shipped_configs(task)
        assert [n for n, _, _ in rows] == sorted(p.name for p in (REPO / "configs" / task).glob("*.yml"))
        assert all(p.is_file() and d and not d.startswith("#") for _, p, d in rows)
        lines = format_config_list(task).splitlines()
        assert len(lines) == len(rows)
        for line, (name, path, desc) in zip(lines, rows):
            assert line.split()[:2] == [name, str(path)] and line.endswith(desc)
    assert dict((n, d) for n, _, d in shipped_configs("seg"))["roi_liteunet_cpu.yml"] == \
        "Two-stage CPU recipe, stage 2"


def test_loaders_and_clis_take_names(elsewhere, capsys):
    from gamma_kit.fovea.__main__ import main as fovea_main
    from gamma_kit.fovea.config import load_config as fovea_config
    from gamma_kit.seg.__main__ import main as seg_main
    from gamma_kit.seg.training import load_config as seg_config

    assert fovea_config("unet_heatmap_cpu.yml") == fovea_config(REPO / "configs" / "fovea" / "unet_heatmap_cpu.yml")
    assert fovea_config("fovea/unet_heatmap_cpu.yml")["name"] == "unet_heatmap_cpu"
    assert seg_config("seg/roi_liteunet_cpu.yml").dic == seg_config(REPO / "configs" / "seg" / "roi_liteunet_cpu.yml").dic
    assert seg_main(["configs"]) == 0
    assert capsys.readouterr().out.strip() == format_config_list("seg")
    assert fovea_main(["configs"]) == 0
    assert capsys.readouterr().out.strip() == format_config_list("fovea")
    # the error line of a CLI names the flag's value and the shipped configs
    assert seg_main(["train", "--config", "nope.yml"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: config file nope.yml not found") and "roi_liteunet_cpu.yml" in err
    assert "Traceback" not in err
