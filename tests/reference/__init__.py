"""Pure-Python reference implementations of every compiled kernel.

They are slow and exist for tests: each kernel is streamed side by side with its twin
here, which is written for clarity from the published definitions of the algorithms.
"""

import inspect
from dataclasses import MISSING, fields
from types import SimpleNamespace
from typing import Any


def config_section(cls: type, **overrides: Any) -> SimpleNamespace:
    """A config section with ``cls``'s field defaults (its one owner) and ``overrides``.

    Unvalidated, so a test may combine values the config rejects together (e.g. a
    ``max_position_size`` above ``exposure_limit``) or give the kernels bad ones.
    """
    values = {f.name: f.default_factory() if f.default is MISSING else f.default for f in fields(cls)}
    unknown = set(overrides) - set(values)
    if unknown:
        raise TypeError(f"{cls.__name__} has no field {', '.join(sorted(unknown))}")
    section = SimpleNamespace(**{**values, **overrides})
    # The section's own methods (e.g. RiskConfig.lot_step_for), bound to these values.
    for name, member in vars(cls).items():
        if inspect.isfunction(member) and not name.startswith("_"):
            setattr(section, name, member.__get__(section))
    return section


class Unchecked:
    """A validated object's attributes (properties included), some overridden, unvalidated.

    For the kernels' own bounds checks: they read their parameters by attribute, so a test
    hands them what a caller that skipped the config's validation could.
    """

    def __init__(self, valid: Any, **overrides: Any) -> None:
        self._valid, self._overrides = valid, overrides

    def __getattr__(self, name: str) -> Any:
        return self._overrides[name] if name in self._overrides else getattr(self._valid, name)
