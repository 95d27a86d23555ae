"""Command line: ``l2fast <command>`` (also ``python -m l2fast <command>``).

``l2fast --version`` prints the installed version.

Commands:
    indicators: stream bars through the technical core and print the latest features per
        timeframe (a generated series unless ``--data FILE`` is given).
    config: ``config --show [--config FILE]`` prints the effective configuration as TOML
        (the defaults, or FILE merged over them); ``config --template NAME`` prints a
        shipped configuration with its comments (``defaults``: every setting; ``demo``).
    replay: stream bar files through the engine and a paper L1 (``l2fast.evaluation.paper``) and
        print a summary (signals, trades, PnL, drawdown, fees, latency, throughput).
    demo: the replay of the shipped demo agents on a generated series (or ``--data``)
        with the demo configuration, which lowers the seed's thresholds so that they trade.
    benchmark: backtest a test period for the ensemble, each member alone, the ensemble
        without technical votes and buy-and-hold (``l2fast.evaluation.backtest``), print them side
        by side and, with ``--report DIR``, write Markdown, JSON and plots (``l2fast.evaluation.report``).
    dashboard: ``dashboard --redis URL`` draws the workers' metrics and the last hour of
        their signals live (``l2fast.ops.dashboard``; ``--once`` prints one frame). Needs the
        ``dashboard`` and ``redis`` extras; ``replay``/``demo`` take ``--dashboard`` too.

    worker: ``worker --redis URL [--snapshot FILE]`` runs the engine on a Redis bus,
        crash-safe with a snapshot (``l2fast.bus.worker``); ``publish`` puts bar files,
        decisions and recorded fills on the bus, ``signals`` reads the signals back
        without duplicates (``l2fast.bus.tools``).

Bad input (unreadable file, bad date, invalid config or decisions) prints ``error: ...``
on stderr and exits with code 2. The Redis commands (worker, publish, signals, dashboard)
retry while Redis is unreachable, logging each retry, and after ``--redis-timeout``
seconds (default :data:`l2fast.bus.transport.REDIS_TIMEOUT_S`; 0: retry for ever) print
``error: redis at URL unreachable: ...`` and exit with code 3. A refusal is not retried:
a wrong user or password, a command the ACL user may not run, a TLS connection that fails
(certificate verification, a non-TLS port) print ``error: redis at URL: ...`` and exit
with code 4 (:class:`~l2fast.errors.BusAuthError`). ``publish`` exits with code 5 when
Redis lost messages it had published (:data:`EXIT_REDIS_STATE_LOST`). They need the bus
key (``--bus-key-file FILE``, else ``$L2FAST_BUS_KEY_FILE`` or ``$L2FAST_BUS_KEY``: the
same key in every process of the bus; ``l2fast.bus.bus``) unless given ``--no-auth``;
without either they exit with code 2.

The Redis commands take their URL from ``--redis URL`` (without a password: one on the
command line is refused, since ``ps`` and shell histories show it), ``--redis-file FILE``
(the URL, password included, on the file's first line), else the environment:
``L2FAST_REDIS_URL_FILE`` (a file), then ``L2FAST_REDIS_URL`` (the URL). The password is
masked wherever a URL is printed or logged.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import time
from collections.abc import Coroutine, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

if TYPE_CHECKING:
    from types import ModuleType

    from l2fast.config import L2Config
    from l2fast.engine.generator import TacticalSignalGenerator
    from l2fast.errors import BusAuthError, BusUnavailableError
    from l2fast.evaluation.paper import PaperBroker
    from l2fast.evaluation.replay import BarStream, ReplaySummary
    from l2fast.keys import Signer
    from l2fast.ops.dashboard import ReplayFeed
    from l2fast.signals import StrategicDecision

T = TypeVar("T")

#: Bars the demo generates (or takes from the end of each --data file) by default.
_DEMO_BARS = 30_000

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _cmd_indicators(args: argparse.Namespace) -> int:
    from l2fast.evaluation.synthetic import generate_bars
    from l2fast.technical.bars import load_bars_csv
    from l2fast.technical.state import TechnicalConfig, TechnicalState

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
    from l2fast.data import config_template
    from l2fast.errors import ConfigError

    if args.template:
        if args.show or args.config:
            args.parser.error("--template prints a shipped file as it is: without --show or --config")
        print(config_template(args.template), end="")
        return 0
    if not args.show:
        args.parser.error("nothing to do: pass --show or --template NAME")
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


class _InputError(Exception):
    """Bad command-line input: printed as ``error: ...``, exit code 2."""


def _utc_ms(text: str) -> int:
    """An ISO date or date-time (UTC unless it names its offset) as epoch milliseconds."""
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a date: use YYYY-MM-DD or YYYY-MM-DDTHH:MM (UTC)") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return (moment - _EPOCH) // timedelta(milliseconds=1)


def _load_streams(paths: Sequence[str], symbols: Sequence[str] | None, start: int | None,
                  end: int | None, last: int | None = None) -> list[BarStream]:
    """One stream per file: its symbol (given, else from the file name), bars in [start, end)."""
    from l2fast.config import SYMBOL_PATTERN
    from l2fast.errors import InvalidInputError
    from l2fast.evaluation.replay import BarStream, symbol_from_filename
    from l2fast.technical.bars import load_bars_csv

    if symbols and len(symbols) != len(paths):
        raise _InputError(f"--symbol given {len(symbols)} time(s) for {len(paths)} --data file(s): "
                          "name the symbol of every file, in the same order")
    for path in paths:
        if not Path(path).is_file():
            raise _InputError(f"cannot read {path}: no such file")
    names: list[str] = []
    for path, name in zip(paths, list(symbols) if symbols else [symbol_from_filename(p) for p in paths]):
        if name is None:
            raise _InputError(f"cannot tell the symbol of {path} from its name: pass --symbol (e.g. BTC/USDT)")
        if not SYMBOL_PATTERN.fullmatch(name):
            raise _InputError(f"--symbol {name!r}: symbols look like 'BTC/USDT' (BASE/QUOTE, upper case)")
        names.append(name)
    if len(set(names)) != len(names):
        raise _InputError(f"each --data file needs its own symbol, got {names}")
    if start is not None and end is not None and start >= end:
        raise _InputError("--from must be before --to")
    streams = []
    for path, name in zip(paths, names):
        try:
            bars = load_bars_csv(path)
        except OSError as exc:
            raise _InputError(f"cannot read {path}: {exc.strerror or exc}") from None
        except InvalidInputError as exc:
            raise _InputError(str(exc)) from None
        lo = 0 if start is None else int(np.searchsorted(bars["ts"], start, side="left"))
        hi = len(bars["ts"]) if end is None else int(np.searchsorted(bars["ts"], end, side="left"))
        if last is not None:
            lo = max(lo, hi - last)
        if hi <= lo:
            raise _InputError(f"{path}: no bar in the requested window")
        streams.append(BarStream(name, {k: v[lo:hi] for k, v in bars.items()}))
    return streams


def _load_config(path: str | None) -> L2Config:
    from l2fast.config import L2Config
    from l2fast.errors import ConfigError

    try:
        return L2Config.from_toml(path) if path else L2Config()
    except ConfigError as exc:
        raise _InputError(str(exc)) from None


def _load_decisions(path: str | None, streams: Sequence[BarStream]) -> list[StrategicDecision]:
    from l2fast.errors import InvalidInputError
    from l2fast.evaluation.replay import default_decision, load_decisions

    if path is None:
        return [default_decision([s.symbol for s in streams])]
    try:
        return load_decisions(path)
    except OSError as exc:
        raise _InputError(f"cannot read {path}: {exc.strerror or exc}") from None
    except InvalidInputError as exc:
        raise _InputError(str(exc)) from None


def _describe(decisions: Sequence[StrategicDecision]) -> str:
    first = decisions[0]
    text = (f"{first.regime}, target_exposure {first.target_exposure:g}, {first.risk_appetite}, "
            f"universe [{', '.join(first.universe)}]")
    return text if len(decisions) == 1 else f"{len(decisions)} decisions from the file, the first: {text}"


def _run(args: argparse.Namespace, config: L2Config, streams: Sequence[BarStream],
         decisions: Sequence[StrategicDecision], header: Sequence[str]) -> tuple[ReplaySummary, PaperBroker]:
    """Build the engine and broker, print ``header``, replay and print the summary."""
    from l2fast.engine.generator import TacticalSignalGenerator
    from l2fast.errors import InvalidInputError, ModelLoadError
    from l2fast.evaluation.paper import PaperBroker
    from l2fast.evaluation.replay import replay

    try:
        gen = TacticalSignalGenerator(config=config, model_signer=_key("model", args.model_key_file))
    except ModelLoadError as exc:
        raise _InputError(str(exc)) from None
    try:
        broker = PaperBroker(config.engine.initial_equity, fee_bps=args.fee_bps, slippage_bps=args.slippage_bps)
    except ValueError as exc:
        raise _InputError(str(exc)) from None
    feed = _dashboard_feed(args, config, gen)
    print("\n".join(header))
    print(f"L3:          {_describe(decisions)}")
    print(f"paper L1:    fills at the next bar's open, fee {args.fee_bps:g} bps, slippage {args.slippage_bps:g} bps; "
          "stop-loss/take-profit on the bar's range (stop first when both are touched)\n", flush=True)
    out = None
    try:
        if args.out:
            try:
                out = open(args.out, "w", encoding="utf-8", newline="\n")
            except OSError as exc:
                raise _InputError(f"cannot write {args.out}: {exc.strerror or exc}") from None
        with feed or contextlib.nullcontext():
            summary = replay(gen, streams, decisions, broker, out=out, all_signals=args.all_signals,
                             progress=not args.no_progress and feed is None, on_signal=feed)
    except InvalidInputError as exc:
        raise _InputError(str(exc)) from None
    finally:
        if out is not None:
            out.close()
    print(summary.format())
    if args.out:
        kind = "every signal" if args.all_signals else "buy/sell signals"
        print(f"signals:     {kind} written to {args.out}")
    return summary, broker


def _require_dashboard() -> ModuleType:
    """:mod:`l2fast.ops.dashboard`, or an input error naming the extra when rich is missing."""
    try:
        from l2fast.ops import dashboard
    except ModuleNotFoundError as exc:
        if exc.name is None or exc.name.split(".")[0] != "rich":
            raise
        raise _InputError("the dashboard needs rich: pip install l2fast[dashboard]") from None
    return dashboard


def _dashboard_feed(args: argparse.Namespace, config: L2Config, gen: TacticalSignalGenerator) -> ReplayFeed | None:
    """With ``--dashboard``: a live dashboard fed by the replay, redrawn every N bars."""
    if not args.dashboard:
        return None
    if args.dashboard_every < 1:
        raise _InputError(f"--dashboard-every {args.dashboard_every}: must be >= 1")
    dashboard = _require_dashboard()
    board = dashboard.L2Dashboard(max_positions=config.risk.max_concurrent_positions,
                                  title="l2fast replay (market time)")
    return dashboard.ReplayFeed(board, gen.metrics, args.dashboard_every)


def _cmd_replay(args: argparse.Namespace) -> int:
    streams = _load_streams(args.data, args.symbol, args.start, args.end)
    config = _load_config(args.config)
    decisions = _load_decisions(args.decisions, streams)
    header = [f"l2fast replay: {', '.join(f'{s.symbol} <- {p}' for s, p in zip(streams, args.data))}",
              f"config:      {args.config or 'defaults'}"]
    _run(args, config, streams, decisions, header)
    return 0


def _demo_changes() -> list[str]:
    from l2fast.config import L2Config
    from l2fast.evaluation.replay import demo_overrides

    defaults = L2Config()
    changes = []
    for section, table in demo_overrides().items():
        for key, value in table.items():
            before = getattr(getattr(defaults, section), key)
            changes.append(f"{section}.{key} {_toml_text(before)} -> {_toml_text(value)}")
    return changes


def _default_decision_text() -> str:
    """What :func:`~l2fast.evaluation.replay.default_decision` decides, but its universe."""
    from l2fast.evaluation.replay import default_decision

    d = default_decision(["BTC/USDT"])  # any universe: it is not shown
    return f"{d.regime}, target_exposure {d.target_exposure:g}, {d.risk_appetite}"


def _toml_text(value: object) -> str:
    if value is None:
        return "unset"
    return str(value).lower() if isinstance(value, bool) else str(value)


def _cmd_demo(args: argparse.Namespace) -> int:
    from l2fast.evaluation.replay import BarStream, default_decision, demo_config, format_trades
    from l2fast.evaluation.synthetic import generate_bars

    if args.bars < 1:
        raise _InputError(f"--bars {args.bars}: must be >= 1")
    if args.symbol and not args.data:
        raise _InputError("--symbol names the --data files; the generated series is BTC/USDT")
    if args.data:
        streams = _load_streams(args.data, args.symbol, None, None, last=args.bars)
        source = f"the last {args.bars:,} bars of {', '.join(args.data)}"
    else:
        streams = [BarStream("BTC/USDT", generate_bars(args.bars, seed=args.seed))]
        source = f"a generated 1-minute series as BTC/USDT ({args.bars:,} bars, seed {args.seed})"
    config = demo_config()
    header = [
        f"l2fast demo: the shipped demo agents on {source}",
        "config:      the DEMO config (l2fast config --template demo) over the defaults:",
        *(f"               {change}" for change in _demo_changes()),
        "             It LOWERS the seed's thresholds and fixes the Kelly inputs because the shipped",
        "             demo agents have no edge: with the default config they almost never trade. The",
        "             trades show the pipeline at work (vote, sizing, risk gate, fills), not a strategy.",
    ]
    summary, broker = _run(args, config, streams, [default_decision([s.symbol for s in streams])], header)
    if broker.trades:
        print(f"\nclosed trades:\n{format_trades(broker.trades)}")
    if "NO_EDGE" in summary.hold_codes and summary.trades >= config.risk.min_trades_for_live_stats:
        print(f"\nnote: after {config.risk.min_trades_for_live_stats} closed trades "
              "(risk.min_trades_for_live_stats) the live win rate and payoff ratio replace the fixed "
              "Kelly inputs;\nwhile they show no edge the sizing holds with NO_EDGE, as it should.")
    return 0


def _cmd_benchmark(args: argparse.Namespace) -> int:
    from l2fast.errors import InvalidInputError, ModelLoadError
    from l2fast.evaluation.backtest import Period, run_benchmark

    if args.report:
        from l2fast.evaluation.report import require_matplotlib, write_report

        try:
            require_matplotlib()
        except ImportError as exc:
            raise _InputError(f"--report: {exc}") from None
    try:
        period = Period.parse(args.period)
    except InvalidInputError as exc:
        raise _InputError(f"--period: {exc}") from None
    symbols = [s.strip() for s in args.symbols.split(",") if s.strip()]
    config = _load_config(args.config)
    print(f"l2fast benchmark: {', '.join(symbols)} from {args.data}, period {period.label} (UTC, both days included)")
    print(f"config:      {args.config or 'defaults'}; models: {args.models or config.model.resolve_models_dir()}")
    print(f"paper L1:    fills at the next bar's open, fee {args.fee_bps:g} bps, slippage {args.slippage_bps:g} bps; "
          "stop-loss/take-profit on the bar's range", flush=True)
    try:
        result = run_benchmark(args.models, period, symbols, data=args.data, config=config, fee_bps=args.fee_bps,
                               slippage_bps=args.slippage_bps, warmup_bars=args.warmup_bars,
                               progress=not args.no_progress, model_signer=_key("model", args.model_key_file))
    except (InvalidInputError, ModelLoadError) as exc:
        raise _InputError(str(exc)) from None
    inside = sum(result.warmup_in_period.values())
    print(f"evaluated:   {_utc_text(result.first_ts_ms)} to {_utc_text(result.last_ts_ms)} UTC, "
          f"{', '.join(f'{s} {n:,}' for s, n in result.bars_by_symbol.items())} bars; warm-up "
          f"{result.warmup_bars:,} bars per symbol" + (f" ({inside:,} of them from the period)" if inside else "")
          + f"; {result.elapsed_s:.1f} s\n")
    print(result.format())
    if args.report:
        try:
            path = write_report(result, args.report)
        except OSError as exc:
            raise _InputError(f"cannot write the report to {args.report}: {exc.strerror or exc}") from None
        print(f"\nreport:      {path} (plots and benchmark.json beside it)")
    return 0


def _cmd_dashboard(args: argparse.Namespace) -> int:
    from l2fast.errors import BusAuthError, BusUnavailableError

    dashboard = _require_dashboard()
    try:
        from redis.exceptions import RedisError
    except ModuleNotFoundError:
        raise _InputError("the dashboard reads Redis: pip install l2fast[redis]") from None
    if not args.refresh > 0:
        raise _InputError(f"--refresh {args.refresh:g}: must be > 0 seconds")
    url = _redis_url(args)
    signer = _bus_signer(args)
    # No logging set up here: Python's last-resort handler writes the retries' warnings
    # to the current sys.stderr, which the live display redirects above its frame.
    try:
        asyncio.run(dashboard.watch_redis(url, prefix=args.prefix, refresh_s=args.refresh, once=args.once,
                                          redis_timeout_s=args.redis_timeout, signer=signer))
    except BusUnavailableError as exc:
        return _gave_up(exc)
    except BusAuthError as exc:
        return _refused(exc)
    except RedisError as exc:
        from l2fast.bus.redis import redacted_url

        raise _InputError(f"redis at {redacted_url(url)}: {exc}") from None
    except ValueError as exc:  # a malformed URL, or workers of different builds
        raise _InputError(str(exc)) from None
    except KeyboardInterrupt:
        pass
    return 0


def _utc_text(ts_ms: int) -> str:
    return datetime.fromtimestamp(ts_ms / 1000, UTC).strftime("%Y-%m-%d %H:%M")


def _add_cost_options(parser: argparse.ArgumentParser) -> None:
    """The paper L1's ``--fee-bps`` and ``--slippage-bps`` (replay, demo, benchmark)."""
    from l2fast.evaluation.paper import DEFAULT_FEE_BPS, DEFAULT_SLIPPAGE_BPS

    parser.add_argument("--fee-bps", type=float, default=DEFAULT_FEE_BPS,
                        help=f"fee per fill, basis points of its notional (default {DEFAULT_FEE_BPS:g})")
    parser.add_argument("--slippage-bps", type=float, default=DEFAULT_SLIPPAGE_BPS,
                        help=f"price worsening per fill against the trader, basis points (default "
                             f"{DEFAULT_SLIPPAGE_BPS:g})")


