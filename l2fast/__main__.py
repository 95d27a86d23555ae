"""Command line: ``python -m l2fast <command>``.

Commands:
    indicators: stream bars through the technical core and print the latest features per
        timeframe (a generated series unless ``--data FILE`` is given).
    config: ``config --show [--config FILE]`` prints the effective configuration as TOML
        (the defaults, or FILE merged over them).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence

import numpy as np


def _cmd_indicators(args: argparse.Namespace) -> int:
    from l2fast.bars import load_bars_csv
    from l2fast.features import TechnicalConfig, TechnicalState
    from l2fast.synthetic import generate_bars

    if args.data:
        bars = load_bars_csv(args.data)
        source = args.data
    else:
        bars = generate_bars(args.bars, seed=args.seed)
        source = f"generated series (seed {args.seed})"
    if args.bars and args.data:
        bars = {k: v[-args.bars :] for k, v in bars.items()}
    state = TechnicalState(TechnicalConfig())
    n = len(bars["ts"])
    start = time.perf_counter()
    state.update_many(bars["ts"], bars["open"], bars["high"], bars["low"], bars["close"], bars["volume"])
    elapsed = time.perf_counter() - start
    print(f"{source}: {n:,} bars in {elapsed:.3f} s ({elapsed / n * 1e9:,.0f} ns per bar)")
    print(f"gaps: {state.gaps} ({state.missing_bars} missing bars)\n")
    print(state.format_table())
    return 0


def _cmd_config(args: argparse.Namespace) -> int:
    from l2fast.config import L2Config
    from l2fast.errors import ConfigError

    if not args.show:
        args.parser.error("nothing to do: pass --show")
    try:
        config = L2Config.from_toml(args.config) if args.config else L2Config()
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    source = args.config or "defaults"
    print(f"# l2fast effective configuration ({source})")
    print(f"# model.models_dir resolves to {config.model.resolve_models_dir()}\n")
    print(config.to_toml(), end="")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run the l2fast command line and return the process exit code."""
    parser = argparse.ArgumentParser(prog="python -m l2fast", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    ind = sub.add_parser("indicators", help="print the latest features per timeframe")
    ind.add_argument("--data", help="CSV(.gz) of 1m bars: ts,open,high,low,close,volume")
    ind.add_argument("--bars", type=int, default=20_000, help="bars to generate (or the last N of --data)")
    ind.add_argument("--seed", type=int, default=7, help="seed of the generated series")
    ind.set_defaults(func=_cmd_indicators)
    cfg = sub.add_parser("config", help="print the effective configuration as TOML")
    cfg.add_argument("--show", action="store_true", help="print the effective configuration")
    cfg.add_argument("--config", help="TOML file merged over the defaults (e.g. l2fast.toml)")
    cfg.set_defaults(func=_cmd_config, parser=cfg)
    args = parser.parse_args(argv)
    np.set_printoptions(suppress=True)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
