#!/usr/bin/env python3
"""FinRL 0.3.7 reference recordings for l2fast's FinRL parity tests.

Runs INSIDE the FinRL virtual environment (``bash .ci/finrl_venv.sh`` makes it), never in the
project's: it imports FinRL, stockstats and stable-baselines3 and nothing of l2fast. It does
what a FinRL user does, with our data instead of ``YahooDownloader`` (nothing is downloaded):

1. reads the 1m BTC/ETH bars (2022-2023 only, never ``holdout/``) and rolls them up to 1h bars
   with pandas (left-closed, left-labelled hours; an hour with no 1m bar is no row);
2. builds FinRL's frame (``date``, ``tic``, ``open``..``volume``, ``day``) and runs
   ``FeatureEngineer(use_technical_indicator=True, tech_indicator_list=INDICATORS,
   use_turbulence=..., user_defined_feature=False)``, then the tutorials' date grid and
   ``data_split``;
3. builds ``StockTradingEnv`` as FinRL's tutorials do and steps it with a fixed, seeded action
   sequence, recording ``env.state`` after ``reset`` and after every step;
4. trains tiny PPO and SAC (each bare and under VecNormalize) with FinRL's ``DRLAgent`` on the first year,
   saves them with SB3's ``.save()`` and records ``model.predict(obs, deterministic=True)`` on
   every recorded observation.

One ``.npz`` per scenario (ticker set x turbulence on/off) and the saved agents are written to
``--out``; ``tests/finrl/README.md`` lists the arrays and the FinRL facts they pin down.
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import os
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[2]
FILES = {"BTC/USDT": "btcusdt_1m.csv.gz", "ETH/USDT": "ethusdt_1m.csv.gz"}
TICKER_SETS = {"btc": ["BTC/USDT"], "btc_eth": ["BTC/USDT", "ETH/USDT"]}
DATE_FORMAT = "%Y-%m-%d %H:%M:%S"  # FinRL compares and sorts `date` as given: strings sort in time order

# FinRL's tutorial values (Stock_NeurIPS2018 / FinRL_StockTrading_Fundamental notebooks).
HMAX = 100
INITIAL_AMOUNT = 1_000_000
COST_PCT = 0.001
REWARD_SCALING = 1e-4
TURBULENCE_QUANTILE = 0.99  # threshold = this quantile of the training span's turbulence
# What decides the recordings besides the command line: this script, FinRL's pins, the data read.
PIN_FILES = (ROOT / ".ci" / "finrl-requirements.txt", ROOT / ".ci" / "finrl-constraints.txt")
# The settings that are not part of the cache key: where things are, and whether to reuse them.
NOT_IN_KEY = ("data_dir", "out", "reuse")


def log(msg: str) -> None:
    print(f"[finrl-reference {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def load_hourly(path: Path, start: str, end: str) -> pd.DataFrame:
    """1m CSV -> 1h OHLCV in [start, end): left-closed, left-labelled hours; empty hours dropped."""
    m1 = pd.read_csv(path)
    t0 = int(pd.Timestamp(start, tz="UTC").value // 1_000_000)
    t1 = int(pd.Timestamp(end, tz="UTC").value // 1_000_000)
    m1 = m1[(m1.ts >= t0) & (m1.ts < t1)]
    m1.index = pd.to_datetime(m1.ts, unit="ms", utc=True)
    h = m1.resample("1h", closed="left", label="left").agg(
        {"open": "first", "high": "max", "low": "min", "close": "last", "volume": "sum", "ts": "count"}
    )
    h = h[h.ts > 0].rename(columns={"ts": "minutes"})
    return h


def cache_key(args: argparse.Namespace, data: Path) -> str:
    """sha256 over this script, the FinRL pin files, the data files read and the settings.

    The output folder's ``summary.json`` records it; ``--reuse`` skips a run whose key it holds.
    """
    h = hashlib.sha256()
    for path in (Path(__file__).resolve(), *PIN_FILES, *(data / f for f in FILES.values())):
        with open(path, "rb") as f:
            h.update(f"{path.name}\0".encode() + hashlib.file_digest(f, "sha256").digest())
    settings = {k: v for k, v in sorted(vars(args).items()) if k not in NOT_IN_KEY}
    h.update(json.dumps(settings, sort_keys=True).encode())
    return h.hexdigest()


def up_to_date(out: Path, key: str) -> bool:
    """``out`` holds a complete run made with ``key`` (its summary and every file it lists)."""
    try:
        summary = json.loads((out / "summary.json").read_text())
    except (OSError, ValueError):
        return False
    if summary.get("cache_key") != key:
        return False
    files = [s["file"] for s in summary.get("scenarios", {}).values()]
    for agent in summary.get("agents", {}).values():
        files += [agent["file"], *([agent["vecnormalize"]] if "vecnormalize" in agent else [])]
    return bool(files) and all((out / f).is_file() for f in files)


def finrl_frame(hourly: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """The frame YahooDownloader.fetch_data() would return: date, open, high, low, close, volume, tic, day."""
    parts = []
    for tic, h in hourly.items():
        part = pd.DataFrame(
            {
                "date": h.index.strftime(DATE_FORMAT),
                "open": h.open.to_numpy(),
                "high": h.high.to_numpy(),
                "low": h.low.to_numpy(),
                "close": h.close.to_numpy(),
                "volume": h.volume.to_numpy(),
                "tic": tic,
                "day": h.index.dayofweek,
            }
        )
        parts.append(part)
    df = pd.concat(parts, ignore_index=True)
    return df.sort_values(["date", "tic"], ignore_index=True)


def engineer(df: pd.DataFrame, use_turbulence: bool) -> pd.DataFrame:
    """FeatureEngineer, then the tutorials' full date x ticker grid (hourly here, see README)."""
    from finrl.config import INDICATORS
    from finrl.meta.preprocessor.preprocessors import FeatureEngineer

    fe = FeatureEngineer(
        use_technical_indicator=True,
        tech_indicator_list=INDICATORS,
        use_turbulence=use_turbulence,
        user_defined_feature=False,
    )
    processed = fe.preprocess_data(df)
    # The tutorials' grid: pd.date_range(min, max) is DAILY by default; on hourly dates it keeps only
    # the midnight rows. freq="h" is the hourly equivalent; with both tickers at every hour it changes
    # nothing (asserted), and an hour missing for all tickers stays missing (the isin filter).
    list_ticker = processed["tic"].unique().tolist()
    list_date = list(pd.date_range(processed["date"].min(), processed["date"].max(), freq="h").strftime(DATE_FORMAT))
    combination = list(itertools.product(list_date, list_ticker))
    full = pd.DataFrame(combination, columns=["date", "tic"]).merge(processed, on=["date", "tic"], how="left")
    full = full[full["date"].isin(processed["date"])]
    full = full.sort_values(["date", "tic"])
    full = full.fillna(0)
    assert len(full) == len(processed), (len(full), len(processed))
    return full