def _key(purpose: str, file: str | None) -> Signer | None:
    """The signer of ``purpose``'s key from ``file`` or its variables (:func:`l2fast.keys.load_key`)."""
    from l2fast.keys import Purpose, SecretError, load_key

    try:
        return load_key(Purpose(purpose), file)
    except SecretError as exc:
        raise _InputError(str(exc)) from None


def _add_model_key(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model-key-file", metavar="FILE",
                        help="the model key (else $L2FAST_MODEL_KEY_FILE or $L2FAST_MODEL_KEY): only models signed "
                             "with it load (python -m l2fast.export --sign DIR)")


def _add_replay_options(parser: argparse.ArgumentParser) -> None:
    from l2fast.ops import DASHBOARD_EVERY

    parser.add_argument("--symbol", action="append", metavar="SYMBOL",
                        help="symbol of each --data file, in order (default: from the file name, "
                             "e.g. btcusdt_1m.csv.gz -> BTC/USDT)")
    parser.add_argument("--out", metavar="FILE", help="write the signals as JSON lines (TacticalSignal.to_dict)")
    parser.add_argument("--all-signals", action="store_true", help="with --out: write holds too (default: buy/sell)")
    _add_cost_options(parser)
    parser.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    parser.add_argument("--dashboard", action="store_true",
                        help="draw the live dashboard (l2fast.ops.dashboard; needs l2fast[dashboard]) instead of "
                             "the progress bar")
    parser.add_argument("--dashboard-every", type=int, default=DASHBOARD_EVERY, metavar="N",
                        help=f"with --dashboard: bars between two redraws (default {DASHBOARD_EVERY})")
    _add_model_key(parser)


