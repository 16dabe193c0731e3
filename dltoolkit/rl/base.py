"""What every algorithm shares: stepping vectorised environments with episode bookkeeping,
the training loop with periodic evaluation, the best evaluated policy, history and
checkpoints. Each algorithm adds its model, how it acts and its update (`_iteration`)."""

from __future__ import annotations

import abc
import json
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import keras
import numpy as np
import tensorflow as tf
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from dltoolkit.core import files
from dltoolkit.core.callbacks import read_history, write_history
from dltoolkit.core.errors import ConfigError
from dltoolkit.models.policy import deterministic_policy
from dltoolkit.rl import evaluation
from dltoolkit.rl.envs import Spaces, make_vector_env, observation_dtype

CHECKPOINT = "agent.npz"


@dataclass
class Transition:
    """One vector step: next observations (after auto-reset), rewards, end flags, and the
    true next observations (the final ones where an episode ended)."""

    obs: np.ndarray
    reward: np.ndarray
    terminated: np.ndarray
    truncated: np.ndarray
    next_obs: np.ndarray

    @property
    def done(self) -> np.ndarray:
        return self.terminated | self.truncated


class Algorithm(abc.ABC):
    """A reinforcement-learning algorithm bound to one environment and one config."""

    name: ClassVar[str] = ""
    needs_discrete_obs: ClassVar[bool] = False
    needs_discrete_actions: ClassVar[bool] = False
    default_learning_rate: ClassVar[float] = 1e-3
    default_activation: ClassVar[str] = "tanh"
    default_max_grad_norm: ClassVar[float] = 0.5

    def __init__(self, config, spaces: Spaces, env_options: dict):
        self.config = config
        self.spaces = spaces
        self.env_options = env_options
        self.dtype = observation_dtype(spaces)
        self.learning_rate = config.learning_rate or self.default_learning_rate
        self.activation = config.activation or self.default_activation
        self.max_grad_norm = config.max_grad_norm or self.default_max_grad_norm
        self.steps = 0
        self.seconds = 0.0
        self.cpu_seconds = 0.0  # process CPU time: less disturbed than wall time on a busy machine
        self.episodes = 0
        self.recent: deque[float] = deque(maxlen=100)
        self.rng = np.random.default_rng(config.seed)
        self.calls = 0  # stateless-random counter: the sampling stream survives a resume
        self.stats: dict[str, float] = {}
        self.best: dict | None = None  # steps and result of the best evaluation so far
        self._best_weights: list[np.ndarray] = []  # the model's weights at that evaluation
        self.model: keras.Model = self._build()
        self._compile()
        self.greedy = self._compiled(
            deterministic_policy(self.model, spaces.low, spaces.high), None
        )

    @classmethod
    def check(cls, spaces: Spaces, env_id: str) -> None:
        """A ConfigError when this algorithm cannot learn in `env_id`'s spaces."""
        if cls.needs_discrete_actions and spaces.continuous:
            raise ConfigError(
                f"{cls.name} needs discrete actions, but {env_id} has continuous "
                "actions; use --algo ppo or a2c"
            )
        if cls.needs_discrete_obs and spaces.obs_states is None:
            raise ConfigError(
                f"{cls.name} is tabular and needs a discrete observation space, but "
                f"{env_id} observes arrays of shape {spaces.obs_shape}; use --algo "
                f"{'ppo' if spaces.continuous else 'dqn or ppo'}"
            )

    @abc.abstractmethod
    def _build(self) -> keras.Model:
        """Build the policy model (and optimizer, target networks, buffers)."""

    def _compile(self) -> None:
        """Compile the algorithm's hot steps (once `self.model` exists)."""

    @abc.abstractmethod
    def _iteration(self, envs, obs: np.ndarray) -> np.ndarray:
        """Collect some experience from `obs` on, update, and return the latest observations."""

    # -- stepping ---------------------------------------------------------------------------

    def _compiled(self, fn, batch: int | None, *extra: tf.TensorSpec, jit=True):
        """`fn(observations, *extra)` XLA-compiled for a fixed signature. Calling the concrete
        function skips tf.function's argument matching: a fraction of the cost per call."""
        obs = tf.TensorSpec([batch, *self.spaces.obs_shape], tf.as_dtype(self.dtype))
        return tf.function(fn, jit_compile=jit).get_concrete_function(obs, *extra)

    def _seed_spec(self) -> tf.TensorSpec:
        return tf.TensorSpec([2], tf.int64)

    def _seed(self) -> tf.Tensor:
        """A fresh seed for a stateless random op."""
        self.calls += 1
        return tf.constant([self.config.seed, self.calls], tf.int64)

    def _step(self, envs, actions: np.ndarray) -> Transition:
        if self.spaces.continuous:
            actions = np.clip(actions, self.spaces.low, self.spaces.high)
        obs, reward, terminated, truncated, info = envs.step(actions)
        obs = obs.astype(self.dtype, copy=False)
        reward = reward.astype(np.float32)
        self._episode_return += reward
        done = terminated | truncated
        next_obs = obs
        if done.any():
            next_obs = obs.copy()
            for i in np.flatnonzero(done):
                next_obs[i] = info["final_obs"][i]
                self.recent.append(float(self._episode_return[i]))
                self._episode_return[i] = 0.0
            self.episodes += int(done.sum())
        self.steps += envs.num_envs
        return Transition(obs, reward, terminated, truncated, next_obs)

    def progress_left(self) -> float:
        """1 at the start of training, 0 at its end: drives linear schedules."""
        return max(0.0, 1.0 - self.steps / self.config.steps)

    def _scheduled(self, value: float) -> float:
        return value * self.progress_left() if self.config.schedule == "linear" else value

    # -- the training loop ----------------------------------------------------------------

    def learn(self, history_file: Path, checkpoint_dir: Path, console: Console | None) -> None:
        """Train until `config.steps`, evaluating and checkpointing every `eval_every` steps
        and at the end."""
        c = self.config
        envs = make_vector_env(c.env, c.n_envs, self.env_options)
        self._episode_return = np.zeros(c.n_envs, np.float32)
        history = [r for r in read_history(history_file) if r["steps"] <= self.steps]
        every = c.eval_every or c.steps
        next_eval = (self.steps // every + 1) * every
        started = time.perf_counter() - self.seconds
        cpu_started = time.process_time() - self.cpu_seconds
        try:
            obs, _ = envs.reset(seed=[c.seed * 10_000 + self.steps + i for i in range(c.n_envs)])
            obs = obs.astype(self.dtype, copy=False)
            with _StepProgress(console, c.steps, self.steps) as bar:
                while self.steps < c.steps:
                    obs = self._iteration(envs, obs)
                    self.seconds = time.perf_counter() - started
                    self.cpu_seconds = time.process_time() - cpu_started
                    bar(self.steps, self.train_return())
                    if c.eval_every and self.steps >= next_eval and self.steps < c.steps:
                        next_eval += every
                        self._checkpoint(history, history_file, checkpoint_dir, console)
                        started = time.perf_counter() - self.seconds
                        cpu_started = time.process_time() - self.cpu_seconds
        finally:
            envs.close()
        if not history or history[-1]["steps"] < self.steps:  # not yet evaluated at the end
            self._checkpoint(history, history_file, checkpoint_dir, console)

    def _checkpoint(self, history: list, history_file: Path, directory: Path, console) -> None:
        """Evaluate, add the row to the history, then write the checkpoint."""
        history.append(self._evaluation_row())
        write_history(history_file, history)
        size = self.save_checkpoint(directory)
        if console is not None:
            console.print(f"{_describe(history[-1])}  [dim]checkpoint {size / 2**20:.2f} MB[/]")

    def train_return(self) -> float:
        """Mean return of the last 100 finished training episodes (nan before the first)."""
        return float(np.mean(self.recent)) if self.recent else float("nan")

    def _evaluation_row(self) -> dict:
        """Evaluate the policy, keep it if it is the best so far, and describe it."""
        result = self.evaluate(self.config.eval_episodes)
        if self.best is None or result["mean_return"] > self.best["result"]["mean_return"]:
            self.best = {"steps": self.steps, "result": result}
            self._best_weights = [keras.ops.convert_to_numpy(w) for w in self.model.weights]
        return {
            "steps": self.steps,
            "seconds": round(self.seconds, 3),
            "train_return": self.train_return(),
            "eval_return": result["mean_return"],
            "eval_std": result["std_return"],
            **self.stats,
        }

    def evaluate(self, episodes: int, seed: int | None = None) -> dict:
        """Deterministic play over `episodes` seeded episodes: mean ± std return."""
        self._sync_model()
        c = self.config
        seeds = evaluation.evaluation_seeds(c.seed if seed is None else seed, episodes)
        played = evaluation.play(
            self.act_greedy, c.env, self.env_options, seeds, self.dtype, c.eval_max_steps
        )
        return evaluation.summarize(played)

    def keep_best(self) -> None:
        """Put the best evaluated policy's weights into the model (after `learn`)."""
        self.model.set_weights(self._best_weights)
        self._from_model()

    def act_greedy(self, obs: np.ndarray) -> np.ndarray:
        return self.greedy(tf.constant(obs))["actions"].numpy()

    def _sync_model(self) -> None:
        """Write state kept outside the model (e.g. a numpy table) into it."""

    def _from_model(self) -> None:
        """Read state kept outside the model back from it (its weights were just set)."""

    # -- checkpoints ----------------------------------------------------------------------

    def _variables(self) -> list:
        """Every variable a resumed run needs back."""
        optimizer = getattr(self, "optimizer", None)
        return list(self.model.weights) + (list(optimizer.variables) if optimizer else [])

    def _extra_state(self) -> dict:
        return {}

    def _restore_extra_state(self, state: dict) -> None:
        """Restore what `_extra_state` saved."""

    def _extra_arrays(self) -> dict[str, np.ndarray]:
        """Arrays a resumed run needs beside the variables (e.g. a replay buffer)."""
        return {}

    def _restore_extra_arrays(self, saved) -> None:
        """Restore what `_extra_arrays` saved (`saved` maps its names to arrays)."""

    def position(self) -> str:
        """Where training stands, for the log: the step (and e.g. the replay buffer)."""
        return f"step {self.steps}"

    def save_checkpoint(self, directory: Path) -> int:
        """Write every variable, counter, extra array and the best policy's weights into one
        file, atomically; returns its size in bytes."""
        self._sync_model()
        meta = {
            "steps": self.steps,
            "seconds": self.seconds,
            "cpu_seconds": self.cpu_seconds,
            "episodes": self.episodes,
            "recent": list(self.recent),
            "calls": self.calls,
            "stats": self.stats,
            "rng": self.rng.bit_generator.state,
            "extra": self._extra_state(),
            "best": self.best,
        }
        arrays = {f"v{i}": keras.ops.convert_to_numpy(v) for i, v in enumerate(self._variables())}
        arrays |= {f"best{i}": w for i, w in enumerate(self._best_weights)}
        arrays |= {f"extra_{k}": v for k, v in self._extra_arrays().items()}
        path = Path(directory) / CHECKPOINT
        with files.atomic_path(path) as tmp, open(tmp, "wb") as fh:
            np.savez(fh, meta=np.array(json.dumps(meta)), **arrays)
        return path.stat().st_size

    def restore_checkpoint(self, directory: Path) -> bool:
        """Continue from the checkpoint in `directory`; False when there is none."""
        path = Path(directory) / CHECKPOINT
        if not path.is_file():
            return False
        with np.load(path) as saved:
            meta = json.loads(str(saved["meta"]))
            for i, variable in enumerate(self._variables()):
                variable.assign(saved[f"v{i}"])
            self._best_weights = [saved[f"best{i}"] for i in range(len(self.model.weights))]
            self._restore_extra_arrays(
                {k.removeprefix("extra_"): saved[k] for k in saved.files if k.startswith("extra_")}
            )
        self.steps, self.seconds, self.episodes = meta["steps"], meta["seconds"], meta["episodes"]
        self.cpu_seconds = meta["cpu_seconds"]
        self.recent.extend(meta["recent"])
        self.calls, self.stats = meta["calls"], meta["stats"]
        self.rng.bit_generator.state = meta["rng"]
        self.best = meta["best"]
        self._restore_extra_state(meta["extra"])
        self._from_model()
        return True


def _describe(row: dict) -> str:
    return (
        f"steps {int(row['steps'])}  eval return {row['eval_return']:.1f} ± "
        f"{row['eval_std']:.1f}  train return {row['train_return']:.1f}  "
        f"[dim]({row['seconds']:.1f}s)[/]"
    )


class _StepProgress:
    """A Rich progress bar over environment steps showing the recent training return."""

    def __init__(self, console: Console | None, total: int, done: int):
        self.progress = None
        if console is not None:
            self.progress = Progress(
                TextColumn("[bold]training"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeRemainingColumn(),
                TextColumn("{task.fields[ret]}"),
                console=console,
                transient=True,
            )
            self.task = self.progress.add_task("steps", total=total, completed=done, ret="")

    def __enter__(self):
        if self.progress is None:
            return lambda steps, ret: None
        self.progress.start()
        return self.update

    def update(self, steps: int, ret: float) -> None:
        self.progress.update(
            self.task, completed=steps, ret="" if np.isnan(ret) else f"return {ret:.1f}"
        )

    def __exit__(self, *exc):
        if self.progress is not None:
            self.progress.stop()
