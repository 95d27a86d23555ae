"""Command line: ``python -m l2fast.export``.

Export::

    python -m l2fast.export SOURCE... --out onnx_models/ [--feature-names FILE|a,b,c]
        [--vecnormalize FILE] [--opset N] [--samples N] [--sign-key-file FILE] [--trust-pickle]
        [--feature-namespace l2fast|stockstats] [--feature-timeframe TF]

``--feature-namespace stockstats`` says the feature names are FinRL's stockstats names
(``rsi_30_1h``, or ``rsi_30`` with ``--feature-timeframe 1h``; :mod:`l2fast.technical.names`).

An agent trained in FinRL's ``StockTradingEnv``, in one command (:mod:`l2fast.export.finrl`)::

    python -m l2fast.export agent.zip --out onnx_models/ --finrl stocktrading --tickers BTC/USDT,ETH/USDT \
        --timeframe 1h [--indicators macd,boll_ub,...] [--hmax 100] [--initial-amount 1e6]
        [--buy-cost 0.001] [--sell-cost 0.001] [--reward-scaling X] [--turbulence-threshold X]
        [--vecnormalize stats.pkl]

writes the env's observation layout (``cash``, the closes, the holdings, each indicator
for every ticker; tickers sorted, as FinRL orders them), ``decision_timeframe`` and the
``finrl`` parameters into the manifest, after checking the agent's observation size
(``1 + 2N + len(indicators) * N``) and its ``Box(-1, 1, (N,))`` action. Defaults are
FinRL 0.3.7's (its ``INDICATORS``, hmax 100, 1e6, costs 0.001); a ``.pkl`` bundle's
``training_config["finrl"]`` fills in what the flags leave out (the flags win), and such a
bundle is laid out for FinRL without ``--finrl`` too.

``--trust-pickle`` lets a ``.pkl`` bundle carry its model as a pickled SB3 object: the file
is unpickled with the real pickle, which runs its code with your rights, in a separate
short-lived process (:mod:`l2fast.export.trusted`); a warning says so for each file.

Validate exported models (feature names checked against the config's technical section,
the defaults without ``--config``)::

    python -m l2fast.export --validate onnx_models/ [--config l2fast.toml] [--sign-key-file FILE]

Sign a folder exported before (``<name>.sig`` beside each manifest)::

    python -m l2fast.export --sign onnx_models/ --sign-key-file model.key

The model key comes from ``--sign-key-file``, else ``$L2FAST_MODEL_KEY_FILE`` or
``$L2FAST_MODEL_KEY`` (never the command line itself, :mod:`l2fast.keys`). With a key, an
export signs what it writes and ``--validate`` fails unsigned or mis-signed models;
``--sign`` needs one.

Exit status 0 on success, 1 on any failure (one ``error:`` line on stderr, no traceback),
2 on bad usage.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from l2fast.export.finrl import FINRL_DEFAULTS, FINRL_ENVS, FINRL_INDICATORS
from l2fast.export.graph import DEFAULT_OPSET
from l2fast.export.parity import DEFAULT_SAMPLES
from l2fast.technical.names import DEFAULT_NAMESPACE, NAMESPACES

if TYPE_CHECKING:
    from l2fast.export.finrl import FinRLEnv
    from l2fast.keys import Signer

# The --finrl flags: FinRLEnv's field of each.
_FINRL_FLAGS = {"tickers": "tickers", "timeframe": "timeframe", "indicators": "indicators", "hmax": "hmax",
                "initial_amount": "initial_amount", "buy_cost": "buy_cost_pct", "sell_cost": "sell_cost_pct",
                "reward_scaling": "reward_scaling", "turbulence_threshold": "turbulence_threshold"}


def _feature_names(value: str) -> list[str]:
    """``--feature-names``: a file (JSON list, or names split by lines/commas) or ``a,b,c``."""
    path = Path(value)
    if path.is_file():
        text = path.read_text(encoding="utf-8")
        try:
            names = json.loads(text)
        except json.JSONDecodeError:
            names = [tok for line in text.splitlines() if not line.lstrip().startswith("#")
                     for tok in line.replace(",", " ").split()]
        if not (isinstance(names, list) and all(isinstance(n, str) for n in names)):
            raise ValueError(f"{path}: expected a JSON list of names or one name per line")
    else:
        names = [n.strip() for n in value.split(",") if n.strip()]
    if not names:
        raise ValueError(f"--feature-names {value!r} gives no names")
    return names


def _names(value: str) -> list[str]:
    """A comma-separated list (``--tickers``, ``--indicators``)."""
    return [v.strip() for v in value.split(",") if v.strip()]


def _costs(value: str) -> float | list[float]:
    """``--buy-cost`` / ``--sell-cost``: one fraction for every ticker, or one per ticker."""
    costs = [float(v) for v in _names(value)]
    if not costs:
        raise ValueError(f"no cost in {value!r}")
    return costs[0] if len(costs) == 1 else costs


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m l2fast.export",
        description="Export stable-baselines3 / FinRL agents (SB3 .zip, seed-format .pkl bundles, or "
                    "folders of them) to ONNX + manifest with verified parity, or validate exported models.",
    )
    p.add_argument("sources", nargs="*", metavar="SOURCE", help="SB3 .zip, .pkl bundle, or a folder of them")
    p.add_argument("--out", type=Path, help="output folder for <name>.onnx + <name>.json")
    p.add_argument("--feature-names", metavar="FILE|a,b,c",
                   help="ordered feature names: a file (JSON list or one per line) or a comma-separated list")
    p.add_argument("--feature-namespace", choices=NAMESPACES, default=None,
                   help="how the engine reads the feature names: l2fast's own (default) or stockstats' as FinRL "
                        "names them (rsi_30_1h, boll_ub, close_30_sma...)")
    p.add_argument("--feature-timeframe", metavar="TF",
                   help="with --feature-namespace stockstats: the timeframe of names without a _<tf> suffix (e.g. 1h)")
    p.add_argument("--vecnormalize", type=Path, metavar="FILE", help="saved SB3 VecNormalize statistics to fold in")
    finrl = p.add_argument_group(
        "FinRL", "an agent trained in FinRL's env: the manifest gets its observation layout, cadence and action "
                 "parameters; defaults are FinRL 0.3.7's; a .pkl bundle's training_config['finrl'] fills in what "
                 "these flags leave out (the flags win)")
    finrl.add_argument("--finrl", choices=FINRL_ENVS, metavar="ENV",
                       help=f"the FinRL env the agent was trained in: {', '.join(FINRL_ENVS)} (StockTradingEnv); "
                            "excludes --feature-names, --feature-namespace and --feature-timeframe")
    finrl.add_argument("--tickers", type=_names, metavar="A,B",
                       help="the pairs it trades (BTC/USDT,ETH/USDT); sorted by name, as FinRL orders them")
    finrl.add_argument("--timeframe", metavar="TF",
                       help="its bar interval (e.g. 1h): the timeframe of its features and of its decisions")
    finrl.add_argument("--indicators", type=_names, metavar="a,b,c",
                       help=f"FinRL's tech_indicator_list (default FinRL's INDICATORS: {','.join(FINRL_INDICATORS)})")
    finrl.add_argument("--hmax", type=int, metavar="N",
                       help=f"most shares one action trades (default {FINRL_DEFAULTS['hmax']})")
    finrl.add_argument("--initial-amount", type=float, metavar="X",
                       help=f"the env's starting cash (default {FINRL_DEFAULTS['initial_amount']:g})")
    finrl.add_argument("--buy-cost", type=_costs, metavar="X[,Y]",
                       help=f"buy cost fraction, one or one per ticker in --tickers' order "
                            f"(default {FINRL_DEFAULTS['buy_cost_pct']})")
    finrl.add_argument("--sell-cost", type=_costs, metavar="X[,Y]",
                       help=f"sell cost fraction, likewise (default {FINRL_DEFAULTS['sell_cost_pct']})")
    finrl.add_argument("--reward-scaling", type=float, metavar="X", help="the env's reward_scaling (recorded)")
    finrl.add_argument("--turbulence-threshold", type=float, metavar="X",
                       help="the env's turbulence_threshold (recorded)")
    p.add_argument("--opset", type=int, default=DEFAULT_OPSET, help=f"ONNX opset (default {DEFAULT_OPSET})")
    p.add_argument("--samples", type=int, default=DEFAULT_SAMPLES,
                   help=f"parity-check observations (default {DEFAULT_SAMPLES})")
    p.add_argument("--trust-pickle", action="store_true",
                   help="trust the .pkl sources: unpickle them with the real pickle (this RUNS the file's code with "
                        "your rights) in a separate process, so a bundle's model may be a pickled SB3 object")
    p.add_argument("--validate", type=Path, metavar="DIR", help="validate exported models in DIR instead")
    p.add_argument("--config", type=Path, metavar="FILE",
                   help="with --validate: l2fast TOML config whose technical section defines the valid feature names")
    p.add_argument("--sign", type=Path, metavar="DIR",
                   help="sign the exported models in DIR (writes <name>.sig beside each manifest) instead")
    p.add_argument("--sign-key-file", type=Path, metavar="FILE",
                   help="the model key (else $L2FAST_MODEL_KEY_FILE or $L2FAST_MODEL_KEY): an export signs its "
                        "models, --validate requires valid signatures, --sign signs with it")
    return p


def _signer(key_file: Path | None) -> Signer | None:
    from l2fast.keys import Purpose, load_key

    return load_key(Purpose.MODEL, key_file)


def _sign(path: Path, key_file: Path | None) -> int:
    from l2fast.export.signing import sign_models
    from l2fast.keys import Purpose, key_variables

    signer = _signer(key_file)
    if signer is None:
        file_variable, variable = key_variables(Purpose.MODEL)
        print(f"error: --sign needs the model key: --sign-key-file FILE, or ${file_variable} / ${variable}",
              file=sys.stderr)
        return 1
    for sig in sign_models(path, signer):
        print(f"signed {sig.with_suffix('.json').name}: {sig}")
    return 0


def _validate(path: Path, config: Path | None, key_file: Path | None) -> int:
    from l2fast.config import L2Config
    from l2fast.models.loading import validate_models

    result = validate_models(path, technical=L2Config.from_toml(config) if config is not None else None,
                             signer=_signer(key_file))
    for failure in result["failures"]:
        print(f"FAIL {failure['name']}: {failure['reason']}")
    print(f"{result['passed']}/{result['total']} models valid in {path}")
    return 0 if result["passed"] == result["total"] else 1


def _finrl(args: argparse.Namespace) -> FinRLEnv | None:
    from l2fast.export.finrl import FinRLEnv

    if args.finrl is None:
        return None
    return FinRLEnv(env=args.finrl, **{field: getattr(args, flag) for flag, field in _FINRL_FLAGS.items()})


def _export(args: argparse.Namespace) -> int:
    from l2fast.export import MissingFeatureNamesWarning, export_many
    from l2fast.export.trusted import logger as trusted_logger

    names = _feature_names(args.feature_names) if args.feature_names else None
    # --trust-pickle's warning, one per file, printed like the others (not twice through logging's last resort).
    printer = logging.StreamHandler(sys.stderr)
    printer.setFormatter(logging.Formatter("warning: %(message)s"))
    trusted_logger.addHandler(printer)
    propagate, trusted_logger.propagate = trusted_logger.propagate, False
    # Only l2fast's own warnings reach the user; library chatter (sklearn, SB3) is dropped.
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", MissingFeatureNamesWarning)
        try:
            reports = export_many(args.sources, args.out, feature_names=names, vecnormalize=args.vecnormalize,
                                  opset=args.opset, samples=args.samples, signer=_signer(args.sign_key_file),
                                  trust_pickle=args.trust_pickle,
                                  feature_namespace=args.feature_namespace or DEFAULT_NAMESPACE,
                                  feature_timeframe=args.feature_timeframe, finrl=_finrl(args))
        finally:
            trusted_logger.removeHandler(printer)
            trusted_logger.propagate = propagate
            for w in caught:
                if issubclass(w.category, MissingFeatureNamesWarning):
                    print(f"warning: {w.message}", file=sys.stderr)
    for r in reports:
        p = r.parity
        check = (f"{p['discrete_agreement']:.0%} equal actions" if "discrete_agreement" in p
                 else f"max abs diff {p['max_abs_diff']:.2g}")
        signed = f" + {r.signature_path.name}" if r.signature_path is not None else ""
        print(f"{r.name}: {r.onnx_path} + {r.manifest_path.name}{signed} (parity on {p['samples']} samples: "
              f"{check}; {r.seconds:.2f} s)")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status."""
    parser = _parser()
    args = parser.parse_args(argv)
    if args.validate is not None and args.sign is not None:
        parser.error("give --validate DIR or --sign DIR, not both")
    if args.validate is not None or args.sign is not None:
        if args.sources or args.out:
            parser.error(f"{'--validate' if args.validate is not None else '--sign'} takes no SOURCE or --out")
        if args.sign is not None and args.config is not None:
            parser.error("--config goes with --validate")
    elif not args.sources or args.out is None:
        parser.error("give SOURCE... and --out DIR (or --validate DIR, or --sign DIR)")
    elif args.config is not None:
        parser.error("--config goes with --validate")
    given = [f"--{flag.replace('_', '-')}" for flag in _FINRL_FLAGS if getattr(args, flag) is not None]
    if args.finrl is None and given:
        parser.error(f"{', '.join(given)}: only with --finrl ENV")
    if args.finrl is not None:
        clash = [flag for flag, value in (("--feature-names", args.feature_names),
                                          ("--feature-namespace", args.feature_namespace),
                                          ("--feature-timeframe", args.feature_timeframe)) if value is not None]
        if clash:
            parser.error(f"--finrl lays out the observation itself: drop {', '.join(clash)}")
    from l2fast.errors import L2FastError

    def one_line(exc: BaseException) -> str:
        return " ".join(str(exc).split())

    try:
        if args.validate is not None:
            return _validate(args.validate, args.config, args.sign_key_file)
        if args.sign is not None:
            return _sign(args.sign, args.sign_key_file)
        return _export(args)
    except (L2FastError, OSError, ValueError) as exc:
        print(f"error: {one_line(exc)}", file=sys.stderr)
    except ImportError as exc:
        print(f"error: {exc.name or exc} is not installed: pip install 'l2fast[export]'", file=sys.stderr)
    except Exception as exc:  # a CLI reports, it does not dump a traceback
        print(f"error: unexpected {type(exc).__name__}: {one_line(exc)}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