def _run_async(coro: Coroutine[Any, Any, T]) -> T | None:
    try:
        return asyncio.run(coro)
    except KeyboardInterrupt:
        return None


#: Exit code of a Redis command that gave up on an unreachable Redis (--redis-timeout).
EXIT_REDIS_UNREACHABLE = 3
#: Exit code of a Redis command that Redis or TLS refused (authentication, ACL, TLS).
EXIT_REDIS_REFUSED = 4
#: Exit code of ``publish`` when Redis lost messages it had published (restarted without
#: its data, flushed, a stream deleted): every message was sent, but not all may be there.
EXIT_REDIS_STATE_LOST = 5

#: The environment variables of the Redis URL: a file holding it, or the URL itself.
REDIS_URL_FILE_VARIABLE = "L2FAST_REDIS_URL_FILE"
REDIS_URL_VARIABLE = "L2FAST_REDIS_URL"

_LOG_FORMAT = "%(asctime)s %(name)s %(levelname)s %(message)s"


def _redis_timeout(text: str) -> float:
    """``--redis-timeout``'s value in seconds, passed on as is: 0 (retry for ever) means the
    same to :class:`~l2fast.bus.redis.RedisRetry`, which every Redis command's limit reaches."""
    try:
        seconds = float(text)
    except ValueError:
        seconds = -1.0
    if not 0 <= seconds < float("inf"):  # NaN too
        raise argparse.ArgumentTypeError(f"{text!r}: must be seconds >= 0 (0: retry for ever)")
    return seconds


