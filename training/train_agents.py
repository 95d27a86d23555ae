"""Train, validate, save and export the demo agents.

Usage (from the repository root)::

    python -m training.train_agents                       # the shipped agents (real data)
    python -m training.train_agents --agents trend_agent --timesteps 20000 --out /tmp/m

Trains each agent with PPO on 2022-2023 BTC/USDT 1m bars (a generated series when the
data file is absent), measures it on 2024 with fees, writes seed-format bundles
``<out>/<name>.pkl`` and exports them to ONNX with ``l2fast.export`` when it is available.
The ``holdout/`` data is never read.
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import io
import multiprocessing as mp
import os
import pickle
import platform
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np

if __package__ in (None, ""):
    # Run as a script (python training/train_agents.py): make the repository importable.
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from training.agents import ACTION_TARGETS, AGENTS, AgentSpec
from training.backtest import MINUTES_PER_YEAR, backtest
from training.data import (
    Period,
    compute_features,
    decision_period,
    iso,
    load_bars,
    lookback_bars,
    mirror_bars,
    to_ms,
)

REPO = Path(__file__).resolve().parents[1]
N_ENVS = 8
REWARD_TEXT = "100 * (position * log_return_to_next_decision - fee * |position - previous_position|)"
MODEL_SELECTION = (
    "decision steps (60/15/15 min), mirror augmentation and net_arch chosen on an inner split of the "
    "training years (fit 2022-01-01..2023-07-01, check 2023-07-01..2024-01-01); the validation "
    "period is only measured, never used to choose"
)


def _period_metrics(period: Period, positions: np.ndarray, fee: float, minutes: int) -> dict:
    metrics = backtest(positions, period.log_ret, fee, minutes)
    metrics["buy_and_hold_return"] = float(period.next_close[-1] / period.close[0] - 1.0)
    metrics["period_start"] = iso(int(period.time[0]))
    metrics["period_end"] = iso(int(period.next_time[-1]))
    metrics["n_decisions"] = len(period)
    return metrics


def train_one(job: dict) -> dict:
    """Train one agent and measure it; runs in its own process (one torch thread).

    Args:
        job: ``spec`` (AgentSpec fields), ``train_obs``/``train_ret``/``segments`` (the
            training environment's scaled features, log returns and series lengths),
            ``eval_obs`` and ``valid_obs`` (scaled features of the real training and
            validation periods, for the backtests), ``seed``, ``fee``, ``timesteps``.

    Returns:
        ``model`` (SB3 zip bytes), ``train_positions``, ``valid_positions`` and
        ``train_seconds``.
    """
    import torch

    # One thread: the nets are tiny, and it keeps the run deterministic and parallel-friendly.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _train(job)
    finally:
        torch.set_num_threads(threads)


def _train(job: dict) -> dict:
    from stable_baselines3 import PPO
    from stable_baselines3.common.vec_env import DummyVecEnv

    from training.env import TradingEnv

    spec = AgentSpec(**job["spec"])
    episode = min(spec.episode_steps, *job["segments"])
    env = DummyVecEnv(
        [
            lambda: TradingEnv(job["train_obs"], job["train_ret"], episode, job["fee"], job["segments"])
            for _ in range(N_ENVS)
        ]
    )
    ppo = dict(spec.ppo)
    ppo["n_steps"] = min(ppo["n_steps"], max(8, job["timesteps"] // N_ENVS))
    ppo["batch_size"] = min(ppo["batch_size"], ppo["n_steps"] * N_ENVS)
    model = PPO(
        "MlpPolicy",
        env,
        seed=job["seed"],
        device="cpu",
        verbose=0,
        policy_kwargs={"net_arch": {"pi": list(spec.net_arch), "vf": list(spec.net_arch)}},
        **ppo,
    )
    start = time.perf_counter()
    model.learn(total_timesteps=job["timesteps"], progress_bar=False)
    seconds = time.perf_counter() - start
    targets = np.asarray(ACTION_TARGETS)
    positions = {}
    for part in ("eval", "valid"):
        actions, _ = model.predict(job[f"{part}_obs"], deterministic=True)
        positions[part] = targets[np.asarray(actions, dtype=np.int64)]
    # A fresh optimizer drops Adam's moment estimates (two thirds of the archive); the
    # weights, and so every prediction, are unchanged and SB3 can still load the archive.
    policy = model.policy
    policy.optimizer = policy.optimizer_class(policy.parameters(), lr=model.lr_schedule(1.0), **policy.optimizer_kwargs)
    buffer = io.BytesIO()
    model.save(buffer)
    return {
        "model": buffer.getvalue(),
        "train_positions": positions["eval"],
        "valid_positions": positions["valid"],
        "train_seconds": seconds,
        "ppo": ppo,
        "n_envs": N_ENVS,
    }


def _versions() -> dict:
    import gymnasium
    import sklearn
    import stable_baselines3
    import torch

    # str(): torch.__version__ is a TorchVersion, which the bundle's allow-list refuses.
    return {
        "python": platform.python_version(),
        "torch": str(torch.__version__),
        "stable_baselines3": str(stable_baselines3.__version__),
        "gymnasium": str(gymnasium.__version__),
        "scikit-learn": str(sklearn.__version__),
        "numpy": str(np.__version__),
    }


def write_bundle(bundle: dict, path: Path) -> None:
    """Pickle ``bundle`` (protocol 4) to ``path`` atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            pickle.dump(bundle, f, protocol=4)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def build_agents(
    specs: list[AgentSpec],
    *,
    data: str | None = None,
    out: Path,
    seed: int = 0,
    fee_bps: float = 10.0,
    timesteps: int | None = None,
    train_start: str = "2022-01-01",
    train_end: str = "2024-01-01",
    valid_end: str | None = None,
    synthetic_bars: int = 1_306_080,
    jobs: int = 2,
    log=print,
) -> dict[str, Path]:
    """Train, validate and save the given agents as seed-format bundles.

    Args:
        specs: Agents to build.
        data: Bar CSV or folder (default ``$L2FAST_DATA_DIR`` or ``../shared/data``).
        out: Folder for ``<name>.pkl``.
        seed: Seed of PPO, its environments and episode starts.
        fee_bps: Trading cost in basis points of the notional traded.
        timesteps: Override every agent's PPO timesteps (e.g. for a smoke run).
        train_start, train_end: Training period, ISO dates UTC: the decisions at or after
            ``train_start`` whose holding interval ends by ``train_end``. The scaler is
            fitted on these rows only.
        valid_end: End of the validation period, which starts at ``train_end``
            (None: the end of the data).
        synthetic_bars: Length of the generated series used when the data is absent
            (starting at ``train_start``).
        jobs: Agents trained in parallel (one process and one torch thread each).
        log: Progress printer.

    Returns:
        Bundle path per agent name.
    """
    from sklearn.preprocessing import StandardScaler

    wall = time.perf_counter()
    fee = fee_bps / 10_000.0
    bars, source = load_bars(data, synthetic_bars=synthetic_bars, start=train_start)
    names = sorted({name for spec in specs for name in spec.features})
    start = time.perf_counter()
    matrix = compute_features(bars, names)
    mirrored = mirror_bars(bars)
    mirror_matrix = compute_features(mirrored, names) if any(spec.mirror for spec in specs) else None
    feature_seconds = time.perf_counter() - start
    log(f"{len(bars['ts']):,} bars from {source}; {len(names)} features in {feature_seconds:.1f} s")
    column = {name: i for i, name in enumerate(names)}
    t0, t1 = to_ms(train_start), to_ms(train_end)
    t2 = to_ms(valid_end) if valid_end else None

    prepared, work = {}, []
    for spec in specs:
        cols = [column[n] for n in spec.features]
        features = matrix[:, cols]
        train = decision_period(bars, features, spec.decision_minutes, t0, t1)
        valid = decision_period(bars, features, spec.decision_minutes, t1, t2)
        if len(train) < 2 or len(valid) < 2:
            raise ValueError(f"{spec.name}: too few decision points (train {len(train)}, validation {len(valid)})")
        parts = [train]
        if spec.mirror:
            parts.append(decision_period(mirrored, mirror_matrix[:, cols], spec.decision_minutes, t0, t1))
        train_features = np.concatenate([part.features for part in parts])
        scaler = StandardScaler().fit(train_features)
        prepared[spec.name] = (spec, train, valid, scaler, lookback_bars(features, spec.timeframes))
        work.append(
            {
                "spec": asdict(spec),
                "train_obs": scaler.transform(train_features).astype(np.float32),
                "train_ret": np.concatenate([part.log_ret for part in parts]),
                "segments": tuple(len(part) for part in parts),
                "eval_obs": scaler.transform(train.features).astype(np.float32),
                "valid_obs": scaler.transform(valid.features).astype(np.float32),
                "seed": seed,
                "fee": fee,
                "timesteps": timesteps or spec.timesteps,
            }
        )
    del matrix, mirror_matrix

    start = time.perf_counter()
    if jobs > 1 and len(work) > 1:
        with cf.ProcessPoolExecutor(max_workers=jobs, mp_context=mp.get_context("spawn")) as pool:
            results = list(pool.map(train_one, work))
    else:
        results = [train_one(job) for job in work]
    train_wall = time.perf_counter() - start
    versions = _versions()

    paths = {}
    for job, result in zip(work, results, strict=True):
        spec, train, valid, scaler, lookback = prepared[job["spec"]["name"]]
        minutes = spec.decision_minutes
        performance = _period_metrics(valid, result["valid_positions"], fee, minutes)
        performance["fee_bps"] = fee_bps
        performance["decision_minutes"] = minutes
        performance["sharpe_annualisation"] = (
            f"mean/std of per-decision net returns * sqrt({MINUTES_PER_YEAR}/{minutes}) (24/7, 365-day year)"
        )
        in_sample = _period_metrics(train, result["train_positions"], fee, minutes)
        config = {
            "algorithm": "PPO",
            "policy": "MlpPolicy",
            "net_arch": {"pi": list(spec.net_arch), "vf": list(spec.net_arch)},
            "ppo": result["ppo"],
            "n_envs": result["n_envs"],
            "timesteps": job["timesteps"],
            "seed": seed,
            "data": source,
            "symbol": "BTC/USDT",
            "periods": {
                "train": [train_start, train_end],
                "validation": [train_end, valid_end or "end of data"],
                "holdout": "never read",
            },
            "train_period": [iso(int(train.time[0])), iso(int(train.next_time[-1]))],
            "validation_period": [performance["period_start"], performance["period_end"]],
            "model_selection": MODEL_SELECTION,
            "decision_minutes": minutes,
            "episode_steps": min(spec.episode_steps, *job["segments"]),
            "mirror_augmentation": spec.mirror,
            "fee_bps": fee_bps,
            "reward": REWARD_TEXT,
            "observation": "StandardScaler(features at the decision bar close), fitted on the training rows"
            + (" (real and mirrored)" if spec.mirror else ""),
            "action_targets": list(ACTION_TARGETS),
            "train_rows": int(sum(job["segments"])),
            "validation_rows": len(valid),
            "train_period_metrics": in_sample,
            "timings": {
                "features_s": round(feature_seconds, 2),
                "train_s": round(result["train_seconds"], 1),
                "all_agents_train_wall_s": round(train_wall, 1),
                "run_wall_s": round(time.perf_counter() - wall, 1),
                "jobs": jobs,
                "cpu_count": os.cpu_count(),
            },
            "versions": versions,
            "recipe": "python -m training.train_agents",
        }
        bundle = {
            "model": result["model"],
            "scaler": scaler,
            "feature_names": list(spec.features),
            "action_space": len(ACTION_TARGETS),
            "specialization": spec.specialization,
            "performance_metrics": performance,
            "training_config": config,
            "timeframes": list(spec.timeframes),
            "lookback": lookback,
            "action_targets": list(ACTION_TARGETS),
        }
        path = out / f"{spec.name}.pkl"
        write_bundle(bundle, path)
        paths[spec.name] = path
        log(
            f"{spec.name}: {job['timesteps']:,} steps in {result['train_seconds']:.0f} s; validation return "
            f"{performance['total_return']:+.2%} (buy-and-hold {performance['buy_and_hold_return']:+.2%}), "
            f"Sharpe {performance['sharpe']:.2f}, max DD {performance['max_drawdown']:.2%}, "
            f"{performance['n_trades']} trades, win rate {performance['win_rate']:.1%} -> {path}"
        )
    log(f"total {time.perf_counter() - wall:.0f} s (training wall {train_wall:.0f} s, {jobs} process(es))")
    return paths


def export_bundles(paths: list[Path], onnx_out: Path, log=print) -> bool:
    """Export the bundles with ``l2fast.export.export_model``; False when it is unavailable."""
    try:
        from l2fast.export import export_model
    except ImportError as exc:
        # onnx_out is --onnx-out: l2fast/data/onnx_models/ (the shipped agents) by default.
        log(f"l2fast.export is not available ({exc}); run: python -m l2fast.export saved_models/ --out {onnx_out}")
        return False
    for path in paths:
        report = export_model(path, onnx_out)
        log(f"exported {path.name} -> {report.onnx_path} (parity {report.parity})")
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.train_agents", description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", help="bar CSV or folder (default $L2FAST_DATA_DIR or ../shared/data)")
    parser.add_argument("--out", type=Path, default=REPO / "saved_models", help="bundle folder")
    parser.add_argument("--onnx-out", type=Path, default=REPO / "l2fast" / "data" / "onnx_models",
                        help="ONNX folder (the shipped agents)")
    parser.add_argument("--no-export", action="store_true", help="skip the ONNX export")
    parser.add_argument("--agents", default=",".join(AGENTS), help="comma-separated agent names")
    parser.add_argument("--timesteps", type=int, help="override every agent's PPO timesteps")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--fee-bps", type=float, default=10.0)
    parser.add_argument("--jobs", type=int, default=2, help="agents trained in parallel")
    parser.add_argument("--train-start", default="2022-01-01")
    parser.add_argument("--train-end", default="2024-01-01", help="also the validation start")
    parser.add_argument("--valid-end", help="validation end (default: end of the data)")
    parser.add_argument("--synthetic-bars", type=int, default=1_306_080, help="length of the generated fallback")
    args = parser.parse_args(argv)
    try:
        specs = [AGENTS[name] for name in args.agents.split(",")]
    except KeyError as exc:
        parser.error(f"unknown agent {exc}; known: {', '.join(AGENTS)}")
    paths = build_agents(
        specs,
        data=args.data,
        out=args.out,
        seed=args.seed,
        fee_bps=args.fee_bps,
        timesteps=args.timesteps,
        train_start=args.train_start,
        train_end=args.train_end,
        valid_end=args.valid_end,
        synthetic_bars=args.synthetic_bars,
        jobs=args.jobs,
    )
    if not args.no_export:
        export_bundles(list(paths.values()), args.onnx_out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
