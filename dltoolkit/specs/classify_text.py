"""Classify text: `TextClassifier`'s parameters and its `dltoolkit classify-text` verb."""

from __future__ import annotations

from dataclasses import dataclass

from dltoolkit.core.config import TrainConfig
from dltoolkit.core.params import among, between, param, tunable
from dltoolkit.registry import STRICT, Objective, Option, RecipeSpec

MODELS = ("auto", "fasttext", "transformer", "cnn", "pretrained")
LONG_TEXTS = ("head", "head+tail", "chunk")
POOLINGS = ("cls", "mean")
CLASS_WEIGHTS = ("auto", "none")
RARE_LABELS = ("drop", "keep")


@dataclass
class TextClassifierConfig(TrainConfig):
    """Parameters of TextClassifier (see the README's 'classify text' section)."""

    epochs: int | None = param(
        None,
        "Training epochs (default: about 2000 optimizer steps, 3 to 30 epochs; with "
        "train_minutes, until the time is up).",
        ge=1,
        cli=True,
    )
    batch_size: int = param(32, "Global batch size (split across replicas).", ge=1, cli=True)
    learning_rate: float = param(
        1e-3,
        "Peak learning rate of the from-scratch models (warmup then cosine decay).",
        gt=0,
        cli=True,
        tune=between(2e-4, 5e-3, log=True),
    )
    weight_decay: float = tunable(TrainConfig, "weight_decay", between(1e-5, 1e-1, log=True))
    pretrained_lr_factor: float = param(
        0.05, "pretrained: fine-tune at learning_rate times this (5e-5 by default).", gt=0, le=1
    )
    model: str = param(
        "auto",
        "auto (transformer, or pretrained with --preset), fasttext (bag of word n-grams, the "
        "fast baseline), transformer (BERT-style encoder), cnn (convolutions over tokens) or "
        "pretrained (a KerasHub text classifier).",
        choices=MODELS,
        cli=True,
    )
    preset: str | None = param(
        None,
        "Fine-tune a KerasHub text classifier with its own tokenizer: a preset name "
        "(bert_tiny_en_uncased, distil_bert_base_en_uncased, deberta_v3_small_en, "
        "roberta_base_en; downloads), a kaggle:// or hf:// handle, or a local preset directory.",
        cli=True,
    )
    text_field: str | int | None = param(
        None,
        "Column holding the texts: a name or a 0-based position (1 or #1) (default: text, "
        "sentence, content, review, comment, ...).",
        cli=True,
        flags=("--text-field", "--text-col"),
    )
    label_field: str | int | None = param(
        None,
        "Column holding the labels: a name or a 0-based position (default: label, labels, "
        "class, category, target, sentiment, stars, tags, ...).",
        cli=True,
        flags=("--label-field", "--label-col"),
    )
    multi_label: bool = param(
        False,
        "Each text has a set of labels (JSON lists, or strings split on label_delimiter); "
        "sigmoid outputs with per-label thresholds tuned on validation.",
        cli=True,
    )
    label_delimiter: str | None = param(
        None,
        "multi_label: what separates the labels of a cell (default: the first of | ; , found).",
        cli=True,
    )
    rare_labels: str = param(
        "drop",
        "Training labels seen only once: drop (leave their texts out, listed in the report) "
        "or keep.",
        choices=RARE_LABELS,
        cli=True,
    )
    strict: bool = param(
        False,
        "Fail on an empty text, a missing label, undecodable bytes or a dropped rare label "
        "instead of leaving the record out.",
        cli=True,
    )
    tfds_data_dir: str | None = param(
        None,
        "tensorflow-datasets data_dir for --data tfds:NAME (default TFDS_DATA_DIR; never "
        "downloads).",
        cli=True,
    )
    val_split: float = param(
        0.1,
        "Share of the texts for validation (unless the data has a validation split).",
        ge=0,
        lt=1,
    )
    test_split: float = param(
        0.1, "Share of the texts for the final test (unless the data has a test split).", ge=0, lt=1
    )
    vocabulary_size: int = param(
        8000,
        "Size (at most) of the lower-cased WordPiece vocabulary learned on the training texts "
        "and applied inside the model.",
        ge=64,
    )
    max_length: int = param(128, "Tokens the model reads per text (its window).", ge=8, cli=True)
    long_texts: str = param(
        "head+tail",
        "Texts longer than max_length: head (keep the start), head+tail (the start and the "
        "end, best on long reviews) or chunk (score windows, average their probabilities).",
        choices=LONG_TEXTS,
        cli=True,
    )
    pooling: str = param(
        "mean",
        "transformer: the text's vector, the mean of its tokens' (default) or the [CLS] token's.",
        choices=POOLINGS,
    )
    d_model: int = param(
        128,
        "Width of the token embeddings, and of the transformer (divisible by heads).",
        ge=8,
        tune=among(64, 128, 256),
    )
    layers: int = param(2, "transformer: encoder blocks.", ge=1, tune=between(1, 4))
    heads: int = param(4, "transformer: attention heads.", ge=1)
    ff_dim: int = param(512, "transformer: feed-forward width.", ge=8)
    dropout: float = param(0.1, "Dropout.", ge=0, lt=1, tune=between(0.0, 0.3))
    pretrain_epochs: int = param(
        0,
        "transformer: epochs of masked-language-model pretraining on the training texts "
        "before fine-tuning (0: off).",
        ge=0,
        cli=True,
    )
    mask_rate: float = param(0.15, "Share of tokens masked in MLM pretraining.", gt=0, lt=1)
    ngrams: int = param(2, "fasttext: longest word n-gram hashed (1: words only).", ge=1)
    ngram_buckets: int = param(
        100_000, "fasttext: hash buckets shared by the words and n-grams.", ge=1000
    )
    class_weight: str = param(
        "auto",
        "auto (weights inverse to class frequency when the largest class is at least twice the "
        "smallest; single-label only) or none.",
        choices=CLASS_WEIGHTS,
        cli=True,
    )
    train_minutes: float | None = param(
        None, "Stop training after this many minutes.", gt=0, cli=True
    )
    report_examples: int = param(
        10, "Most confident mistakes on the test texts shown in the report.", ge=0
    )
    report_tokens: int = param(
        10, "Words that move each class most (occlusion), listed in the report.", ge=0
    )


SPEC = RecipeSpec(
    task="classify-text",
    recipe="dltoolkit.tasks.text_classifier:TextClassifier",
    config=TextClassifierConfig,
    summary="Train a text classifier (fastText-style, BERT-style Transformer or CNN from "
    "scratch, or fine-tune a KerasHub preset).",
    default_data="toy-reviews",
    data_help="Data: a CSV/TSV/JSONL/Parquet table with text and label columns, a folder of "
    "one subfolder of .txt files per class (train/ test/ inside, as aclImdb), tfds:NAME or a "
    "built-in name (`dltoolkit datasets`).",
    predict_options=(
        Option("text", str, "A text given on the command line (repeatable).", multiple=True),
        STRICT,
    ),
    # Macro-F1: defined for single- and multi-label runs alike.
    objective=Objective("macro_f1", "maximize", "val_accuracy"),
)