def _add_redis_timeout(parser: argparse.ArgumentParser) -> None:
    from l2fast.bus.transport import REDIS_TIMEOUT_S

    parser.add_argument("--redis-timeout", type=_redis_timeout, default=REDIS_TIMEOUT_S, metavar="S",
                        help="while Redis is unreachable, retry with backoff (each retry logged) for at most S "
                             f"seconds, then exit with code {EXIT_REDIS_UNREACHABLE}; 0: retry for ever "
                             f"(default {REDIS_TIMEOUT_S:g})")


def _gave_up(exc: BusUnavailableError) -> int:
    print(f"error: {exc}", file=sys.stderr)
    return EXIT_REDIS_UNREACHABLE


_KEY_RECIPE = "openssl rand -hex 32 > bus.key; chmod 600 bus.key"


def _add_bus_key(parser: argparse.ArgumentParser) -> None:
    """``--bus-key-file`` or ``--no-auth`` (worker, publish, signals, dashboard)."""
    from l2fast.keys import Purpose, key_variables

    file_variable, variable = key_variables(Purpose.BUS)
    auth = parser.add_mutually_exclusive_group()
    auth.add_argument("--bus-key-file", metavar="FILE",
                      help="the bus key, the same in every process of the bus: messages are published signed "
                           f"and only those signed with it are read (default: ${file_variable}, else ${variable}; "
                           f"make one with `{_KEY_RECIPE}`)")
    auth.add_argument("--no-auth", action="store_true",
                      help="run without a bus key: messages are neither signed nor checked, so anyone who can "
                           "write to Redis can forge decisions, bars, fills and signals")


