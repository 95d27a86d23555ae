"""One agent decision, batch 1: an exported PPO through ``l2fast.models.loading`` vs SB3 ``predict``.

The agent is SB3's default ``MlpPolicy`` PPO (two 64-unit tanh layers, shared extractor)
on 24 features with 7 discrete actions and a StandardScaler, trained briefly, saved as a
seed-format ``.pkl`` bundle and exported from that file with ``l2fast.export.export_model``
(safe loading, graph, 10,000-sample parity check). Ours is
``LoadedModel.act(raw_features)``: scaler folded into the graph, preallocated buffers bound
to onnxruntime once, single-threaded session. SB3's side is ``model.predict(obs,
deterministic=True)`` on the *already scaled* observation, so ours does strictly more work.
Both are checked to return the same action before timing. The export time is printed and
stored in the benchmark's ``extra_info``.

Gate (SB3 median / ours median) sits at roughly half the ratio measured on the 2-core
development machine; ``target`` is the issue's ">= 15x".
"""

from __future__ import annotations

import io
import pickle

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("stable_baselines3")
pytest.importorskip("sklearn")

N_FEATURES = 24
GROUP = "agent decision, batch 1"


@pytest.fixture(scope="module")
def exported_ppo(tmp_path_factory):
    import gymnasium as gym
    from gymnasium import spaces
    from sklearn.preprocessing import StandardScaler
    from stable_baselines3 import PPO

    from l2fast.export import export_model
    from l2fast.models.loading import load_model

    class Toy(gym.Env):
        observation_space = spaces.Box(-np.inf, np.inf, (N_FEATURES,), np.float32)
        action_space = spaces.Discrete(7)

        def reset(self, *, seed=None, options=None):
            super().reset(seed=seed)
            self.t = 0
            return self.np_random.standard_normal(N_FEATURES).astype(np.float32), {}

        def step(self, action):
            self.t += 1
            obs = self.np_random.standard_normal(N_FEATURES).astype(np.float32)
            return obs, float((int(action) - 3) * obs[0]), self.t >= 128, False, {}

    model = PPO("MlpPolicy", Toy(), n_steps=256, batch_size=64, n_epochs=2, seed=0, device="cpu")
    model.learn(1024)
    raw_train = np.random.default_rng(0).normal(50.0, 20.0, (5000, N_FEATURES))
    scaler = StandardScaler().fit(raw_train)
    archive = io.BytesIO()
    model.save(archive)
    folder = tmp_path_factory.mktemp("bench")
    bundle = folder / "bench_ppo.pkl"
    bundle.write_bytes(pickle.dumps({
        "model": archive.getvalue(), "scaler": scaler, "feature_names": [f"f{i}" for i in range(N_FEATURES)],
        "action_space": 7, "specialization": "benchmark", "performance_metrics": {}, "training_config": {},
    }))
    report = export_model(bundle, folder / "onnx", samples=10_000)
    print(f"\nexport of the default-MlpPolicy PPO bundle: {report.seconds:.2f} s (10,000 parity samples)")
    loaded = load_model(report.manifest_path)
    row = raw_train[17]
    scaled = scaler.transform(row[None, :]).astype(np.float32)[0]
    assert loaded.act(row) == int(model.predict(scaled, deterministic=True)[0])
    return model, loaded, row, scaled, report.seconds


@pytest.mark.parametrize("impl", ["l2fast.LoadedModel.act", "sb3.predict"])
def test_agent_decision_batch_1(bench, exported_ppo, impl: str) -> None:
    model, loaded, row, scaled, export_seconds = exported_ppo
    if impl.startswith("l2fast"):
        b = bench(GROUP, impl, percentiles=True)
        b.extra_info["export_seconds"] = export_seconds
        b(loaded.act, row)
    else:
        b = bench(GROUP, impl, gate=8.0, target=15.0, percentiles=True)
        b(model.predict, scaled, deterministic=True)