def make_env(df: pd.DataFrame, turbulence_threshold: float | None):  # -> StockTradingEnv
    from finrl.config import INDICATORS
    from finrl.meta.env_stock_trading.env_stocktrading import StockTradingEnv

    stock_dimension = len(df.tic.unique())
    state_space = 1 + 2 * stock_dimension + len(INDICATORS) * stock_dimension
    env_kwargs = {
        "hmax": HMAX,
        "initial_amount": INITIAL_AMOUNT,
        "num_stock_shares": [0] * stock_dimension,
        "buy_cost_pct": [COST_PCT] * stock_dimension,
        "sell_cost_pct": [COST_PCT] * stock_dimension,
        "state_space": state_space,
        "stock_dim": stock_dimension,
        "tech_indicator_list": INDICATORS,
        "action_space": stock_dimension,
        "reward_scaling": REWARD_SCALING,
    }
    if turbulence_threshold is None:
        env = StockTradingEnv(df=df, **env_kwargs)
    else:
        env = StockTradingEnv(
            df=df, turbulence_threshold=turbulence_threshold, risk_indicator_col="turbulence", **env_kwargs
        )
    env_kwargs["turbulence_threshold"] = turbulence_threshold
    return env, env_kwargs


def fixed_actions(n_steps: int, n_assets: int, seed: int) -> np.ndarray:
    """The recorded episodes' actions, float32 like SB3's, per (step, asset): 80% exactly 0 (hold:
    a random trader at FinRL's 0.1% cost on every hour bleeds the account to nothing within the
    year, so most hours hold), 5% |a| < 1/hmax (trades 0 shares), 5% two-decimal values (k/100 in
    float32: 0.29 * 100 is 29 in float32 but 28 in float64), 2.5% exactly +-1 (a clipped PPO or
    saturated SAC action) and 7.5% uniform in [-1, 1]."""
    rng = np.random.default_rng(seed)
    a = rng.uniform(-1.0, 1.0, (n_steps, n_assets))
    kind = rng.integers(0, 40, (n_steps, n_assets))
    a[kind < 32] = 0.0
    small = (kind == 32) | (kind == 33)
    a[small] = rng.uniform(-0.99, 0.99, small.sum()) / HMAX
    decimal = (kind == 34) | (kind == 35)
    a[decimal] = rng.integers(-100, 101, decimal.sum()) / 100
    ends = kind == 36
    a[ends] = np.where(rng.integers(0, 2, ends.sum()) == 0, -1.0, 1.0)
    return a.astype(np.float32)


