"""Smoke test of an installed l2fast (a wheel in a fresh virtual environment), run by .ci/run.

Run it with the environment's python from a folder outside the checkout, the checkout's
path as the argument: nothing may resolve against the source tree.
"""

from __future__ import annotations

import importlib.metadata
import math
import sys
from pathlib import Path


def main(checkout: Path) -> int:
    import l2fast
    from l2fast.config import L2Config, default_models_dir
    from l2fast.data import shipped_config
    from l2fast.engine.generator import TacticalSignalGenerator
    from l2fast.evaluation.replay import demo_config
    from l2fast.evaluation.synthetic import generate_bars
    from l2fast.signals import StrategicDecision

    package = Path(l2fast.__file__).resolve().parent
    assert not package.is_relative_to(checkout), f"l2fast imported from the checkout: {package}"
    assert "site-packages" in package.parts, package
    assert l2fast.__version__ == importlib.metadata.version("l2fast"), l2fast.__version__
    assert default_models_dir() == package / "data" / "onnx_models", default_models_dir()
    assert L2Config.from_toml(shipped_config("defaults")) == L2Config()

    bars = generate_bars(3_000, seed=3)
    for config in (None, demo_config()):
        gen = TacticalSignalGenerator(config)
        gen.on_strategic_decision(StrategicDecision(regime="trending", target_exposure=0.5,
                                                    risk_appetite="moderate", universe=("BTC/USDT",)))
        sides: dict[str, int] = {}
        for ts, o, h, lo, c, v in zip(*(bars[k].tolist() for k in ("ts", "open", "high", "low", "close", "volume"))):
            sig = gen.on_bar("BTC/USDT", ts, o, h, lo, c, v)
            assert all(math.isfinite(x) for x in (sig.qty, sig.confidence, sig.consensus)), sig
            sides[sig.side.value] = sides.get(sig.side.value, 0) + 1
        # The demo config exists to make the shipped agents trade (the defaults rightly hold).
        assert config is None or sides.get("hold", 0) < len(bars["ts"]), sides
        print(f"installed l2fast {l2fast.__version__} from {package}: "
              f"{'defaults' if config is None else 'demo config'}: {sides}")
    return 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1]).resolve()))