def _bus_signer(args: argparse.Namespace) -> Signer | None:
    """The bus key of a Redis command, or None with ``--no-auth`` (logged as a warning).

    Raises:
        _InputError: No key without ``--no-auth``, or the key is unusable (missing file,
            too short...).
    """
    import logging

    from l2fast.keys import Purpose, SecretError, key_variables, load_key

    if args.no_auth:
        logging.getLogger("l2fast.cli").warning(
            "--no-auth: bus messages are not authenticated (anyone who can write to Redis can forge them)")
        return None
    try:
        signer = load_key(Purpose.BUS, args.bus_key_file)
    except SecretError as exc:
        raise _InputError(str(exc)) from None
    if signer is None:
        file_variable, variable = key_variables(Purpose.BUS)
        raise _InputError(f"no bus key: give --bus-key-file FILE, or set ${file_variable} (a file) or ${variable}, "
                          f"the same key in every process of the bus (make one with `{_KEY_RECIPE}`); "
                          "--no-auth runs without message authentication")
    return signer


def _refused(exc: BusAuthError) -> int:
    print(f"error: {exc}", file=sys.stderr)
    return EXIT_REDIS_REFUSED


def _add_redis_url(parser: argparse.ArgumentParser) -> None:
    """``--redis URL`` (no password) or ``--redis-file FILE``; else the environment (:func:`_redis_url`)."""
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--redis", metavar="URL",
                       help="redis://[user@]host:port/db, or rediss://... for TLS (e.g. ?ssl_ca_certs=ca.crt); "
                            "WITHOUT a password, which the process list would show: use --redis-file for one "
                            f"(default: ${REDIS_URL_FILE_VARIABLE}, then ${REDIS_URL_VARIABLE})")
    where.add_argument("--redis-file", metavar="FILE",
                       help="a file holding the Redis URL, password included (e.g. redis://user:secret@host:6379/0)")


def _redis_url(args: argparse.Namespace) -> str:
    """The Redis URL: ``--redis``, ``--redis-file``, ``$L2FAST_REDIS_URL_FILE`` or
    ``$L2FAST_REDIS_URL``, in that order.

    Raises:
        _InputError: None is given, a password is on the command line, the secret is
            unusable, or the URL is not a Redis URL (its password masked in the message).
    """
    from urllib.parse import urlsplit

    from l2fast.bus.redis import redacted_url
    from l2fast.keys import SecretError, read_secret

    hide = (f"put the URL in a file readable only by this user and pass --redis-file FILE, or set "
            f"{REDIS_URL_FILE_VARIABLE}=FILE or {REDIS_URL_VARIABLE}=URL")
    if args.redis is not None:
        url, source = args.redis, "--redis"
    else:
        try:
            found = read_secret(file=args.redis_file, file_variable=REDIS_URL_FILE_VARIABLE,
                                variable=REDIS_URL_VARIABLE)
        except SecretError as exc:
            raise _InputError(f"the Redis URL: {exc}") from None
        if found is None:
            raise _InputError(f"no Redis URL: pass --redis URL (without a password) or --redis-file FILE, or set "
                              f"{REDIS_URL_FILE_VARIABLE} or {REDIS_URL_VARIABLE}")
        data, source = found
        try:
            url = data.decode().strip()
        except UnicodeDecodeError:
            raise _InputError(f"the Redis URL from {source} is not UTF-8 text") from None
    try:
        scheme, port = urlsplit(url).scheme, urlsplit(url).port
    except ValueError:
        scheme, port = "", None
    if scheme not in ("redis", "rediss", "unix") or (port is not None and not 0 < port < 65536):
        raise _InputError(f"the Redis URL from {source}, {redacted_url(url)}: not a Redis URL "
                          "(redis://[user:password@]host:port/db, rediss://... or unix://path)")
    if source == "--redis" and redacted_url(url) != url:
        raise _InputError(f"--redis {redacted_url(url)}: a password on the command line is refused (ps and shell "
                          f"histories show it): {hide}")
    return url


def _cmd_worker(args: argparse.Namespace) -> int:
    import logging

    from l2fast.errors import BusAuthError, BusUnavailableError, L2FastError

    try:
        from l2fast.bus.worker import WorkerOptions, run_worker
    except ModuleNotFoundError as exc:
        if exc.name is None or exc.name.split(".")[0] not in ("redis", "hiredis"):
            raise
        raise _InputError("the worker needs redis-py: pip install l2fast[redis]") from None

    url = _redis_url(args)
    logging.basicConfig(level=args.log_level.upper(), format=_LOG_FORMAT)
    signer = _bus_signer(args)
    options = WorkerOptions(
        redis=url, config=_load_config(args.config), models_dir=args.models, snapshot=args.snapshot,
        snapshot_every=args.snapshot_every, snapshot_interval_s=args.snapshot_interval, group=args.group,
        consumer=args.consumer, prefix=args.prefix, signals=args.signals, stale_after_ms=args.stale_after_ms,
        metrics_port=args.metrics_port, symbols=_symbols(args.symbols), lease_ttl_ms=args.lease_ttl_ms,
        redis_timeout_s=args.redis_timeout, allow_no_persistence=args.allow_no_persistence, signer=signer,
        snapshot_signer=_key("snapshot", args.snapshot_key_file),
        model_signer=_key("model", args.model_key_file))
    try:
        adapter = asyncio.run(run_worker(options))
    except BusUnavailableError as exc:
        return _gave_up(exc)
    except BusAuthError as exc:
        return _refused(exc)
    except (L2FastError, ValueError) as exc:
        raise _InputError(str(exc)) from None
    if adapter is None:
        print(f"worker {args.group}/{args.consumer} stopped as a standby (it never took the lease)")
    else:
        print(f"worker {args.group}/{args.consumer} stopped: {adapter.stats}")
    return 0


