"""Agent: the train-agent recipe (reinforcement learning in a gymnasium environment).

Training is the algorithm's own loop (dltoolkit.rl), not `model.fit`: experience comes from
the environment, not from a data set. The rest is the Recipe contract: run directory,
recipe.toml, checkpoints and --resume, report, save/load and a SavedModel policy.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tensorflow as tf
from matplotlib.figure import Figure
from PIL import Image

from dltoolkit.core import files
from dltoolkit.core.callbacks import read_history
from dltoolkit.core.config import check_choice
from dltoolkit.core.errors import ConfigError, DataError
from dltoolkit.core.export import Signature
from dltoolkit.core.recipe import Recipe
from dltoolkit.core.records import Bad, assemble, attempt
from dltoolkit.core.report import Report
from dltoolkit.models.policy import deterministic_policy, policy_outputs
from dltoolkit.rl import ALGORITHMS, Algorithm
from dltoolkit.rl.base import CHECKPOINT
from dltoolkit.rl.envs import Spaces, describe, make_env, observation_dtype, parse_options
from dltoolkit.rl.evaluation import evaluation_seeds, play, play_rendered, summarize
from dltoolkit.specs.train_agent import SPEC

RENDER_MODES = ("rgb",)


@dataclass
class _Prepared:
    spaces: Spaces
    options: dict


class Agent(Recipe):
    """Train a policy in a gymnasium environment.

    >>> Agent(env="CartPole-v1", algo="ppo").fit(100_000).evaluate(episodes=20)
    """

    spec = SPEC
    learned = ("spaces_", "trained_steps_", "train_seconds_")

    def __init__(self, **params):
        super().__init__(**params)
        self.spaces_: Spaces | None = None
        self.trained_steps_ = 0
        self.train_seconds_ = 0.0

    # -- training -------------------------------------------------------------------------

    def fit(
        self, steps: int | None = None, out=None, *, resume=False, overwrite=False, progress=True
    ) -> Agent:
        """Train for `steps` environment steps (default: the `steps` parameter) into `out`."""
        if steps is not None:
            if isinstance(steps, bool) or not isinstance(steps, int):
                raise ConfigError(
                    f"an Agent trains in its environment (env=...) and takes a step "
                    f"count, not data; got {steps!r}"
                )
            self.set_params(steps=steps)
        return super().fit(None, out, resume=resume, overwrite=overwrite, progress=progress)

    def _validate(self) -> None:
        c = self.config
        if c.mixed_precision:
            raise ConfigError(
                "train-agent's small policies train in float32; drop --mixed-precision"
            )
        try:
            if not c.hidden_layers or min(c.hidden_layers) <= 0:
                raise ValueError
        except ValueError:
            raise ConfigError(
                f"hidden '{c.hidden}' must be positive layer sizes like 64,64"
            ) from None
        if c.algo == "ppo" and c.batch_size > c.n_steps * c.n_envs:
            raise ConfigError(
                f"batch_size {c.batch_size} is larger than a rollout "
                f"(n_steps {c.n_steps} x n_envs {c.n_envs}); lower it"
            )
        if c.algo not in ("ppo", "a2c") and (c.normalize_obs or c.normalize_reward):
            raise ConfigError("normalize_obs and normalize_reward are for ppo and a2c")
        if c.algo != "dqn" and c.scale_obs:
            raise ConfigError("scale_obs is for dqn (ppo and a2c have normalize_obs)")

    def _prepare(self, data, console) -> _Prepared:
        c = self.config
        options = parse_options(c.env_options)
        env = make_env(c.env, options)
        try:
            spaces = describe(env)
        finally:
            env.close()
        ALGORITHMS[c.algo].check(spaces, c.env)
        if console is not None:
            kind = "continuous" if spaces.continuous else "discrete"
            console.print(
                f"env: {c.env}; observations {spaces.obs_states or spaces.obs_shape}; "
                f"{spaces.actions} {kind} action(s); algo {c.algo}; {c.steps} steps"
            )
        return _Prepared(spaces, options)

    def _algorithm(self, prepared: _Prepared) -> Algorithm:
        return ALGORITHMS[self.config.algo](self.config, prepared.spaces, prepared.options)

    def _learn(self, prepared: _Prepared, run, rt, console) -> None:
        """The algorithm's own loop (dltoolkit.rl), checkpointing into `run`. The last
        policy is saved as final.keras; the best evaluated one becomes the run's model."""
        algo = self._algorithm(prepared)
        if algo.restore_checkpoint(run.checkpoints) and console is not None:
            console.print(f"resuming from {algo.position()}")
        algo.learn(run.history_file, run.checkpoints, console)
        with files.atomic_path(run.final_model_file) as tmp:
            algo.model.save(tmp)
        algo.keep_best()
        self.spaces_, self.model_ = prepared.spaces, algo.model
        self.trained_steps_, self.train_seconds_ = algo.steps, algo.seconds
        self._algo = algo

    def _evaluate_prepared(self, prepared: _Prepared) -> dict:
        """The kept policy's evaluation (its history row's), beside the final policy's."""
        algo = self._algo
        final = read_history(self.run_.history_file)[-1]
        return {
            **algo.best["result"],
            "kept_steps": algo.best["steps"],
            "final_return": final["eval_return"],
            "final_std": final["eval_std"],
            "train_return": algo.train_return(),
            "steps": algo.steps,
            "train_episodes": algo.episodes,
            "train_seconds": round(algo.seconds, 3),
            "train_cpu_seconds": round(algo.cpu_seconds, 3),
        }

    # -- evaluation and play ------------------------------------------------------------

    def _policy(self):
        spaces = self.spaces_
        act = tf.function(deterministic_policy(self.model_, spaces.low, spaces.high))
        return lambda obs: act(obs)["actions"].numpy()

    def evaluate(self, data=None, *, episodes: int | None = None, seed: int | None = None) -> dict:
        """Mean ± std return of the deterministic policy over `episodes` seeded episodes
        (by default the episodes of the run's own evaluations)."""
        self._require_model()
        if data is not None:
            raise ConfigError("an agent is evaluated in its environment; drop --data")
        episodes = self._positive("episodes", episodes or self.config.eval_episodes)
        seeds = evaluation_seeds(self.config.seed if seed is None else seed, episodes)
        played = play(
            self._policy(),
            self.config.env,
            parse_options(self.config.env_options),
            seeds,
            observation_dtype(self.spaces_),
            self.config.eval_max_steps,
        )
        return summarize(played)

    def predict(
        self,
        inputs=None,
        *,
        episodes: int | None = None,
        render: str | None = None,
        seed: int | None = None,
        out=None,
        strict: bool = False,
    ) -> list[dict]:
        """Actions for `inputs` (observations), or with no inputs play `episodes` episodes
        (render='rgb' saves their frames as a GIF at `out`).

        An observation that does not parse or has the wrong shape gets an error row
        `{"observation": text, "error": reason}` in its place; with `strict` the first
        raises a DataError."""
        self._require_model()
        if inputs is not None:
            if episodes is not None or render is not None:
                raise ConfigError("pass observations or --episodes/--render, not both")
            return self._act_rows(inputs, strict)
        if render is not None:
            check_choice("render mode", render, RENDER_MODES)
        path = (Path(out) if out else self._default_gif()) if render else None
        if path is not None and path.suffix.lower() != ".gif":
            raise ConfigError(f"--out {path}: rendered episodes are saved as a .gif file")
        count = self._positive("episodes", 1 if episodes is None else episodes)
        seeds = evaluation_seeds(self.config.seed if seed is None else seed, count)
        played = play_rendered(
            self._policy(),
            self.config.env,
            parse_options(self.config.env_options),
            seeds,
            observation_dtype(self.spaces_),
            render=render == "rgb",
            max_steps=self.config.eval_max_steps,
        )
        rows = [
            {"episode": i + 1, "seed": e.seed, "return": e.reward, "length": e.length}
            for i, e in enumerate(played)
        ]
        if path is not None:
            write_gif(path, [frame for e in played for frame in e.frames], self.config.env)
            for row in rows:
                row["gif"] = str(path)
        return rows

    def _default_gif(self) -> Path:
        if self.run_ is None:
            raise ConfigError("pass out= (a .gif path) to save the rendered episodes")
        return self.run_.path / "episodes.gif"

    def _act_rows(self, inputs, strict: bool) -> list[dict]:
        """The greedy action per observation; one that does not parse gets an error row."""
        items = [inputs] if isinstance(inputs, str) else list(inputs)
        parsed = [attempt({"observation": str(i)}, self._observation, i) for i in items]
        good = [p for p in parsed if not isinstance(p, Bad)]
        out = {}
        if good:
            act = tf.function(
                deterministic_policy(self.model_, self.spaces_.low, self.spaces_.high)
            )
            out = {k: iter(v.numpy().tolist()) for k, v in act(np.stack(good)).items()}
        results = []
        for obs in parsed:
            if isinstance(obs, Bad):
                results.append(obs)
                continue
            row = {"observation": obs.tolist(), "action": next(out["actions"])}
            row.update({k: next(v) for k, v in out.items() if k != "actions"})
            results.append(row)
        return assemble(results, strict=strict)

    def _observation(self, item) -> np.ndarray:
        """One observation (numbers, or text such as '0.1,0,-0.2,0.3') checked against the env."""
        spaces = self.spaces_
        try:
            obs = np.asarray(_parse_observation(item), observation_dtype(spaces))
        except ValueError:
            raise DataError(
                "observations must be numbers, e.g. '0.1,0,-0.2,0.3' for one CartPole observation"
            ) from None
        expected = tuple(spaces.obs_shape if spaces.obs_states is None else ())
        if obs.shape != expected:
            want = f"{expected}" if expected else "a single state index"
            raise DataError(
                f"each observation of {self.config.env} must have shape {want}; got {obs.shape}"
            )
        return obs

    @staticmethod
    def _positive(name: str, value: int) -> int:
        if value <= 0:
            raise ConfigError(f"--{name} must be a positive number, got {value}")
        return value

    # -- persistence and export -----------------------------------------------------------

    def _signatures(self) -> dict[str, Signature]:
        spaces = self.spaces_
        if spaces.obs_states is not None:
            spec = tf.TensorSpec([None], tf.int32, name="observation")
        else:
            spec = tf.TensorSpec([None, *spaces.obs_shape], tf.float32, name="observation")
        outputs = functools.partial(policy_outputs, low=spaces.low, high=spaces.high)
        return {"serving_default": Signature([spec], outputs=outputs)}

    # -- report ---------------------------------------------------------------------------

    def _report(self, report: Report, prepared: _Prepared) -> None:
        c, m = self.config, self.metrics_
        report.text(
            "Environment",
            f"{c.env} with {c.algo}; {m['steps']} steps, "
            f"{m['train_episodes']} training episodes in {m['train_seconds']:.1f} s",
        )
        report.table(
            "Evaluation of the kept policy (deterministic)",
            {
                "kept: the best evaluation, at step": m["kept_steps"],
                "episodes": m["episodes"],
                "mean return": m["mean_return"],
                "std": m["std_return"],
                "min": m["min_return"],
                "max": m["max_return"],
                "mean length": m["mean_length"],
                "episodes cut at the step cap": m["cut_episodes"],
                "final policy (final.keras): mean return": m["final_return"],
            },
        )
        checkpoint = self.run_.checkpoints / CHECKPOINT
        report.text(
            "Checkpoint",
            f"{checkpoint.name}: {checkpoint.stat().st_size / 2**20:.2f} MB on disk "
            f"(the training state at {self._algo.position()}).",
        )

    def _report_history(self, report: Report, history: list[dict]) -> None:
        report.figure("Learning curve", plot_learning_curve(history), "learning_curve")
        report.table("History", history)


