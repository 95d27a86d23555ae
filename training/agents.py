"""The three demo agents: feature sets, decision step and training settings.

Every feature name is one of the technical core's (``TechnicalState().names``) and is
finite once warmed up: price-level features (``close``, ``macd``, ``bb_upper``, ``obv``,
``donchian_upper``...) are left out because they do not transfer between price regimes,
and ``sr_dist_*`` because it is NaN whenever no level exists on that side.
"""

from __future__ import annotations

from dataclasses import dataclass, field

# Target position per discrete action: short, flat or long in thirds.
ACTION_TARGETS: tuple[float, ...] = (-1.0, -2.0 / 3.0, -1.0 / 3.0, 0.0, 1.0 / 3.0, 2.0 / 3.0, 1.0)


@dataclass(frozen=True)
class AgentSpec:
    """How one demo agent is built.

    Attributes:
        name: Bundle name (``saved_models/<name>.pkl``).
        specialization: The seed's specialization label.
        timeframes: Timeframes its features come from.
        features: Ordered technical-core feature names (the observation).
        decision_minutes: The agent acts on the close of every ``decision_minutes``-minute
            bucket (UTC-aligned) and holds its position until the next one.
        episode_steps: Decisions per training episode.
        timesteps: PPO environment steps for the shipped agent.
        ppo: PPO hyperparameters (besides seed, policy and net_arch).
        net_arch: Hidden layers of the separate actor and critic MLPs.
        mirror: Also train on the mirrored market (prices ``K / p``, see
            :func:`training.data.mirror_bars`), so the training period's drift is not learned.
    """

    name: str
    specialization: str
    timeframes: tuple[str, ...]
    features: tuple[str, ...]
    decision_minutes: int
    episode_steps: int
    timesteps: int
    net_arch: tuple[int, ...] = (64, 64)
    mirror: bool = True
    ppo: dict = field(default_factory=dict)


def _tf(kinds: tuple[str, ...], timeframes: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(f"{kind}_{tf}" for tf in timeframes for kind in kinds)


_PPO = {
    "n_steps": 256,
    "batch_size": 512,
    "n_epochs": 5,
    "learning_rate": 3e-4,
    "gamma": 0.95,
    "gae_lambda": 0.9,
    "ent_coef": 0.01,
    "clip_range": 0.2,
}

TREND = AgentSpec(
    name="trend_agent",
    specialization="trend",
    timeframes=("5m", "15m", "1h"),
    features=(
        _tf(("ret_5", "macd_hist_pct", "rsi_14"), ("5m", "15m", "1h"))
        + _tf(("adx_14", "plus_di_14", "minus_di_14", "bb_pctb", "donchian_pos_20"), ("15m", "1h"))
        + ("ret_1_1h",)
    ),
    decision_minutes=60,
    episode_steps=168,
    timesteps=1_000_000,
    ppo=_PPO,
)

MEAN_REVERT = AgentSpec(
    name="mean_revert_agent",
    specialization="mean_reversion",
    timeframes=("1m", "5m"),
    features=(
        _tf(("rsi_14", "bb_pctb", "stoch_k", "stoch_d", "vol_z_20", "donchian_pos_20", "ret_1", "ret_5"), ("1m", "5m"))
        + ("bb_width_5m", "rsi_21_5m")
    ),
    decision_minutes=15,
    episode_steps=192,
    timesteps=1_000_000,
    ppo=_PPO,
)

VOLATILITY = AgentSpec(
    name="volatility_agent",
    specialization="volatility_breakout",
    timeframes=("1m", "5m", "15m"),
    features=(
        _tf(("atr_pct", "bb_width", "rvol_60", "vol_z_20"), ("1m", "5m", "15m"))
        + _tf(("donchian_pos_20", "sr_breakout", "ret_1", "ret_5"), ("5m", "15m"))
        + ("adx_14_15m",)
    ),
    decision_minutes=15,
    episode_steps=192,
    timesteps=1_000_000,
    ppo=_PPO,
)

AGENTS: dict[str, AgentSpec] = {spec.name: spec for spec in (TREND, MEAN_REVERT, VOLATILITY)}
