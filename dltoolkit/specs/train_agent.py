"""Train an agent: `Agent`'s parameters and its `dltoolkit train-agent` verb."""

from __future__ import annotations

from dataclasses import dataclass

from dltoolkit.core.config import RuntimeConfig
from dltoolkit.core.params import param
from dltoolkit.registry import STRICT, Option, RecipeSpec

ALGOS = ("ppo", "a2c", "dqn", "q-learning", "sarsa")
LR_SCHEDULES = ("linear", "constant")
FALLBACK_EPISODE_CAP = 1000  # evaluation steps in an environment without a step limit


@dataclass
class AgentConfig(RuntimeConfig):
    """Parameters of Agent (see the README's 'train an agent' section). Defaults are the
    RL Zoo's tuned PPO settings for CartPole-v1."""

    env: str = param(
        "CartPole-v1", "Gymnasium environment id, or module:EnvId for your own.", cli=True
    )
    algo: str = param(
        "ppo", "ppo (default), a2c, dqn, q-learning or sarsa.", choices=ALGOS, cli=True
    )
    steps: int = param(100_000, "Environment steps to train for.", ge=1, cli=True)
    env_options: str | None = param(
        None, "Keyword arguments for the environment, e.g. is_slippery=false.", cli=True
    )
    n_envs: int = param(8, "Environments stepped side by side.", ge=1, cli=True)
    hidden: str = param("64,64", "Hidden layer sizes of the policy and value networks.")
    activation: str | None = param(None, "Hidden-layer activation (default: tanh, relu for dqn).")
    learning_rate: float | None = param(
        None,
        "Learning rate (default per algorithm; with schedule=linear it falls to 0 by the "
        "last step).",
        gt=0,
        cli=True,
    )
    schedule: str = param(
        "linear",
        "linear: the learning rate (and ppo's clip range) fall to 0 by the last step; constant.",
        choices=LR_SCHEDULES,
    )
    gamma: float = param(0.98, "Discount factor of future rewards.", ge=0, le=1)
    normalize_obs: bool = param(
        False, "Standardise observations with running statistics (ppo, a2c).", cli=True
    )
    scale_obs: bool = param(
        False,
        "dqn: map observations with finite bounds onto [-1, 1] inside the network (fixed, "
        "from the observation space), so a feature with a narrow range is not drowned out.",
    )
    normalize_reward: bool = param(
        False, "Scale rewards by running statistics of the return (ppo, a2c)."
    )
    # on-policy (ppo, a2c)
    n_steps: int = param(32, "ppo, a2c: steps per environment in each rollout.", ge=1)
    batch_size: int = param(256, "ppo: minibatch size; dqn: replay batch size.", ge=1)
    n_epochs: int = param(20, "ppo: passes over each rollout.", ge=1)
    gae_lambda: float = param(0.8, "ppo, a2c: GAE lambda of the advantages.", ge=0, le=1)
    clip_range: float = param(0.2, "ppo: clip range of the policy ratio.", gt=0)
    ent_coef: float = param(0.0, "ppo, a2c: weight of the entropy bonus.", ge=0)
    vf_coef: float = param(0.5, "ppo, a2c: weight of the value loss.", ge=0)
    max_grad_norm: float | None = param(
        None, "Gradient norm clip (default: 0.5 for ppo and a2c, 10 for dqn).", gt=0
    )
    log_std_init: float = param(
        0.0, "ppo, a2c with continuous actions: initial log std of the Gaussian policy."
    )
    # value-based (dqn, q-learning, sarsa)
    buffer_size: int = param(50_000, "dqn: transitions kept in the replay buffer.", ge=1)
    learning_starts: int = param(1000, "dqn: steps of experience before the first update.", ge=0)
    train_freq: int = param(4, "dqn: environment steps between updates.", ge=1)
    gradient_steps: int = param(1, "dqn: gradient steps per update.", ge=1)
    target_update_interval: int = param(
        1000, "dqn: steps between copies of the network to the target network.", ge=1
    )
    exploration_fraction: float = param(
        0.1, "Share of the steps over which epsilon falls to its final value.", ge=0, le=1
    )
    exploration_final_eps: float = param(
        0.05, "Final epsilon of the epsilon-greedy exploration.", ge=0, le=1
    )
    double_q: bool = param(True, "dqn: pick the next action with the online network (Double DQN).")
    # evaluation, checkpoints
    eval_every: int = param(
        20_000,
        "Evaluate and checkpoint every N steps (0: only at the end); the best evaluated "
        "policy is the run's model.",
        ge=0,
        cli=True,
    )
    eval_episodes: int = param(20, "Episodes of each evaluation.", ge=1)
    eval_max_steps: int | None = param(
        None,
        "Steps after which an evaluation or played episode is cut (default: the "
        f"environment's own step limit, else {FALLBACK_EPISODE_CAP}).",
        ge=1,
        cli=True,
    )

    @property
    def hidden_layers(self) -> tuple[int, ...]:
        return tuple(int(units) for units in self.hidden.split(","))


SPEC = RecipeSpec(
    task="train-agent",
    recipe="dltoolkit.tasks.agent:Agent",
    config=AgentConfig,
    summary=(
        "Train an agent (CartPole-v1 with PPO by default). Runs in one process on one device: "
        "--strategy auto, cpu or gpu (multi-worker, mirrored and tpu are refused)."
    ),
    default_data=None,  # an agent trains in its environment, not on data
    data_flags=(),
    single_replica_reason=(
        "it trains in one process on one device (its own loop steps Python environments)"
    ),
    predict_options=(
        Option("episodes", int, "Episodes to play."),
        Option("render", str, "'rgb' saves the episodes' frames as a GIF."),
        Option("seed", int, "Random seed."),
        Option("out", str, "Image or GIF file to write."),
        STRICT,
    ),
    evaluate_options=(
        Option("episodes", int, "Evaluation episodes."),
        Option("seed", int, "Seed of the episodes (default: the run's evaluation episodes)."),
    ),
)