def _symbols(text: str | None) -> tuple[str, ...] | None:
    from l2fast.config import SYMBOL_PATTERN

    if text is None:
        return None
    symbols = tuple(s.strip() for s in text.split(",") if s.strip())
    bad = [s for s in symbols if not SYMBOL_PATTERN.fullmatch(s)]
    if not symbols or bad or len(set(symbols)) != len(symbols):
        raise _InputError(f"--symbols {text!r}: a comma-separated list of distinct symbols like BTC/USDT,ETH/USDT")
    return symbols


def _log_to_stderr() -> None:
    # The Redis retries (warnings) and the recovery (info) must reach the user.
    import logging

    logging.basicConfig(level=logging.INFO, format=_LOG_FORMAT)


def _cmd_publish(args: argparse.Namespace) -> int:
    from l2fast.bus import MessageBus, Topic
    from l2fast.bus.redis import RedisTransport
    from l2fast.bus.tools import feed, load_fills, publish_feed
    from l2fast.errors import BusAuthError, BusUnavailableError, InvalidInputError

    url = _redis_url(args)
    signer = _bus_signer(args)
    streams = _load_streams(args.data, args.symbol, args.start, args.end)
    decisions = _load_decisions(args.decisions, streams)
    try:
        fills = load_fills(args.fills) if args.fills else []
        messages = feed(streams, decisions, fills)
    except OSError as exc:
        raise _InputError(f"cannot read {args.fills}: {exc.strerror or exc}") from None
    except InvalidInputError as exc:
        raise _InputError(str(exc)) from None

    transport = RedisTransport(url, prefix=args.prefix,
                               partitioned=(Topic.BARS, Topic.FILLS) if args.partitioned else (),
                               give_up_after_s=args.redis_timeout)

    async def main() -> int:
        bus = MessageBus(transport, signer=signer)
        try:
            return await publish_feed(bus, messages, rate=args.rate)
        finally:
            await bus.close()

    _log_to_stderr()
    started = time.perf_counter()
    try:
        n = _run_async(main())
    except BusUnavailableError as exc:
        return _gave_up(exc)
    except BusAuthError as exc:
        return _refused(exc)
    print(f"published {n} messages in {time.perf_counter() - started:.1f} s")
    if transport.state_losses:
        print(f"error: redis at {transport.retry.url} lost its state during the publication "
              "(see the log): messages published before may be lost", file=sys.stderr)
        return EXIT_REDIS_STATE_LOST
    return 0


def _cmd_signals(args: argparse.Namespace) -> int:
    import json

    from l2fast.bus import MessageBus
    from l2fast.bus.redis import RedisTransport
    from l2fast.bus.tools import ReaderStats, collect_signals
    from l2fast.errors import BusAuthError, BusUnavailableError

    url = _redis_url(args)
    signer = _bus_signer(args)
    stats = ReaderStats()
    try:
        out = open(args.out, "w", encoding="utf-8", newline="\n") if args.out else sys.stdout
    except OSError as exc:
        raise _InputError(f"cannot write {args.out}: {exc.strerror or exc}") from None

    def write(signal: dict) -> None:
        out.write(json.dumps(signal) + "\n")
        out.flush()

    async def main() -> tuple[list, int]:
        bus = MessageBus(RedisTransport(url, prefix=args.prefix, give_up_after_s=args.redis_timeout),
                         signer=signer)
        try:
            return await collect_signals(bus, group=args.group, consumer=args.consumer, count=args.count,
                                         idle_exit_s=args.idle_exit, on_signal=write, stats=stats)
        finally:
            await bus.close()

    _log_to_stderr()
    try:
        result = _run_async(main())
    except BusUnavailableError as exc:
        return _gave_up(exc)
    except BusAuthError as exc:
        return _refused(exc)
    finally:
        if out is not sys.stdout:
            out.close()
    if result is not None:
        signals, duplicates = result
        refused = (f", {stats.unauthenticated} unauthenticated and {stats.malformed} malformed refused"
                   if stats.unauthenticated or stats.malformed else "")
        print(f"{len(signals)} signals, {duplicates} duplicates dropped{refused}", file=sys.stderr)
    return 0


