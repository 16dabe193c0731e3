"""Agent end to end on real gymnasium environments: learning, save/load, export, resume, CLI."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import gymnasium as gym
import keras
import numpy as np
import pytest
from PIL import Image
from serving import ServingProcess
from test_cli import assert_user_error, cli

from dltoolkit import Agent, load
from dltoolkit.core.callbacks import read_history
from dltoolkit.core.config import read_recipe_file
from dltoolkit.core.errors import ConfigError
from dltoolkit.core.runlock import LOCK_FILE
from dltoolkit.rl.evaluation import evaluation_seeds, play, summarize

CARTPOLE_STEPS = 8192


@pytest.fixture(scope="module")
def cartpole(fits):
    """PPO for CARTPOLE_STEPS, evaluated every 4096 (contract_cases.TRAIN_AGENT)."""
    agent, folder = fits.get("train-agent")
    return agent, folder / "run"


def random_return(env_id: str, episodes: int, seed: int, options=None) -> float:
    """Mean return of uniformly random actions on the evaluation episodes."""
    space = gym.make(env_id, **(options or {})).action_space
    rng = np.random.default_rng(0)

    def policy(obs):
        return np.array([rng.integers(space.n) for _ in obs])

    return summarize(
        play(policy, env_id, options or {}, evaluation_seeds(seed, episodes), np.float32)
    )["mean_return"]


def test_ppo_on_cartpole_learns_and_writes_a_run(cartpole):
    agent, out = cartpole
    for name in (
        "recipe.toml",
        "model.keras",
        "state.json",
        "history.csv",
        "metrics.json",
        "report.html",
        "checkpoints/agent.npz",
        "plots/learning_curve.png",
    ):
        assert (out / name).is_file(), name
    m = agent.metrics_
    baseline = random_return("CartPole-v1", 10, seed=3)
    assert baseline < 40
    assert m["mean_return"] > 3 * baseline, (m, baseline)
    assert m["steps"] >= CARTPOLE_STEPS and m["episodes"] == 10
    history = read_history(out / "history.csv")
    assert [r["steps"] for r in history] == [4096, m["steps"]]
    assert history[-1]["eval_return"] == m["mean_return"]
    assert history[0]["seconds"] < history[-1]["seconds"]
    assert "Learning curve" in (out / "report.html").read_text()
    assert read_recipe_file(out)["params"]["env"] == "CartPole-v1"


def test_evaluate_repeats_the_final_evaluation_and_load_plays_identically(cartpole):
    agent, out = cartpole
    again = agent.evaluate()
    assert again["mean_return"] == agent.metrics_["mean_return"]
    observations = np.random.default_rng(0).normal(0, 0.5, (64, 4)).astype(np.float32)
    assert {r["action"] for r in agent.predict(observations)} == {0, 1}
    assert load(out).evaluate(episodes=5) == agent.evaluate(episodes=5)


def test_cli_evaluate_and_predict_render_a_gif(cartpole, tmp_path, capsys):
    _, out = cartpole
    code, stdout, err = cli(capsys, "evaluate", out, "--episodes", "4", "--json")
    assert code == 0, err
    metrics = json.loads(stdout)
    assert metrics["episodes"] == 4 and metrics["std_return"] >= 0
    gif = tmp_path / "episodes.gif"
    code, stdout, err = cli(
        capsys,
        "predict",
        out,
        "--episodes",
        "1",
        "--render",
        "rgb",
        "--out",
        gif,
        "--seed",
        "7",
        "--json",
    )
    assert code == 0, err
    rows = json.loads(stdout)
    assert [r["episode"] for r in rows] == [1] and rows[0]["gif"] == str(gif)
    assert rows[0]["seed"] == evaluation_seeds(7, 1)[0]
    with Image.open(gif) as image:  # GIF merges repeated frames: at most one per step
        assert rows[0]["length"] / 2 < image.n_frames <= rows[0]["length"] + 1
        assert image.size == (600, 400)
    assert_user_error(*cli(capsys, "predict", out, "--render", "ascii"), "render mode", "rgb")


@pytest.mark.parametrize("env", ["CartPole-v1", "Pendulum-v1"])
def test_the_export_serves_the_policy_formula_on_raw_observations(env, tmp_path):
    """The served outputs are the old export's formula, computed here in float64 from the
    weights: observations normalised by the running statistics (clipped to ±10), the tanh
    policy MLP, then softmax probabilities (discrete) or means clipped to the bounds."""
    agent = Agent(
        env=env, algo="ppo", steps=1024, normalize_obs=True, eval_every=0, eval_episodes=1, seed=2
    )
    agent.fit(out=tmp_path / "run", progress=False)
    weights = {
        w.path: keras.ops.convert_to_numpy(w).astype(np.float64) for w in agent.model_.weights
    }
    assert weights["obs_norm/count"] > 0  # the statistics moved: the check is not trivial
    obs = np.random.default_rng(1).normal(0, 2, (32, *agent.spaces_.obs_shape)).astype(np.float32)
    x = (obs - weights["obs_norm/mean"]) / np.sqrt(weights["obs_norm/var"] + 1e-8)
    x = np.clip(x, -10, 10)
    for layer in ("pi_0", "pi_1"):
        x = np.tanh(x @ weights[f"{layer}/kernel"] + weights[f"{layer}/bias"])
    head = x @ weights["policy/kernel"] + weights["policy/bias"]
    server = ServingProcess()
    try:
        served = server.call(agent.export(), {"observation": obs})
    finally:
        server.close()
    if env == "CartPole-v1":
        expected = np.exp(head - head.max(axis=1, keepdims=True))
        expected /= expected.sum(axis=1, keepdims=True)
        np.testing.assert_allclose(served["probabilities"], expected, rtol=1e-5, atol=1e-6)
        np.testing.assert_array_equal(served["actions"], head.argmax(axis=1))
    else:
        spaces = agent.spaces_
        np.testing.assert_allclose(served["means"], head, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(
            served["actions"], np.clip(head, spaces.low, spaces.high), rtol=1e-5, atol=1e-6
        )


def test_q_learning_solves_frozen_lake_and_serves_state_indices(tmp_path):
    options = "is_slippery=false"
    agent = Agent(
        env="FrozenLake-v1",
        algo="q-learning",
        env_options=options,
        steps=20_000,
        exploration_fraction=0.5,
        gamma=0.95,
        eval_every=0,
        eval_episodes=10,
    )
    agent.fit(out=tmp_path / "lake", progress=False)
    assert agent.metrics_["mean_return"] == 1.0
    written = {
        path: path.stat().st_mtime_ns
        for path in (tmp_path / "lake").rglob("*")
        if path.name != LOCK_FILE
    }
    again = Agent(env="FrozenLake-v1", algo="q-learning", env_options=options, steps=40_000)
    again.fit(out=tmp_path / "lake", resume=True, progress=False)  # finished: trains nothing
    assert again.config.steps == 20_000 and again.metrics_ == agent.metrics_
    assert {
        path: path.stat().st_mtime_ns
        for path in (tmp_path / "lake").rglob("*")
        if path.name != LOCK_FILE
    } == written
    assert random_return("FrozenLake-v1", 10, 0, {"is_slippery": False}) < 0.5
    rows = load(tmp_path / "lake").predict([0, 14])
    assert rows[1]["action"] == 2  # next to the goal: move right
    assert len(rows[0]["q_values"]) == 4


def test_sarsa_learns_a_users_own_registered_environment(tmp_path, monkeypatch):
    package = tmp_path / "my_pkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "envs.py").write_text(
        textwrap.dedent(
            """
        import gymnasium as gym

        class Corridor(gym.Env):
            '''Walk right along 6 cells to the goal; every step costs 0.1.'''
            observation_space = gym.spaces.Discrete(6)
            action_space = gym.spaces.Discrete(2)

            def reset(self, *, seed=None, options=None):
                super().reset(seed=seed)
                self.at = 0
                return self.at, {}

            def step(self, action):
                self.at = max(0, self.at + (1 if action == 1 else -1))
                done = self.at == 5
                return self.at, (1.0 if done else -0.1), done, False, {}

        gym.register("Corridor-v0", entry_point=Corridor, max_episode_steps=50)
        """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    agent = Agent(
        env="my_pkg.envs:Corridor-v0",
        algo="sarsa",
        steps=6000,
        n_envs=4,
        exploration_fraction=0.5,
        eval_every=0,
        eval_episodes=3,
    )
    agent.fit(out=tmp_path / "corridor", progress=False)
    assert agent.metrics_["mean_return"] == pytest.approx(0.6)  # the shortest path: 5 steps


def test_a_killed_run_resumes_from_its_checkpoint(tmp_path, capsys):
    out = tmp_path / "lake"
    command = [
        sys.executable,
        "-m",
        "dltoolkit",
        "train-agent",
        "--env",
        "FrozenLake-v1",
        "--algo",
        "q-learning",
        "--steps",
        "50000000",
        "--eval-every",
        "2000",
        "--n-envs",
        "1",
        "--out",
        str(out),
        "--quiet",
    ]
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 120
        while time.time() < deadline and len(read_history(out / "history.csv")) < 2:
            time.sleep(0.1)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    before = read_history(out / "history.csv")
    assert len(before) >= 2, "the run must have checkpointed before it was killed"
    assert not (out / "model.keras").exists()
    code, _, err = cli(capsys, "train-agent", "--out", out, "--resume", "--set", "steps=24000")
    assert code == 0, err
    assert "resuming from step" in err
    history = read_history(out / "history.csv")
    assert history[0] == before[0]  # kept, not retrained: same wall-clock stamp
    steps = [r["steps"] for r in history]
    assert steps == sorted(set(steps)) and steps[-1] == 24000
    assert json.loads((out / "metrics.json").read_text())["steps"] == 24000
    assert read_recipe_file(out)["params"]["env"] == "FrozenLake-v1"


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (["--env", "CartPol-v1"], ["unknown environment 'CartPol-v1'", "CartPole-v1"]),
        (["--env", "no_such_pkg.envs:Grid-v0"], ["cannot import 'no_such_pkg.envs'"]),
        (["--env", "LunarLander-v3"], ["needs an extra package", "box2d"]),
        (["--env", "Pendulum-v1", "--algo", "dqn"], ["dqn needs discrete actions", "Pendulum-v1"]),
        (["--algo", "q-learning"], ["tabular", "discrete observation space", "CartPole-v1"]),
        (["--steps", "0"], ["'steps' is 0", "must be >= 1"]),
        (["--steps", "-5"], ["'steps' is -5", "must be >= 1"]),
        (["--algo", "reinforce-x"], ["'algo' is 'reinforce-x'", "ppo"]),
        (["--strategy", "multi-worker"], ["trains in one process on one device", "multi-worker"]),
        (["--strategy", "mirrored"], ["trains in one process on one device", "mirrored"]),
        (["--env-options", "is_slippery"], ["not key=value"]),
    ],
)
def test_bad_input_is_one_line_and_writes_nothing(tmp_path, capsys, args, fragments):
    out = tmp_path / "run"
    assert_user_error(*cli(capsys, "train-agent", *args, "--out", out), *fragments)
    assert not out.exists()


def test_help_says_one_process_and_python_api_rejects_data(capsys):
    code, out, _ = cli(capsys, "train-agent", "--help")
    assert code == 0 and "one process" in " ".join(out.split())
    with pytest.raises(ConfigError, match="step count, not data"):
        Agent().fit("CartPole-v1")


@pytest.mark.parametrize(
    "name", ["cartpole_ppo", "acrobot_dqn", "pendulum_ppo", "frozenlake_qlearning"]
)
def test_recipe_files_are_valid_for_their_environment(name):
    doc = read_recipe_file(Path(__file__).parents[1] / "recipes" / f"{name}.toml")
    agent = Agent(**doc["params"])
    agent._validate()
    prepared = agent._prepare(None, None)
    assert prepared.spaces.continuous == (name == "pendulum_ppo")


@pytest.mark.slow
@pytest.mark.parametrize(
    ("algo", "params"),
    [
        (
            "dqn",
            {
                "steps": 30_000,
                "n_envs": 1,
                "learning_rate": 2.3e-3,
                "batch_size": 64,
                "buffer_size": 100_000,
                "learning_starts": 1000,
                "gamma": 0.99,
                "target_update_interval": 10,
                "train_freq": 256,
                "gradient_steps": 128,
                "exploration_fraction": 0.16,
                "exploration_final_eps": 0.04,
                "hidden": "256,256",
                "schedule": "constant",
            },
        ),
        (
            "a2c",
            {
                "steps": 50_000,
                "n_steps": 5,
                "gamma": 0.99,
                "gae_lambda": 1.0,
                "learning_rate": 7e-4,
                "schedule": "constant",
            },
        ),
    ],
)
def test_dqn_and_a2c_learn_cartpole(tmp_path, algo, params):
    """The best evaluation beats random play fivefold (DQN on CartPole is known to swing
    between solving it and forgetting, so the last evaluation alone is not the test)."""
    agent = Agent(env="CartPole-v1", algo=algo, eval_every=5000, eval_episodes=10, **params)
    agent.fit(out=tmp_path / algo, progress=False)
    best = max(r["eval_return"] for r in read_history(tmp_path / algo / "history.csv"))
    assert best > 5 * random_return("CartPole-v1", 10, 0)


@pytest.mark.slow
def test_ppo_learns_continuous_pendulum(tmp_path):
    agent = Agent(
        env="Pendulum-v1",
        algo="ppo",
        steps=40_960,
        n_envs=4,
        n_steps=1024,
        batch_size=64,
        n_epochs=10,
        gae_lambda=0.95,
        gamma=0.9,
        learning_rate=1e-3,
        schedule="constant",
        normalize_obs=True,
        normalize_reward=True,
        eval_every=0,
        eval_episodes=10,
    )
    agent.fit(out=tmp_path / "pendulum", progress=False)
    assert agent.metrics_["mean_return"] > -700  # random torques: about -1200
    rows = agent.predict(np.zeros((2, 3), np.float32))
    assert all(-2.0 <= r["action"][0] <= 2.0 and "means" in r for r in rows)
