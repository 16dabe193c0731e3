"""Summarize text: `Summarizer`'s parameters and its `dltoolkit summarize` verb."""

from __future__ import annotations

from dataclasses import dataclass

from dltoolkit.core.config import SCHEDULES, TrainConfig
from dltoolkit.core.params import param
from dltoolkit.registry import STRICT, Option, RecipeSpec

MODELS = ("auto", "transformer", "pretrained")
LONG_DOCUMENTS = ("truncate", "chunk")
POSITIONS = ("sinusoidal", "learned")
DECODINGS = ("greedy", "beam", "top-k", "top-p")


@dataclass
class SummarizerConfig(TrainConfig):
    """Parameters of Summarizer (see the README's 'summarize text' section)."""

    epochs: int = param(10, "Training epochs.", ge=1, cli=True)
    batch_size: int = param(32, "Global batch size (split across replicas).", ge=1, cli=True)
    learning_rate: float = param(
        1e-3, "Peak learning rate (warmup then inverse square-root decay).", gt=0, cli=True
    )
    schedule: str = param(
        "inverse-sqrt", "Learning-rate schedule after the warmup.", choices=SCHEDULES
    )
    warmup_epochs: float = param(1.0, "Linear warmup, in epochs.", ge=0)
    model: str = param(
        "auto",
        "auto, transformer (from scratch, the default without --preset) or pretrained.",
        choices=MODELS,
        cli=True,
    )
    preset: str | None = param(
        None,
        "Fine-tune a KerasHub Seq2SeqLM: a preset name (e.g. bart_base_en, downloads) or a "
        "local preset directory.",
        cli=True,
    )
    text_field: str | None = param(
        None,
        "Field holding the documents (default: text, article, document, dialogue, ...).",
        cli=True,
    )
    summary_field: str | None = param(
        None,
        "Field holding the reference summaries (default: summary, highlights, abstract, ...).",
        cli=True,
    )
    strict: bool = param(
        False, "Fail on empty documents or summaries instead of skipping them.", cli=True
    )
    tfds_data_dir: str | None = param(
        None,
        "tensorflow-datasets data_dir for --data tfds:NAME (default TFDS_DATA_DIR; never "
        "downloads).",
        cli=True,
    )
    val_split: float = param(
        0.1,
        "Share of the pairs for validation (unless the data has a validation split).",
        ge=0,
        lt=1,
    )
    vocabulary_size: int = param(8000, "transformer: WordPiece vocabulary size (at most).", ge=1)
    max_source_length: int = param(256, "Document tokens the model reads.", ge=8, cli=True)
    max_target_length: int = param(64, "Summary tokens the decoder is trained on.", ge=4, cli=True)
    d_model: int = param(256, "transformer: model width (divisible by heads).", ge=1)
    layers: int = param(3, "transformer: encoder and decoder layers.", ge=1)
    heads: int = param(4, "transformer: attention heads.", ge=1)
    ff_dim: int = param(1024, "transformer: feed-forward width.", ge=1)
    dropout: float = param(0.1, "Dropout.", ge=0, lt=1)
    positions: str = param(
        "sinusoidal", "transformer: position encoding, sinusoidal or learned.", choices=POSITIONS
    )
    label_smoothing: float = param(0.1, "Label smoothing of the token loss.", ge=0, lt=1)
    decoding: str = param(
        "greedy", "greedy (default), beam, top-k or top-p.", choices=DECODINGS, cli=True
    )
    beams: int = param(4, "beam: beams kept.", ge=1)
    top_k: int = param(40, "top-k: sample among this many likeliest tokens.", ge=1)
    top_p: float = param(
        0.9, "top-p: sample among the likeliest tokens holding this probability.", gt=0, le=1
    )
    temperature: float = param(
        1.0, "beam, top-k, top-p: divide the logits by this before choosing.", gt=0
    )
    min_length: int = param(0, "Shortest summary, in tokens.", ge=0, cli=True)
    max_length: int | None = param(
        None, "Longest summary, in tokens (default max_target_length - 1).", ge=1, cli=True
    )
    repetition_penalty: float = param(
        1.0, "Divide the logits of tokens already generated (1: off).", ge=1, cli=True
    )
    no_repeat_ngram: int = param(3, "Never repeat an n-gram of this size (0: off).", ge=0, cli=True)
    long_documents: str = param(
        "truncate",
        "Documents longer than the input: truncate (default) or chunk (summarise chunks, then "
        "their summaries).",
        choices=LONG_DOCUMENTS,
        cli=True,
    )
    lead_sentences: int = param(3, "Sentences of the Lead baseline the metrics compare with.", ge=1)
    eval_samples: int | None = param(
        500, "Validation pairs scored after training (None or 0: all).", ge=0
    )
    report_examples: int = param(4, "Example summaries shown in the report.", ge=0)
    train_minutes: float | None = param(
        None, "Stop training after this many minutes.", gt=0, cli=True
    )
    snapshot_minutes: float | None = param(
        None, "Keep a snapshot of the weights after this many minutes of training.", gt=0
    )


SPEC = RecipeSpec(
    task="summarize",
    recipe="dltoolkit.tasks.summarizer:Summarizer",
    config=SummarizerConfig,
    summary="Train a summariser (from-scratch Transformer, or fine-tune a KerasHub preset).",
    predict_options=(
        Option("text", str, "A text given on the command line (repeatable).", multiple=True),
        STRICT,
    ),
)