def _add_bus_commands(sub: argparse._SubParsersAction) -> None:
    from l2fast.bus import SignalFilter
    from l2fast.bus.adapter import DEFAULT_CONSUMER, DEFAULT_GROUP, DEFAULT_SIGNALS, SNAPSHOT_EVERY, SNAPSHOT_INTERVAL_S
    from l2fast.bus.lease import LEASE_TTL_MS
    from l2fast.bus.tools import L1_CONSUMER, L1_GROUP
    from l2fast.ops.monitoring import METRICS_HOST

    work = sub.add_parser(
        "worker", help="run the engine on a Redis bus (crash-safe with --snapshot)",
        description="Read l3.decisions, l1.fills and market.bars from Redis Streams, publish l2.signals. With "
                    "--snapshot the engine is restored from that file when it exists, snapshots are written "
                    "every --snapshot-every messages or --snapshot-interval seconds and on SIGTERM/SIGINT, and "
                    "messages are acknowledged only once a snapshot covers them: a killed worker restarted "
                    "with the same --snapshot and --consumer loses nothing and repeats its signals since the "
                    "last snapshot (same signal_id).")
    _add_redis_url(work)
    work.add_argument("--config", metavar="FILE", help="TOML merged over the defaults (unused when restoring)")
    work.add_argument("--models", metavar="DIR", help="models folder (default: model.models_dir)")
    work.add_argument("--snapshot", metavar="FILE", help="engine snapshot file (restored from, written to)")
    work.add_argument("--snapshot-key-file", metavar="FILE",
                      help="the snapshot key (else $L2FAST_SNAPSHOT_KEY_FILE or $L2FAST_SNAPSHOT_KEY): snapshots are "
                           "signed with it and only a snapshot signed with it is restored; needed whenever the "
                           "snapshot is on storage others can write (shared with a standby)")
    _add_model_key(work)
    work.add_argument("--snapshot-every", type=int, default=SNAPSHOT_EVERY, metavar="N",
                      help=f"messages between snapshots (default {SNAPSHOT_EVERY})")
    work.add_argument("--snapshot-interval", type=float, default=SNAPSHOT_INTERVAL_S, metavar="S",
                      help=f"longest time between snapshots, seconds (default {SNAPSHOT_INTERVAL_S:g})")
    work.add_argument("--group", default=DEFAULT_GROUP,
                      help=f"consumer group of the L2 workers (default {DEFAULT_GROUP})")
    work.add_argument("--consumer", default=DEFAULT_CONSUMER,
                      help=f"this worker's name, kept across restarts (default {DEFAULT_CONSUMER})")
    work.add_argument("--prefix", default="", help="Redis key prefix of the bus")
    work.add_argument("--signals", default=DEFAULT_SIGNALS.value, choices=[f.value for f in SignalFilter],
                      help=f"which signals to publish (default {DEFAULT_SIGNALS.value}: orders and holds carrying "
                           "stops)")
    work.add_argument("--stale-after-ms", type=int, metavar="MS", help="flag signals older than this as stale")
    work.add_argument("--metrics-port", type=int, metavar="PORT",
                      help=f"serve Prometheus metrics on {METRICS_HOST}:PORT/metrics (0: any free port)")
    work.add_argument("--symbols", metavar="LIST",
                      help="own these symbols (comma-separated) when several workers share them: bars and fills "
                           "are then read per symbol (publish with --partitioned); a worker started for owned "
                           "symbols waits as a standby")
    work.add_argument("--lease-ttl-ms", type=int, default=LEASE_TTL_MS, metavar="MS",
                      help="time to live of the symbols' lease: how soon a standby takes over; longer than the "
                           f"engine's start-up, which loads the models (default {LEASE_TTL_MS})")
    _add_redis_timeout(work)
    work.add_argument("--allow-no-persistence", action="store_true",
                      help="run against a Redis without an append-only file (refused otherwise: a restart of such "
                           "a Redis loses the bus's messages)")
    _add_bus_key(work)
    work.add_argument("--log-level", default="info", choices=("debug", "info", "warning", "error"))
    work.set_defaults(func=_cmd_worker)
    pub = sub.add_parser(
        "publish", help="publish bar files (and L3 decisions, recorded L1 fills) to a Redis bus",
        description="Publish decisions, bars merged in time order and, with --fills, recorded fills (each "
                    "before its symbol's bar opening at its ts_ms) to l3.decisions, market.bars and l1.fills. "
                    "Exits with code 5 when Redis lost messages it had published (restarted without its data, "
                    "flushed, a stream deleted).")
    _add_redis_url(pub)
    pub.add_argument("--prefix", default="", help="Redis key prefix of the bus")
    _add_redis_timeout(pub)
    _add_bus_key(pub)
    pub.add_argument("--data", action="append", required=True, metavar="FILE",
                     help="CSV(.gz) of 1m bars; repeat for several symbols")
    pub.add_argument("--symbol", action="append", help="symbol of each --data file (default: from its name)")
    pub.add_argument("--from", dest="start", type=_utc_ms, metavar="DATE", help="first bar time (UTC)")
    pub.add_argument("--to", dest="end", type=_utc_ms, metavar="DATE", help="end of the window, exclusive")
    pub.add_argument("--decisions", metavar="FILE", help="JSONL of L3 decisions (default: as replay)")
    pub.add_argument("--fills", metavar="FILE", help="JSONL of fills (Fill.to_dict per line)")
    pub.add_argument("--rate", type=float, metavar="N", help="at most N messages per second")
    pub.add_argument("--partitioned", action="store_true",
                     help="bars and fills in one stream per symbol (for workers started with --symbols)")
    pub.set_defaults(func=_cmd_publish)
    sig = sub.add_parser("signals", help="read l2.signals from a Redis bus (a minimal L1), dropping duplicates")
    _add_redis_url(sig)
    sig.add_argument("--prefix", default="", help="Redis key prefix of the bus")
    _add_redis_timeout(sig)
    _add_bus_key(sig)
    sig.add_argument("--group", default=L1_GROUP, help=f"consumer group (default {L1_GROUP})")
    sig.add_argument("--consumer", default=L1_CONSUMER, help=f"consumer name (default {L1_CONSUMER})")
    sig.add_argument("--out", metavar="FILE", help="write one JSON line per distinct signal (default: stdout)")
    sig.add_argument("--count", type=int, metavar="N", help="stop after N distinct signals")
    sig.add_argument("--idle-exit", type=float, metavar="S", help="stop after S seconds without a message")
    sig.set_defaults(func=_cmd_signals)


def _prog() -> str:
    # The console script and python -m run the same main; name the one the user typed.
    name = Path(sys.argv[0]).name if sys.argv and sys.argv[0] else ""
    return "python -m l2fast" if name in ("", "__main__.py", "-c") else name