def run_episode(env, actions: np.ndarray) -> dict[str, np.ndarray]:
    """reset, then one step per action; the state after reset and after each step."""
    n = env.stock_dim
    state, _ = env.reset()
    states = [np.asarray(state, dtype=np.float64)]
    turbulence_at_step = []
    executed = []
    rewards = []
    terminal = False
    for a in actions:
        turbulence_at_step.append(float(env.turbulence))
        state, reward, terminal, _trunc, _info = env.step(a.copy())
        if terminal:
            break
        states.append(np.asarray(state, dtype=np.float64))
        executed.append(np.asarray(env.actions_memory[-1], dtype=np.float64))
        rewards.append(float(reward))
    states_arr = np.stack(states)
    k = len(executed)
    return {
        "states": states_arr,
        "obs_float32": states_arr.astype(np.float32),  # what DummyVecEnv hands the agent
        "actions": actions[:k],
        "executed_shares": np.stack(executed) if k else np.zeros((0, n)),
        "turbulence_at_step": np.asarray(turbulence_at_step[:k]),
        "cash": states_arr[:, 0],
        "holdings": states_arr[:, 1 + n : 1 + 2 * n],
        "closes": states_arr[:, 1 : 1 + n],
        "asset_memory": np.asarray(env.asset_memory, dtype=np.float64),
        "rewards": np.asarray(rewards),
        "cost": np.asarray(env.cost, dtype=np.float64),
        "trades": np.asarray(env.trades),
    }


def train_agents(train_df: pd.DataFrame, out: Path, name: str, seed: int, steps: int) -> dict[str, dict]:
    """Tiny PPO and SAC, bare and under VecNormalize, trained as the tutorials do (DRLAgent), saved by .save()."""
    import torch
    from finrl.agents.stablebaselines3.models import DRLAgent
    from finrl.config import PPO_PARAMS, SAC_PARAMS
    from stable_baselines3.common.vec_env import VecNormalize

    torch.set_num_threads(1)
    agents: dict[str, dict] = {}
    specs = [
        # PPO_PARAMS with a short rollout so a few hundred steps make whole updates.
        ("ppo", "ppo", {**PPO_PARAMS, "n_steps": 256}, False),
        ("ppo_vecnorm", "ppo", {**PPO_PARAMS, "n_steps": 256}, True),
        ("sac", "sac", {**SAC_PARAMS, "buffer_size": 10_000}, False),
        # Raw observations (cash ~1e6) saturate SAC's tanh at +-1 after a short training; normalized
        # ones keep its actions inside (-1, 1), where a numerical difference would show.
        ("sac_vecnorm", "sac", {**SAC_PARAMS, "buffer_size": 10_000}, True),
    ]
    for label, algo, kwargs, vecnorm in specs:
        t = time.perf_counter()
        env, env_kwargs = make_env(train_df, None)
        env_train, _ = env.get_sb_env()
        if vecnorm:
            env_train = VecNormalize(env_train, norm_obs=True, norm_reward=True)
        agent = DRLAgent(env=env_train)
        model = agent.get_model(algo, model_kwargs=dict(kwargs), seed=seed, verbose=0)
        model = DRLAgent.train_model(model=model, tb_log_name=label, total_timesteps=steps)
        path = out / "models" / f"{name}_{label}"
        path.parent.mkdir(parents=True, exist_ok=True)
        model.save(str(path))
        info = {
            "algo": algo,
            "model_kwargs": dict(kwargs),
            "total_timesteps": steps,
            "seed": seed,
            "file": f"models/{path.name}.zip",
            "env_kwargs": env_kwargs,
            "train_start": str(train_df.date.iloc[0]),
            "train_end": str(train_df.date.iloc[-1]),
        }
        if vecnorm:
            env_train.save(str(path) + "_vecnormalize.pkl")
            env_train.training = False
            info["vecnormalize"] = f"models/{path.name}_vecnormalize.pkl"
        info["seconds"] = round(time.perf_counter() - t, 2)
        agents[label] = {"model": model, "vecnorm": env_train if vecnorm else None, "info": info}
        log(f"trained {name}_{label} in {info['seconds']} s")
    return agents


