"""Generate text: `TextGenerator`'s parameters and its `dltoolkit generate-text` verb."""

from __future__ import annotations

from dataclasses import dataclass

from dltoolkit.core.config import TrainConfig
from dltoolkit.core.params import param
from dltoolkit.registry import Option, RecipeSpec

MODELS = ("auto", "gpt", "pretrained")
OBJECTIVES = ("next-token", "dpo")
TOKENS = ("characters", "bytes-bpe")
POSITIONS = ("rotary", "learned")


@dataclass
class TextGeneratorConfig(TrainConfig):
    """Parameters of TextGenerator (see the README's 'generate text' section)."""

    epochs: int | None = param(
        None,
        "Training epochs of eval_every optimizer steps each (default: 8, i.e. 2,000 steps, or "
        "fewer on small data: about 10 passes over its tokens; with train_minutes, until the "
        "time is up).",
        ge=1,
        cli=True,
    )
    eval_every: int = param(
        250, "Optimizer steps per epoch: validation, checkpoint and best weights after each.", ge=1
    )
    batch_size: int = param(32, "Global batch size (split across replicas).", ge=1, cli=True)
    learning_rate: float = param(
        1e-3, "Peak learning rate (warmup then cosine decay).", gt=0, cli=True
    )
    weight_decay: float = param(0.1, "AdamW's decoupled weight decay.", ge=0)
    warmup_epochs: float = param(0.4, "Linear warmup, in epochs (0.4 x 250 = 100 steps).", ge=0)
    early_stopping_patience: int = param(
        3, "Stop after this many epochs without a better validation loss (0: never).", ge=0
    )
    train_minutes: float | None = param(
        None, "Stop training after this many minutes.", gt=0, cli=True
    )
    objective: str = param(
        "next-token",
        "next-token (language modelling; on prompt/response pairs, the responses only) or dpo "
        "(direct preference optimisation of the --preset run on prompt/chosen/rejected pairs: "
        "what `dltoolkit align` runs).",
        choices=OBJECTIVES,
        cli=True,
    )
    model: str = param(
        "auto",
        "auto (pretrained when --preset names a KerasHub preset, else gpt), gpt (decoder-only "
        "Transformer from scratch) or pretrained (a KerasHub causal LM).",
        choices=MODELS,
        cli=True,
    )
    preset: str | None = param(
        None,
        "Start from trained weights: an earlier generate-text run (its directory: fine-tune "
        "its model and keep its vocabulary, e.g. on prompt/response pairs, or align it with "
        "objective dpo), or a KerasHub causal-LM preset (gpt2_base_en, smollm2_135m_en, "
        "gemma2_2b_en, ...; downloads), a kaggle:// or hf:// handle, or a local preset "
        "directory, with its own tokenizer.",
        cli=True,
    )
    lora_rank: int = param(
        0,
        "pretrained: train LoRA adapters of this rank instead of every weight (0: off).",
        ge=0,
        cli=True,
    )
    tokens: str = param(
        "characters",
        "Vocabulary learned on the training text: characters, or bytes-bpe (byte-level BPE "
        "of vocabulary_size tokens).",
        choices=TOKENS,
        cli=True,
    )
    vocabulary_size: int = param(2048, "bytes-bpe: tokens in the vocabulary.", ge=300)
    context: int = param(
        128, "Tokens the model sees at once (its window; generation slides it).", ge=8, cli=True
    )
    d_model: int = param(128, "Width of the token embeddings and the blocks.", ge=8)
    layers: int = param(4, "Decoder blocks.", ge=1)
    heads: int = param(4, "Attention heads (d_model must be divisible by them).", ge=1)
    ff_dim: int = param(512, "Feed-forward width.", ge=8)
    dropout: float = param(0.0, "Dropout.", ge=0, lt=1)
    positions: str = param(
        "rotary", "Position information: rotary (RoPE) or learned.", choices=POSITIONS
    )
    text_field: str = param("text", "JSONL: the field holding each document.", cli=True)
    prompt_field: str | None = param(
        None,
        "JSONL: the prompt field of prompt/response pairs (supervised fine-tuning: the loss "
        "falls on the responses only); with response_field.",
        cli=True,
    )
    response_field: str | None = param(
        None, "JSONL: the response field of prompt/response pairs.", cli=True
    )
    strict: bool = param(
        False, "Fail on a malformed line instead of reporting and skipping it.", cli=True
    )
    val_split: float = param(
        0.1,
        "Share for validation: the end of a single text, or whole documents / pairs.",
        gt=0,
        lt=1,
    )
    max_new_tokens: int = param(200, "Tokens generated per prompt.", ge=1, cli=True)
    temperature: float = param(
        0.8, "Sampling temperature (0: greedy, always the likeliest token).", ge=0, cli=True
    )
    top_k: int = param(0, "Sample among the k likeliest tokens only (0: off).", ge=0, cli=True)
    top_p: float = param(
        0.95,
        "Nucleus sampling: the smallest set of tokens holding this much probability.",
        gt=0,
        le=1,
        cli=True,
    )
    repetition_penalty: float = param(
        1.0, "Divide the logits of tokens already present by this (1: off).", ge=1, cli=True
    )
    stop: str | None = param(
        None, "Cut each generation at the first of these strings ('|'-separated).", cli=True
    )
    beta: float = param(
        0.1, "dpo: beta, how far the policy may move from the reference (higher: less).", gt=0
    )
    label_smoothing: float = param(
        0.0,
        "dpo: the share of preference labels taken to be flipped (conservative DPO; 0: plain).",
        ge=0,
        lt=0.5,
    )
    sft_weight: float = param(
        0.0,
        "dpo: weight of the language-model loss on the chosen responses, added to DPO's (RPO; "
        "0: plain DPO).",
        ge=0,
    )
    report_samples: int = param(3, "Generated samples shown in the report.", ge=0)


SPEC = RecipeSpec(
    task="generate-text",
    recipe="dltoolkit.tasks.text_generator:TextGenerator",
    config=TextGeneratorConfig,
    summary="Train a GPT-style language model from scratch (or fine-tune an earlier run) and "
    "generate text; `dltoolkit align` then aligns a run with preference pairs (DPO).",
    default_data="counting-songs",
    data_help="Data: a .txt file, a folder of .txt files, JSONL with a text field (or prompt/"
    "response pairs with --prompt-field/--response-field) or a built-in name "
    "(`dltoolkit datasets`).",
    predict_options=(
        Option("text", str, "A prompt given on the command line (repeatable).", multiple=True),
        Option("max_new_tokens", int, "Tokens to generate (default: the run's)."),
        Option("temperature", float, "Sampling temperature (0: greedy; default: the run's)."),
        Option("top_p", float, "Nucleus sampling mass (default: the run's)."),
        Option("seed", int, "Random seed."),
    ),
)


def alignment_params(params: dict, run: str) -> dict:
    """The parameters of a run that aligns generate-text run `run` (with `params`) by DPO:
    its own, with objective dpo and the run as the parent (preset) it starts from, but not
    its length of training (DPO's own default is two passes over the pairs)."""
    return {
        **params,
        "objective": "dpo",
        "preset": str(run),
        "prompt_field": None,
        "response_field": None,
        "epochs": None,
        "train_minutes": None,
    }
