"""The train-agent recipe beside Stable-Baselines3 with the same RL Zoo settings.

`cartpole`: both sides train PPO with the RL Zoo's tuned CartPole hyperparameters (8
environments, n_steps 32, batch 256, 20 epochs, gae_lambda 0.8, gamma 0.98, learning rate
1e-3 and clip range 0.2 both falling linearly, 64x64 tanh policy and value networks, 100k
steps) and are scored on 20 deterministic evaluation episodes.

`mountaincar`: both sides train DQN with the RL Zoo's tuned MountainCar-v0 hyperparameters
(recipes/mountaincar_dqn.toml, 120k steps; the recipe is double DQN and scales its
observations by their bounds, SB3 takes the Zoo's settings as they are). The recipe keeps
its best evaluated policy (every 5k steps, 20 evaluation episodes: its validation); SB3
keeps its last, as the RL Zoo reports it. Both are then scored on 100 test episodes whose reset seeds are disjoint
from the recipe's evaluation episodes, and the recipe's last policy (final.keras) on them too.

Each run is a fresh process (the sides alternate, so machine load affects both alike);
training wall time excludes imports (and the recipe's evaluations: `fit s` has everything).
SB3 and torch (CPU) live only in the benchmark's environment (see benchmarks/README.md).

    python benchmarks/bench_agent.py cartpole [--seeds 0,1,2]
    python benchmarks/bench_agent.py mountaincar [--seeds 0,1,2]
    python benchmarks/bench_agent.py recipe recipes/acrobot_dqn.toml [--seeds 0]

Environments come from gymnasium itself (no data path is needed): `recipe` runs any
recipe file of the agent and reports its evaluation and wall time.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STEPS = 100_000
EVAL_EPISODES = 20
TEST_EPISODES = 100
TEST_SEED_OFFSET = 100  # test episodes: the evaluation seeds of run seed + 100
ZOO = {
    "n_envs": 8,
    "n_steps": 32,
    "batch_size": 256,
    "n_epochs": 20,
    "gae_lambda": 0.8,
    "gamma": 0.98,
    "learning_rate": 1e-3,
    "clip_range": 0.2,
    "ent_coef": 0.0,
}

OURS = """
import json, sys, tempfile, time
sys.path.insert(0, {root!r})
import keras
import tensorflow as tf
params, seed, threads = json.loads(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
test_seed, test_episodes = int(sys.argv[4]), int(sys.argv[5])
if threads:
    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(threads)
from dltoolkit import Agent
test = {{}}
with tempfile.TemporaryDirectory() as tmp:
    start = time.perf_counter()
    agent = Agent(**{{**params, "seed": seed}}).fit(out=tmp + "/run", progress=False)
    fit = time.perf_counter() - start
    if test_episodes:
        kept = agent.evaluate(episodes=test_episodes, seed=test_seed)
        agent.model_ = keras.saving.load_model(agent.run_.final_model_file)
        final = agent.evaluate(episodes=test_episodes, seed=test_seed)
        test = {{"test_return": kept["mean_return"], "test_std": kept["std_return"],
                "test_final_return": final["mean_return"], "test_final_std": final["std_return"]}}
m = agent.metrics_
print(json.dumps({{"train_seconds": m["train_seconds"], "train_cpu": m["train_cpu_seconds"],
                  "fit_seconds": fit, "kept_steps": m["kept_steps"],
                  "mean_return": m["mean_return"], "std_return": m["std_return"],
                  "final_return": m["final_return"], **test}}))
"""

SB3 = """
import json, sys, time
import gymnasium as gym
import numpy as np
from stable_baselines3 import PPO
from stable_baselines3.common.env_util import make_vec_env
import torch
zoo, seed, episodes, threads = json.loads(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
if threads:
    torch.set_num_threads(threads)
linear = lambda value: (lambda remaining: remaining * value)
env = make_vec_env("CartPole-v1", n_envs=zoo["n_envs"], seed=seed)
model = PPO("MlpPolicy", env, n_steps=zoo["n_steps"], batch_size=zoo["batch_size"],
            n_epochs=zoo["n_epochs"], gae_lambda=zoo["gae_lambda"], gamma=zoo["gamma"],
            learning_rate=linear(zoo["learning_rate"]), clip_range=linear(zoo["clip_range"]),
            ent_coef=zoo["ent_coef"], seed=seed, device="cpu", verbose=0)
start, cpu = time.perf_counter(), time.process_time()
model.learn({steps})
train, train_cpu = time.perf_counter() - start, time.process_time() - cpu
seeds = [1_000_000 + 1000 * seed + i for i in range(episodes)]
returns = play(model, "CartPole-v1", seeds)
print(json.dumps({{"train_seconds": train, "train_cpu": train_cpu, "mean_return": float(np.mean(returns)),
                  "std_return": float(np.std(returns))}}))
"""

SB3_PLAY = """
def play(model, env_id, seeds):
    returns, env = [], gym.make(env_id)
    for episode_seed in seeds:
        obs, _ = env.reset(seed=episode_seed)
        total, done = 0.0, False
        while not done:
            action, _ = model.predict(obs, deterministic=True)
            obs, reward, terminated, truncated, _ = env.step(int(action))
            total, done = total + reward, terminated or truncated
        returns.append(total)
    return returns
"""

MOUNTAINCAR = ROOT / "recipes" / "mountaincar_dqn.toml"
SB3_DQN_KEYS = (
    "learning_rate", "batch_size", "buffer_size", "learning_starts", "gamma",
    "target_update_interval", "train_freq", "gradient_steps", "exploration_fraction",
    "exploration_final_eps",
)  # fmt: skip

SB3_DQN = """
import json, sys, time
import gymnasium as gym
import numpy as np
from stable_baselines3 import DQN
import torch
zoo, seed, seeds, threads = json.loads(sys.argv[1]), int(sys.argv[2]), json.loads(sys.argv[3]), int(sys.argv[4])
if threads:
    torch.set_num_threads(threads)
env = gym.make(zoo.pop("env"))
steps, hidden = zoo.pop("steps"), zoo.pop("hidden")
model = DQN("MlpPolicy", env, policy_kwargs=dict(net_arch=hidden), seed=seed, device="cpu",
            verbose=0, **zoo)
start, cpu = time.perf_counter(), time.process_time()
model.learn(steps)
train, train_cpu = time.perf_counter() - start, time.process_time() - cpu
returns = play(model, env.spec.id, seeds)
print(json.dumps({"train_seconds": train, "train_cpu": train_cpu,
                  "test_return": float(np.mean(returns)), "test_std": float(np.std(returns))}))
"""


def sb3_script(body: str) -> str:
    """An SB3 script: its imports, then `play`, then the rest of `body`."""
    head, _, rest = body.partition("import torch\n")
    return head + "import torch\n" + SB3_PLAY + rest


def run_script(source: str, *args) -> dict:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    proc = subprocess.run(
        [sys.executable, "-c", source, *map(str, args)],
        capture_output=True,
        text=True,
        env=env,
        timeout=3600,
    )
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr[-3000:])
    return json.loads(proc.stdout.strip().splitlines()[-1])


def ours_params() -> dict:
    return {
        "env": "CartPole-v1",
        "algo": "ppo",
        "steps": STEPS,
        "schedule": "linear",
        "eval_every": 0,
        "eval_episodes": EVAL_EPISODES,
        "hidden": "64,64",
        **ZOO,
    }


def cartpole(seeds: list[int], threads: int) -> None:
    rows = []
    for seed in seeds:
        sb3 = run_script(
            sb3_script(SB3.format(steps=STEPS)), json.dumps(ZOO), seed, EVAL_EPISODES, threads
        )
        ours = run_ours(ours_params(), seed, threads)
        for name, result in (("SB3 PPO (torch)", sb3), ("dltoolkit train-agent", ours)):
            rows.append({"side": name, "seed": seed, **result})
            print(_row(rows[-1]), flush=True)
    print()
    print(
        "| side | seeds solved (>= 475) | mean return | train wall s (median) | train CPU s (median) | per seed: return, wall s |"
    )
    print("|---|---|---|---|---|---|")
    for name in dict.fromkeys(r["side"] for r in rows):
        mine = [r for r in rows if r["side"] == name]
        solved = sum(r["mean_return"] >= 475 for r in mine)
        print(
            f"| {name} | {solved}/{len(mine)} | "
            f"{statistics.mean(r['mean_return'] for r in mine):.1f} | "
            f"{statistics.median(r['train_seconds'] for r in mine):.1f} | "
            f"{statistics.median(r['train_cpu'] for r in mine):.1f} | "
            + ", ".join(f"{r['mean_return']:.0f} in {r['train_seconds']:.1f}s" for r in mine)
            + " |"
        )


def run_ours(params: dict, seed: int, threads: int, test_episodes: int = 0) -> dict:
    """The recipe in a fresh process; with `test_episodes`, its kept and final policies
    are also played on that many test episodes."""
    source = OURS.format(root=str(ROOT))
    test_seed = seed + TEST_SEED_OFFSET
    return run_script(source, json.dumps(params), seed, threads, test_seed, test_episodes)


def recipe_params(path: str | Path) -> dict:
    sys.path.insert(0, str(ROOT))
    from dltoolkit.core.config import read_recipe_file

    return read_recipe_file(path)["params"]


def mountaincar(seeds: list[int], threads: int) -> None:
    """DQN on MountainCar-v0 beside SB3's, both on the same 100 test episodes per seed."""
    from dltoolkit.rl.evaluation import evaluation_seeds

    params = recipe_params(MOUNTAINCAR)
    zoo = {k: params[k] for k in SB3_DQN_KEYS}
    zoo |= {"env": params["env"], "steps": params["steps"]}
    zoo["hidden"] = [int(units) for units in params["hidden"].split(",")]
    rows = []
    for seed in seeds:
        test_seeds = evaluation_seeds(seed + TEST_SEED_OFFSET, TEST_EPISODES)
        sb3 = run_script(
            sb3_script(SB3_DQN), json.dumps(zoo), seed, json.dumps(test_seeds), threads
        )
        ours = run_ours(params, seed, threads, TEST_EPISODES)
        for name, result in (("SB3 DQN (torch), last", sb3), ("dltoolkit train-agent", ours)):
            rows.append({"side": name, "seed": seed, **result})
            print(json.dumps(rows[-1]), flush=True)
    print()
    print(
        f"| side | seed | test return ({TEST_EPISODES} episodes) | kept at step | "
        "final policy's test return | train wall s | train CPU s | fit wall s |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        final = (
            f"{r['test_final_return']:.1f} ± {r['test_final_std']:.1f}" if "kept_steps" in r else ""
        )
        cells = (
            r["side"],
            r["seed"],
            f"{r['test_return']:.1f} ± {r['test_std']:.1f}",
            r.get("kept_steps", "last"),
            final,
            f"{r['train_seconds']:.1f}",
            f"{r['train_cpu']:.1f}",
            f"{r['fit_seconds']:.1f}" if "fit_seconds" in r else "",
        )
        print("| " + " | ".join(map(str, cells)) + " |")
    for name in dict.fromkeys(r["side"] for r in rows):
        mine = [r for r in rows if r["side"] == name]
        print(
            f"{name}: mean test return {statistics.mean(r['test_return'] for r in mine):.1f}, "
            f"worst seed {min(r['test_return'] for r in mine):.1f}, median train wall "
            f"{statistics.median(r['train_seconds'] for r in mine):.1f} s"
        )


def recipe(path: str, seeds: list[int], threads: int) -> None:
    params = recipe_params(path)
    for seed in seeds:
        result = run_ours(params, seed, threads)
        print(
            _row({"side": f"{params['env']} {params['algo']}", "seed": seed, **result}), flush=True
        )


def _row(r: dict) -> str:
    return (
        f"{r['side']:24s} seed {r['seed']}: return {r['mean_return']:8.1f} ± "
        f"{r['std_return']:6.1f}   train {r['train_seconds']:6.1f} s wall, "
        f"{r['train_cpu']:6.1f} s CPU"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=("cartpole", "mountaincar", "recipe"))
    parser.add_argument("recipe_file", nargs="?")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument(
        "--threads",
        type=int,
        default=0,
        help="CPU threads for torch and TensorFlow on both sides (0: their defaults)",
    )
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    print(
        f"{platform.node()} {os.cpu_count()} CPUs; threads {args.threads or 'default'}; load average "
        f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}; {time.strftime('%Y-%m-%d %H:%M')}"
    )
    if args.what == "cartpole":
        cartpole(seeds, args.threads)
    elif args.what == "mountaincar":
        mountaincar(seeds, args.threads)
    else:
        recipe(args.recipe_file, seeds, args.threads)
    print(f"load average at the end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