def predictions(agents: dict[str, dict], obs32: np.ndarray) -> dict[str, np.ndarray]:
    """model.predict(obs, deterministic=True), one observation per call as DRL_prediction does."""
    out: dict[str, np.ndarray] = {}
    for label, a in agents.items():
        model, vec = a["model"], a["vecnorm"]
        if vec is not None:
            norm = np.stack([vec.normalize_obs(o) for o in obs32])
            out[f"obs_normalized__{label}"] = norm
            src = norm
        else:
            src = obs32
        out[f"predict__{label}"] = np.stack([model.predict(o, deterministic=True)[0] for o in src])
    return out


def frame_arrays(df: pd.DataFrame, columns: list[str]) -> dict[str, np.ndarray]:
    dates = pd.to_datetime(df["date"], format=DATE_FORMAT, utc=True)
    return {
        "frame_columns": np.asarray(columns),
        "frame_values": df[columns].to_numpy(dtype=np.float64),
        "frame_ts": (dates.astype("int64") // 1_000_000).to_numpy(),  # bar OPEN time, epoch ms UTC
        "frame_tic": df["tic"].to_numpy().astype(str),
        "frame_day": df.index.to_numpy(),  # data_split's day number (the env's self.day)
    }


def main(argv: list[str] | None = None) -> int:
    default_data = os.environ.get("L2FAST_DATA_DIR") or str(ROOT.parent / "shared" / "data")
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-dir", default=default_data, help="folder of btcusdt_1m.csv.gz, ethusdt_1m.csv.gz")
    p.add_argument("--out", default=str(ROOT / "build" / "finrl-reference"), help="output folder")
    p.add_argument("--start", default="2022-01-01", help="first hour (UTC); data before 2022 does not exist")
    p.add_argument("--end", default="2024-01-01", help="end, exclusive; never past 2024-01-01 (2024 is validation)")
    p.add_argument("--train-end", default="2023-01-01", help="agents train on [start, train-end)")
    p.add_argument("--max-steps", type=int, default=0, help="steps per recorded episode (0: the whole span)")
    p.add_argument("--train-steps", type=int, default=512, help="total_timesteps per agent")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument(
        "--turbulence-end",
        default="2022-07-01",
        help="end (exclusive) of the use_turbulence scenarios, whose FinRL turbulence is O(rows^2): "
        "6 months by default (README); --turbulence-end 2024-01-01 records them over the whole span",
    )
    p.add_argument("--sets", default="btc,btc_eth", help="ticker sets: btc, btc_eth")
    p.add_argument("--no-train", action="store_true", help="record the env only")
    p.add_argument("--reuse", action="store_true", help="do nothing if --out holds a run with the same cache key")
    args = p.parse_args(argv)
    if pd.Timestamp(args.end) > pd.Timestamp("2024-01-01"):
        p.error("--end past 2024-01-01: this reference is built from 2022-2023 only")
    if not pd.Timestamp(args.start) < pd.Timestamp(args.turbulence_end) <= pd.Timestamp(args.end):
        p.error("--turbulence-end must lie in (--start, --end]")
    data = Path(args.data_dir)
    if "holdout" in data.parts or not all((data / f).is_file() for f in FILES.values()):
        p.error(f"{data}: no btcusdt_1m.csv.gz/ethusdt_1m.csv.gz here (set --data-dir or L2FAST_DATA_DIR)")
    out = Path(args.out)
    started = time.perf_counter()
    key = cache_key(args, data)
    if args.reuse and up_to_date(out, key):
        log(f"{out} is up to date (cache key {key[:12]}): nothing to do")
        return 0
    out.mkdir(parents=True, exist_ok=True)
    # A run stopped halfway must not leave the previous key beside a mix of old and new files.
    (out / "summary.json").unlink(missing_ok=True)

    import finrl  # noqa: F401  (its package import is what needs alpaca-trade-api, wrds, yfinance, ...)
    import stable_baselines3
    import stockstats
    import torch
    from finrl.config import INDICATORS
    from finrl.meta.preprocessor.preprocessors import data_split

    warnings.simplefilter("ignore", FutureWarning)
    versions = {
        "python": sys.version.split()[0],
        "finrl": _version("finrl"),
        "stockstats": _version("stockstats"),
        "stable_baselines3": stable_baselines3.__version__,
        "torch": torch.__version__,
        "pandas": pd.__version__,
        "numpy": np.__version__,
        "gymnasium": _version("gymnasium"),
    }
    del stockstats
    log(f"versions {versions}")

    hourly = {}
    for tic, f in FILES.items():
        t = time.perf_counter()
        hourly[tic] = load_hourly(data / f, args.start, args.end)
        log(f"{tic}: {len(hourly[tic])} hourly bars in {time.perf_counter() - t:.1f} s")

    summary: dict[str, object] = {
        "versions": versions,
        "scenarios": {},
        "agents": {},
        "cache_key": key,
        "settings": {k: v for k, v in sorted(vars(args).items()) if k not in NOT_IN_KEY},
    }
    for set_name in [s.strip() for s in args.sets.split(",") if s.strip()]:
        tickers = TICKER_SETS[set_name]
        raw = finrl_frame({t: hourly[t] for t in tickers})
        agents: dict[str, dict] = {}
        for use_turbulence in (False, True):
            scenario = f"{set_name}_{'turb' if use_turbulence else 'plain'}"
            end = args.turbulence_end if use_turbulence else args.end
            # Dates are "YYYY-MM-DD HH:MM:SS" strings: comparing with a "YYYY-MM-DD" one is chronological.
            frame = raw[raw["date"] < end].reset_index(drop=True)
            t = time.perf_counter()
            processed = engineer(frame, use_turbulence)
            fe_seconds = time.perf_counter() - t
            log(f"{scenario}: FeatureEngineer {fe_seconds:.1f} s, {len(processed)} rows")
            columns = ["open", "high", "low", "close", "volume", *INDICATORS]
            if use_turbulence:
                columns.append("turbulence")
            whole = data_split(processed, args.start, end)
            train = data_split(processed, args.start, args.train_end)
            threshold = None
            if use_turbulence:
                insample = train.drop_duplicates(subset=["date"]).turbulence.to_numpy()
                threshold = float(np.quantile(insample, TURBULENCE_QUANTILE))
            if not use_turbulence and not args.no_train:
                agents = train_agents(train, out, set_name, args.seed, args.train_steps)
                for label, a in agents.items():
                    summary["agents"][f"{set_name}_{label}"] = a["info"]  # type: ignore[index]

            env, env_kwargs = make_env(whole, threshold)
            n_days = len(whole.index.unique())
            steps = n_days - 1 if args.max_steps <= 0 else min(args.max_steps, n_days - 1)
            acts = fixed_actions(steps, len(tickers), args.seed)
            t = time.perf_counter()
            rec = run_episode(env, acts)
            ep_seconds = time.perf_counter() - t
            log(f"{scenario}: {len(rec['states'])} states in {ep_seconds:.1f} s")
            t = time.perf_counter()
            preds = predictions(agents, rec["obs_float32"]) if agents else {}
            log(f"{scenario}: predictions in {time.perf_counter() - t:.1f} s")
            params = {
                "tickers": tickers,
                "env_kwargs": env_kwargs,
                "indicators": list(INDICATORS),
                "use_turbulence": use_turbulence,
                "turbulence_quantile": TURBULENCE_QUANTILE if use_turbulence else None,
                "start": args.start,
                "end": end,
                "train_end": args.train_end,
                "seed": args.seed,
                "state_layout": ["cash"]
                + [f"close@{x}" for x in tickers]
                + [f"holdings@{x}" for x in tickers]
                + [f"{i}@{x}" for i in INDICATORS for x in tickers],
                "agents": {k: v["info"] for k, v in agents.items()},
                "versions": versions,
            }
            arrays = {
                **frame_arrays(whole, columns),
                **rec,
                **preds,
                "params_json": np.asarray(json.dumps(params, sort_keys=True)),
            }
            path = out / f"{scenario}.npz"
            np.savez_compressed(path, **arrays)
            summary["scenarios"][scenario] = {  # type: ignore[index]
                "file": path.name,
                "rows": len(whole),
                "states": len(rec["states"]),
                "feature_engineer_seconds": round(fe_seconds, 1),
                "episode_seconds": round(ep_seconds, 1),
                "turbulence_threshold": threshold,
                "final_cash": float(rec["cash"][-1]),
                "trades": int(rec["trades"]),
            }
            log(f"wrote {path}")
    summary["seconds"] = round(time.perf_counter() - started, 1)
    (out / "summary.json").write_text(json.dumps(summary, indent=2, sort_keys=True, default=str) + "\n")
    log(f"done in {summary['seconds']} s (cache key {key[:12]})")
    return 0


def _version(dist: str) -> str:
    from importlib.metadata import version

    return version(dist)


if __name__ == "__main__":
    sys.exit(main())
