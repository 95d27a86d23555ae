"""The package as users install it: package data, console script, version, licence, sdist.

A wheel built from the sdist and installed in a new virtual environment is exercised by
``.ci/run`` (``.ci/installed_smoke.py``): building it compiles the whole core, too slow here.
"""

from __future__ import annotations

import importlib.metadata
import shutil
import subprocess
import sys
import tarfile
import tomllib
from pathlib import Path

import pytest

import l2fast
from l2fast.cli.main import main
from l2fast.config import L2Config
from l2fast.data import TEMPLATES, models_dir, shipped_config
from l2fast.errors import ConfigError
from l2fast.evaluation.replay import demo_config

REPO = Path(__file__).resolve().parents[1]
PACKAGE = Path(l2fast.__file__).resolve().parent
MODEL_NAMES = ("mean_revert_agent", "trend_agent", "volatility_agent")


def test_shipped_agents_and_configs_are_files_of_the_installed_package():
    assert models_dir() == PACKAGE / "data" / "onnx_models"
    assert sorted(p.name for p in models_dir().iterdir()) == sorted(
        f"{name}.{ext}" for name in MODEL_NAMES for ext in ("json", "onnx"))
    assert shipped_config("defaults") == PACKAGE / "data" / "l2fast.toml"
    assert shipped_config("demo") == PACKAGE / "data" / "examples" / "demo.toml"


def test_the_engine_starts_from_another_folder_on_the_shipped_agents(tmp_path):
    code = ("from l2fast import TacticalSignalGenerator\n"
            "from l2fast.config import default_models_dir\n"
            "gen = TacticalSignalGenerator()\n"
            "print(default_models_dir())\n")
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert Path(proc.stdout.strip()) == PACKAGE / "data" / "onnx_models"


def test_an_unknown_config_template_names_the_known_ones():
    known = r"\['defaults', 'demo'\]"
    with pytest.raises(ConfigError, match=rf"config template 'nope': unknown; the shipped ones are {known}"):
        shipped_config("nope")


SHIPPED_FILES = {"defaults": PACKAGE / "data" / "l2fast.toml", "demo": PACKAGE / "data" / "examples" / "demo.toml"}


def test_config_template_prints_the_shipped_file_and_it_loads_back(tmp_path, capsys):
    assert sorted(TEMPLATES) == sorted(SHIPPED_FILES)
    for name, file in SHIPPED_FILES.items():
        assert main(["config", "--template", name]) == 0
        text = capsys.readouterr().out
        assert text == file.read_text(encoding="utf-8")
        path = tmp_path / f"{name}.toml"
        path.write_text(text)
        assert L2Config.from_toml(path) == (L2Config() if name == "defaults" else demo_config())


def test_config_template_refuses_show_and_config_beside_it(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["config", "--template", "demo", "--show"])
    assert exc.value.code == 2
    assert "--template prints a shipped file as it is" in capsys.readouterr().err


def test_version_flag_prints_the_installed_distributions_version(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    assert capsys.readouterr().out.strip() == f"l2fast {importlib.metadata.version('l2fast')}"
    assert l2fast.__version__ == importlib.metadata.version("l2fast")


def test_the_version_is_written_once_in_the_package():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert "version" not in project and "version" in project["dynamic"]


def test_console_script_l2fast_runs_the_same_commands_as_python_m():
    scripts = importlib.metadata.entry_points(group="console_scripts", name="l2fast")
    assert [entry.value for entry in scripts] == ["l2fast.cli.main:main"]
    script = Path(sys.executable).parent / "l2fast"
    if not script.exists():
        script = Path(shutil.which("l2fast") or "l2fast")
    proc = subprocess.run([str(script), "config", "--template", "demo"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == SHIPPED_FILES["demo"].read_text(encoding="utf-8")
    usage = subprocess.run([str(script), "--help"], capture_output=True, text=True, timeout=120).stdout
    assert usage.startswith("usage: l2fast ")


def test_metadata_declares_the_mit_licence_as_an_spdx_expression():
    meta = importlib.metadata.metadata("l2fast")
    assert meta["License-Expression"] == "MIT"
    assert meta.get_all("License-File") == ["LICENSE"]
    assert "MIT License" in (REPO / "LICENSE").read_text()
    assert any(url.startswith("Source, ") for url in meta.get_all("Project-URL"))


def test_the_sdist_carries_the_kernel_sources_the_package_data_and_the_licence(tmp_path):
    pytest.importorskip("build")
    proc = subprocess.run([sys.executable, "-m", "build", "--sdist", "--no-isolation", "--outdir", str(tmp_path),
                           str(REPO)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    (sdist,) = tmp_path.glob("l2fast-*.tar.gz")
    with tarfile.open(sdist) as tar:
        names = {name.split("/", 1)[1] for name in tar.getnames() if "/" in name}
    expected = {"LICENSE", "pyproject.toml", "setup.py", "l2fast/py.typed", "l2fast/data/l2fast.toml",
                "l2fast/data/examples/demo.toml", "csrc/l2fast/engine/_engine.pyx", "csrc/l2fast/engine/_engine.pxd"}
    expected |= {f"l2fast/data/onnx_models/{name}.{ext}" for name in MODEL_NAMES for ext in ("json", "onnx")}
    assert expected <= names
    assert not [n for n in names if n.endswith((".c", ".so"))]  # built on install, never shipped prebuilt
