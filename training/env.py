"""A gymnasium trading environment over a precomputed, scaled feature matrix."""

from __future__ import annotations

import gymnasium as gym
import numpy as np

from training.agents import ACTION_TARGETS

# Rewards are in percent of equity: per-step log returns are ~1e-3, which leaves the value
# function's targets near zero; a constant factor does not change the optimal policy.
REWARD_SCALE = 100.0


class TradingEnv(gym.Env):
    """Trade one instrument by choosing a target position at each decision point.

    Observation: the agent's scaled features at decision ``t``. Action ``a`` sets the
    position ``p = ACTION_TARGETS[a]`` (in [-1, 1], a fraction of equity) held until
    ``t + 1``. Reward: ``REWARD_SCALE * (p * log_ret[t] - fee * |p - p_prev|)``.
    Episodes start flat at a uniformly drawn decision point (``reset(seed=...)`` makes them
    reproducible) and are truncated after ``episode_steps`` decisions; an episode never
    crosses from one segment (e.g. the real series and its mirror) into the next.

    Args:
        obs: Scaled features ``[n, k]`` (float32).
        log_ret: Log return from each decision point to the next ``[n]``.
        episode_steps: Decisions per episode (``<=`` the shortest segment).
        fee: Cost per unit of position traded (0.001 = 10 bps of the notional).
        segments: Lengths of the consecutive series stacked in ``obs`` (default: one).
    """

    metadata = {"render_modes": []}

    def __init__(
        self,
        obs: np.ndarray,
        log_ret: np.ndarray,
        episode_steps: int,
        fee: float,
        segments: tuple[int, ...] | None = None,
    ) -> None:
        if len(obs) != len(log_ret):
            raise ValueError(f"obs has {len(obs)} rows but log_ret has {len(log_ret)}")
        segments = tuple(segments) if segments else (len(obs),)
        if sum(segments) != len(obs):
            raise ValueError(f"segments {segments} do not add up to the {len(obs)} rows")
        if not 1 <= episode_steps <= min(segments):
            raise ValueError(f"episode_steps={episode_steps}: must be in [1, {min(segments)}]")
        offsets = np.cumsum((0,) + segments[:-1])
        self.starts = np.concatenate(
            [np.arange(o, o + n - episode_steps + 1) for o, n in zip(offsets, segments, strict=True)]
        )
        self.segment_end = np.concatenate(
            [np.full(n - episode_steps + 1, o + n) for o, n in zip(offsets, segments, strict=True)]
        )
        self.obs = np.ascontiguousarray(obs, dtype=np.float32)
        self.log_ret = np.asarray(log_ret, dtype=np.float64)
        self.episode_steps = episode_steps
        self.fee = fee
        self.targets = np.asarray(ACTION_TARGETS)
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, shape=(self.obs.shape[1],), dtype=np.float32)
        self.action_space = gym.spaces.Discrete(len(ACTION_TARGETS))
        self._t = 0
        self._end = 0
        self._last_row = 0
        self._position = 0.0

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        i = self.np_random.integers(0, len(self.starts))
        self._t = int(self.starts[i])
        self._end = self._t + self.episode_steps
        self._last_row = int(self.segment_end[i]) - 1
        self._position = 0.0
        return self.obs[self._t], {}

    def step(self, action: int) -> tuple[np.ndarray, float, bool, bool, dict]:
        position = float(self.targets[int(action)])
        reward = position * self.log_ret[self._t] - self.fee * abs(position - self._position)
        self._position = position
        self._t += 1
        truncated = self._t >= self._end
        # After the last step the observation only feeds the value bootstrap of truncation;
        # at a segment's end there is no next row, so its last row stands in.
        obs = self.obs[min(self._t, self._last_row)]
        return obs, REWARD_SCALE * reward, False, truncated, {"position": position}
