"""`dltoolkit train-agent`: train a policy in a gymnasium environment, report and export it."""

from __future__ import annotations

from typing import Annotated

import typer

from dltoolkit.cli import common as c
from dltoolkit.tasks import Agent


@c.recipe_command(Agent)
def train_agent(
    env: Annotated[
        str | None,
        typer.Option(
            help="Gymnasium environment id (default CartPole-v1), or module:EnvId for your own."
        ),
    ] = None,
    algo: Annotated[
        str | None, typer.Option(help="ppo (default), a2c, dqn, q-learning or sarsa.")
    ] = None,
    steps: Annotated[
        int | None, typer.Option(help="Environment steps to train for (default 100000).")
    ] = None,
    n_envs: Annotated[int | None, typer.Option(help="Environments stepped side by side.")] = None,
    env_options: Annotated[
        str | None,
        typer.Option(help="Keyword arguments for the environment, e.g. is_slippery=false."),
    ] = None,
    normalize_obs: Annotated[
        bool | None,
        typer.Option(
            "--normalize-obs/--no-normalize-obs",
            help="Standardise observations with running statistics (ppo, a2c).",
        ),
    ] = None,
    eval_every: Annotated[
        int | None, typer.Option(help="Evaluate and checkpoint every N steps (0: only at the end).")
    ] = None,
    learning_rate: Annotated[
        float | None,
        typer.Option(
            help="Learning rate (default per algorithm; with schedule=linear it falls to 0 by the last step)."
        ),
    ] = None,
):
    """Train an agent (CartPole-v1 with PPO by default). Runs in one process on one device:
    --strategy auto, cpu or gpu (multi-worker, mirrored and tpu are refused)."""
    return None, dict(
        env=env,
        algo=algo,
        steps=steps,
        n_envs=n_envs,
        env_options=env_options,
        normalize_obs=normalize_obs,
        eval_every=eval_every,
        learning_rate=learning_rate,
    )