def _parse_observation(item) -> list | float:
    if isinstance(item, str):
        values = [float(v) for v in item.split(",")]
        return values if len(values) > 1 else values[0]
    return item


def plot_learning_curve(rows: list[dict]) -> Figure:
    """Evaluation return (± std) and training return against steps and against wall time."""
    fig = Figure(figsize=(11, 3.8))
    for ax, x_key, label in zip(
        fig.subplots(1, 2),
        ("steps", "seconds"),
        ("environment steps", "wall time (s)"),
        strict=True,
    ):
        x = np.array([r[x_key] for r in rows])
        mean = np.array([r["eval_return"] for r in rows])
        std = np.array([r.get("eval_std", 0.0) for r in rows])
        ax.plot(x, mean, marker="o", label="evaluation (deterministic)")
        ax.fill_between(x, mean - std, mean + std, alpha=0.2)
        ax.plot(
            x, [r.get("train_return", np.nan) for r in rows], label="training (last 100 episodes)"
        )
        ax.set_xlabel(label)
        ax.set_ylabel("episode return")
        ax.legend()
    return fig


def write_gif(path: Path, frames: list, env_id: str) -> None:
    """Frames (H, W, 3 uint8) as an animated GIF at 30 frames per second, atomically."""
    if not frames or frames[0] is None:
        raise ConfigError(f"{env_id} does not render RGB frames; drop --render")
    images = [Image.fromarray(np.asarray(f, np.uint8)) for f in frames]
    with files.atomic_path(path) as tmp:
        images[0].save(
            tmp, format="GIF", save_all=True, append_images=images[1:], duration=33, loop=0
        )
