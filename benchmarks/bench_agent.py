"""CartPole-v1 PPO: the train-agent recipe beside Stable-Baselines3, same RL Zoo settings.

Both sides train PPO with the RL Zoo's tuned CartPole hyperparameters (8 environments,
n_steps 32, batch 256, 20 epochs, gae_lambda 0.8, gamma 0.98, learning rate 1e-3 and clip
range 0.2 both falling linearly, 64x64 tanh policy and value networks, 100k steps) and
are scored on 20 deterministic evaluation episodes. Each run is a fresh process (the
sides alternate, so machine load affects both alike); training wall time excludes
imports. SB3 and torch (CPU) live only in the benchmark's environment
(see benchmarks/README.md).

    python benchmarks/bench_agent.py cartpole [--seeds 0,1,2]
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
import tensorflow as tf
params, seed, threads = json.loads(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
if threads:
    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(threads)
from dltoolkit import Agent
with tempfile.TemporaryDirectory() as tmp:
    start = time.perf_counter()
    agent = Agent(**{{**params, "seed": seed}}).fit(out=tmp + "/run", progress=False)
    fit = time.perf_counter() - start
m = agent.metrics_
print(json.dumps({{"train_seconds": m["train_seconds"], "train_cpu": m["train_cpu_seconds"],
                  "fit_seconds": fit,
                  "mean_return": m["mean_return"], "std_return": m["std_return"]}}))
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
returns = []
play = gym.make("CartPole-v1")
for i in range(episodes):
    obs, _ = play.reset(seed=1_000_000 + 1000 * seed + i)
    total, done = 0.0, False
    while not done:
        action, _ = model.predict(obs, deterministic=True)
        obs, reward, terminated, truncated, _ = play.step(int(action))
        total, done = total + reward, terminated or truncated
    returns.append(total)
print(json.dumps({{"train_seconds": train, "train_cpu": train_cpu, "mean_return": float(np.mean(returns)),
                  "std_return": float(np.std(returns))}}))
"""


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
        sb3 = run_script(SB3.format(steps=STEPS), json.dumps(ZOO), seed, EVAL_EPISODES, threads)
        ours = run_script(OURS.format(root=str(ROOT)), json.dumps(ours_params()), seed, threads)
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


def recipe(path: str, seeds: list[int], threads: int) -> None:
    sys.path.insert(0, str(ROOT))
    from dltoolkit.core.config import read_recipe_file

    params = read_recipe_file(path)["params"]
    for seed in seeds:
        result = run_script(OURS.format(root=str(ROOT)), json.dumps(params), seed, threads)
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
    parser.add_argument("what", choices=("cartpole", "recipe"))
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
    else:
        recipe(args.recipe_file, seeds, args.threads)
    print(f"load average at the end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
