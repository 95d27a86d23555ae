"""The files l2fast ships inside the package: the demo agents and the configurations.

They are package data, found through :mod:`importlib.resources`, so an editable install,
a wheel and an sdist install all resolve them the same way, never against a checkout:

- ``onnx_models/``: the shipped demo agents (``<name>.onnx`` + ``<name>.json`` manifest),
  the default ``model.models_dir`` (see :func:`l2fast.config.default_models_dir`);
- ``l2fast.toml``: every setting with its default, commented (equal to ``L2Config()``);
- ``examples/<name>.toml``: example configurations, e.g. ``demo`` (the configuration of
  ``l2fast demo``).

``l2fast config --template NAME`` prints one of the configurations, to start a file of
one's own from.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

from l2fast.errors import ConfigError

__all__ = ["TEMPLATES", "config_template", "data_path", "models_dir", "shipped_config"]

#: Configurations ``l2fast config --template`` prints: name -> file under the data folder
#: (``defaults``: every setting with its default, commented).
TEMPLATES: dict[str, str] = {"defaults": "l2fast.toml", "demo": "examples/demo.toml"}


def data_path(relative: str) -> Path:
    """The filesystem path of a shipped file or folder.

    Args:
        relative: Path below ``l2fast/data``, with ``/`` separators.

    Raises:
        FileNotFoundError: The installation lacks it (a broken or partial install).
    """
    resource = files(__name__).joinpath(*relative.split("/"))
    # The compiled core cannot be imported from a zip either, so l2fast is always
    # installed as files and its resources are plain paths.
    path = Path(str(resource))
    if not path.exists():
        raise FileNotFoundError(f"l2fast's package data lacks {relative} (looked in {path}): "
                                "reinstall l2fast (pip install l2fast or pip install . in a checkout)")
    return path


def models_dir() -> Path:
    """The folder of the shipped demo agents (ONNX models and their manifests)."""
    return data_path("onnx_models")


def shipped_config(name: str) -> Path:
    """The path of a shipped configuration named in :data:`TEMPLATES` (``"demo"``, ...).

    Raises:
        ConfigError: No shipped configuration has that name (the known names are listed).
    """
    relative = TEMPLATES.get(name)
    if relative is None:
        raise ConfigError(f"config template {name!r}: unknown; the shipped ones are {sorted(TEMPLATES)}")
    return data_path(relative)


def config_template(name: str) -> str:
    """The text of a shipped configuration, comments included (see :func:`shipped_config`)."""
    return shipped_config(name).read_text(encoding="utf-8")