def main(argv: Sequence[str] | None = None) -> int:
    """Run the l2fast command line and return the process exit code."""
    from l2fast import __version__
    from l2fast.data import TEMPLATES
    from l2fast.evaluation.backtest import HORIZONS
    from l2fast.evaluation.performance import MINUTES_PER_YEAR
    from l2fast.evaluation.synthetic import DEFAULT_BARS, DEFAULT_SEED
    from l2fast.ops import DASHBOARD_REFRESH_S

    parser = argparse.ArgumentParser(prog=_prog(), description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"l2fast {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    ind = sub.add_parser("indicators", help="print the latest features per timeframe")
    ind.add_argument("--data", help="CSV(.gz) of 1m bars: ts,open,high,low,close,volume")
    ind.add_argument("--bars", type=int, default=DEFAULT_BARS,
                     help=f"bars to generate (or the last N of --data; default {DEFAULT_BARS})")
    ind.add_argument("--seed", type=int, default=DEFAULT_SEED,
                     help=f"seed of the generated series (default {DEFAULT_SEED})")
    ind.set_defaults(func=_cmd_indicators)
    cfg = sub.add_parser("config", help="print the effective configuration as TOML")
    cfg.add_argument("--show", action="store_true", help="print the effective configuration")
    cfg.add_argument("--config", help="TOML file merged over the defaults (e.g. my.toml)")
    cfg.add_argument("--template", choices=sorted(TEMPLATES),
                     help="print a shipped configuration with its comments, to start a file from "
                          "(defaults: every setting; demo: the demo's)")
    cfg.set_defaults(func=_cmd_config, parser=cfg)
    rep = sub.add_parser(
        "replay", help="replay bar files through the engine and a paper L1",
        description="Stream 1m bar files (merged in time order) through the engine and a paper L1: "
                    "orders fill at the symbol's next bar open with fee and slippage; stops and "
                    "take-profits fill on the bar's range (at the open when it gapped through; the stop "
                    "first when both are touched). Fills reach the engine before its next bar. "
                    "Prints a summary; --out writes the signals.")
    rep.add_argument("--data", action="append", required=True, metavar="FILE",
                     help="CSV(.gz) of 1m bars ts,open,high,low,close,volume; repeat for several symbols")
    rep.add_argument("--from", dest="start", type=_utc_ms, metavar="DATE",
                     help="first bar time, inclusive (YYYY-MM-DD[THH:MM], UTC)")
    rep.add_argument("--to", dest="end", type=_utc_ms, metavar="DATE", help="end of the window, exclusive")
    rep.add_argument("--config", metavar="FILE",
                     help="TOML merged over the defaults (e.g. the demo's: l2fast config --template demo > demo.toml)")
    rep.add_argument("--decisions", metavar="FILE",
                     help="JSONL of L3 decisions, each installed when the bar time reaches its ts_ms "
                          f"(default: {_default_decision_text()}, universe = the replayed symbols)")
    _add_replay_options(rep)
    rep.set_defaults(func=_cmd_replay)
    demo = sub.add_parser(
        "demo", help="replay the shipped demo agents with the demo config (they trade)",
        description="Replay the shipped demo agents on a generated series (or --data) with the DEMO config "
                    "(l2fast config --template demo) over the defaults: "
                    f"{'; '.join(_demo_changes())}. It lowers the seed's thresholds and fixes the Kelly "
                    "inputs because the shipped demo agents have no edge: with the defaults they almost "
                    "never trade.")
    demo.add_argument("--data", action="append", metavar="FILE",
                      help="CSV(.gz) of 1m bars instead of a generated series; repeat for several symbols")
    demo.add_argument("--bars", type=int, default=_DEMO_BARS,
                      help=f"bars to generate, or the last N bars of each --data file (default {_DEMO_BARS})")
    demo.add_argument("--seed", type=int, default=DEFAULT_SEED,
                      help=f"seed of the generated series (default {DEFAULT_SEED})")
    _add_replay_options(demo)
    demo.set_defaults(func=_cmd_demo)
    bench = sub.add_parser(
        "benchmark", help="backtest a period: ensemble, members alone, no technical votes, buy-and-hold",
        description="Warm the engine up on the bars before the period (or, when the data starts with it, "
                    "on its first bars, which are then not evaluated), replay the period through the engine "
                    "and a paper L1 for the ensemble, each member traded alone, the ensemble without "
                    "technical votes and buy-and-hold, and print their returns, Sharpe/Sortino (1-minute "
                    f"returns annualised by sqrt({MINUTES_PER_YEAR})), drawdown, trades, signal hit rates at "
                    f"{'/'.join(map(str, HORIZONS))} minutes, latency and risk denials side by side.")
    bench.add_argument("--data", required=True, metavar="DIR",
                       help="folder of 1m bar files named like btcusdt_1m.csv.gz (several per symbol are joined)")
    bench.add_argument("--period", required=True, metavar="FIRST_LAST",
                       help="test period YYYY-MM-DD_YYYY-MM-DD, both days included (UTC)")
    bench.add_argument("--symbols", required=True, metavar="LIST", help="comma-separated, e.g. BTC/USDT,ETH/USDT")
    bench.add_argument("--report", metavar="DIR",
                       help="write benchmark.md, benchmark.json and PNG plots there (needs l2fast[report])")
    bench.add_argument("--config", metavar="FILE", help="TOML merged over the defaults")
    bench.add_argument("--models", metavar="DIR", help="models folder (default: model.models_dir, the shipped ones)")
    bench.add_argument("--warmup-bars", type=int, metavar="N",
                       help="warm-up bars per symbol (default and minimum: the engine's largest member lookback)")
    _add_cost_options(bench)
    _add_model_key(bench)
    bench.add_argument("--no-progress", action="store_true", help="no progress bars on stderr")
    bench.set_defaults(func=_cmd_benchmark)
    dash = sub.add_parser(
        "dashboard", help="live dashboard of the workers' metrics and signals (from Redis)",
        description="Read the metrics the workers publish under <prefix>l2fast:metrics:<worker> (merged when "
                    "there are several) and the last hour of the <prefix>l2.signals stream, and draw the "
                    "dashboard, redrawn every --refresh seconds until Ctrl-C. Needs l2fast[dashboard,redis].")
    _add_redis_url(dash)
    dash.add_argument("--prefix", default="", help="the bus's key prefix (default: none)")
    _add_redis_timeout(dash)
    _add_bus_key(dash)
    dash.add_argument("--refresh", type=float, default=DASHBOARD_REFRESH_S, metavar="S",
                      help=f"seconds between redraws (default {DASHBOARD_REFRESH_S:g})")
    dash.add_argument("--once", action="store_true", help="print one frame and exit")
    dash.set_defaults(func=_cmd_dashboard)
    _add_bus_commands(sub)
    args = parser.parse_args(argv)
    np.set_printoptions(suppress=True)
    try:
        return args.func(args)
    except _InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
