"""TextClassifier: the classify-text recipe (fastText-style, BERT-style Transformer or CNN
from scratch, with optional masked-LM pretraining, or a KerasHub preset fine-tuned)."""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass, field

import keras
import numpy as np
import tensorflow as tf

from dltoolkit.core.config import check_preset_choice
from dltoolkit.core.errors import ConfigError, DataError
from dltoolkit.core.export import Signature
from dltoolkit.core.metrics import classification_metrics
from dltoolkit.core.optim import budget_optimizer, time_budget
from dltoolkit.core.recipe import Recipe
from dltoolkit.core.records import Bad, assemble, stop_if_strict
from dltoolkit.core.report import Report, plot_confusion_matrix
from dltoolkit.core.training import Plan, balanced_class_weights
from dltoolkit.data.labelled_text import LabelledTexts, data_splits, read_labelled_texts
from dltoolkit.data.splits import random_splits, stratified_splits
from dltoolkit.data.text import as_document, read_documents, train_vocabulary
from dltoolkit.specs.classify_text import SPEC
from dltoolkit.tasks.text_eval import (
    confident_mistakes,
    multi_hot,
    multi_label_metrics,
    occlusion_words,
    tuned_thresholds,
)

STEP_BUDGET = 2000  # default training length in optimizer steps (without train_minutes)
MIN_EPOCHS, MAX_EPOCHS = 3, 30
TIMED_EPOCHS = 10_000  # with train_minutes and no epochs, the clock ends training
IMBALANCE = 2.0  # class_weight auto weighs classes once the largest is this many times the smallest
_TEXT = tf.TensorSpec([None], tf.string, name="text")
SPLIT_NAMES = {"val": "validation", "test": "test"}


@dataclass
class _Prepared:
    splits: dict[str, LabelledTexts]
    description: str
    problems: list[tuple[str, str]]
    held_out: dict = field(default_factory=dict)


class TextClassifier(Recipe):
    """Classify texts: train on labelled texts, then label new ones.

    >>> TextClassifier().fit("reviews.csv", text_field="review", label_field="stars")
    >>> TextClassifier(model="fasttext").fit("./aclImdb").predict(text=["loved it"])
    """

    spec = SPEC
    learned = ("classes_", "multi_label_", "vocabulary_", "thresholds_", "columns_")

    def __init__(self, **params):
        super().__init__(**params)
        self.classes_: list[str] = []
        self.multi_label_ = False
        self.vocabulary_: list[str] | None = None
        self.thresholds_: list[float] | None = None
        self.columns_: list[int] | None = None  # the training table's (text, label) positions
        self._scorer = None

    @property
    def pretrained(self) -> bool:
        return self.config.preset is not None

    def _kind(self) -> str:
        c = self.config
        if c.preset:
            return "pretrained"
        return "transformer" if c.model == "auto" else c.model

    # -- parameters -----------------------------------------------------------------------

    def _validate(self) -> None:
        c = self.config
        check_preset_choice(c.model, c.preset)
        if c.preset:
            import keras_hub

            from dltoolkit.core.presets import check_preset

            check_preset(c.preset, keras_hub.models.TextClassifier, "bert_tiny_en_uncased")
        if c.d_model % c.heads:
            raise ConfigError(f"d_model {c.d_model} must be divisible by heads {c.heads}")
        if c.pretrain_epochs and self._kind() != "transformer":
            raise ConfigError(
                "pretrain_epochs (masked-LM pretraining) is for --model transformer; "
                f"leave it out with --model {self._kind()}"
            )

    # -- data -----------------------------------------------------------------------------

    def _read(self, data, split: str, training: bool, like=None) -> LabelledTexts:
        c = self.config
        if data is None or (isinstance(data, str) and not data):
            raise DataError(
                "classify-text needs --data: a CSV/TSV/JSONL/Parquet table with text and label "
                "columns, a folder with one subfolder of .txt files per class, or tfds:NAME"
            )
        return read_labelled_texts(
            data,
            text_field=c.text_field,
            label_field=c.label_field,
            multi_label=c.multi_label,
            label_delimiter=c.label_delimiter,
            strict=c.strict,
            tfds_data_dir=c.tfds_data_dir,
            split=split,
            header_like=like,
            training=training,
            rare_labels=c.rare_labels,
        )

    def _prepare(self, data, console) -> _Prepared:
        c = self.config
        named = data_splits(data, c.tfds_data_dir) if not isinstance(data, LabelledTexts) else []
        train = self._read(data, "train", training=True)
        classes = train.classes
        splits, problems = {}, list(train.problems)
        for key, name in SPLIT_NAMES.items():
            if name in named:
                part = self._read(data, name, training=False, like=train)
                splits[key], dropped = _known_labels(part, classes)
                problems += part.problems + dropped
        wanted = {k: f for k, f in (("val", c.val_split), ("test", c.test_split)) if f > 0}
        wanted = {k: f for k, f in wanted.items() if k not in splits}
        if wanted:
            carved = (
                random_splits(train, wanted, c.seed)
                if train.multi_label
                else stratified_splits(train, train.labels, wanted, c.seed, unit="texts")
            )
            splits.update(carved)
        else:
            splits["train"] = train
        splits = {"train": splits.pop("train"), **splits}
        sizes = ", ".join(f"{name} {len(part)}" for name, part in splits.items())
        left_out = f"; {len(problems)} record(s) left out" if problems else ""
        description = f"{train.description}; {len(classes)} classes; {sizes}{left_out}"
        if console is not None:
            console.print(f"data: {description}", markup=False)
        return _Prepared(splits, description, problems)

    # -- training -------------------------------------------------------------------------

    def _adopt(self, prepared: _Prepared, run) -> None:
        train = prepared.splits["train"]
        self.classes_, self.multi_label_ = train.classes, train.multi_label
        self.columns_ = list(train.columns) if train.columns else None
        if self._kind() in ("transformer", "cnn") and self.vocabulary_ is None:
            from dltoolkit.models.text_classification import CLASSIFIER_TOKENS

            with self._phase("learning the vocabulary"):
                self.vocabulary_ = train_vocabulary(
                    train.texts, self.config.vocabulary_size, reserved=CLASSIFIER_TOKENS
                )

    def _targets(self, texts: LabelledTexts) -> np.ndarray:
        """Integer classes (N,), or a multi-hot matrix (N, classes) for multi-label."""
        if self.multi_label_:
            return multi_hot(texts.labels, self.classes_)
        index = {name: i for i, name in enumerate(self.classes_)}
        return np.array([index[lab] for lab in texts.labels], np.int32)

    def _dataset(self, texts: LabelledTexts, training: bool) -> tf.data.Dataset:
        """Batches of (strings, targets); in training, texts of similar length share a batch."""
        c = self.config
        ds = tf.data.Dataset.from_tensor_slices((tf.constant(texts.texts), self._targets(texts)))
        if training:
            ds = ds.shuffle(len(texts), seed=c.seed, reshuffle_each_iteration=True).repeat()
            lengths = np.array([len(t) for t in texts.texts])
            edges = sorted({int(q) + 1 for q in np.quantile(lengths, [0.25, 0.5, 0.75])})
            ds = ds.bucket_by_sequence_length(
                lambda text, target: tf.strings.length(text),
                edges,
                [c.batch_size] * (len(edges) + 1),
            )
        else:
            ds = ds.batch(c.batch_size)
        return ds.prefetch(tf.data.AUTOTUNE)

    def _plan(self, prepared: _Prepared, rt, run) -> Plan:
        c = self.config
        train, val = prepared.splits["train"], prepared.splits.get("val")
        steps = math.ceil(len(train) / c.batch_size)
        epochs = c.epochs or (
            TIMED_EPOCHS
            if c.train_minutes
            else min(MAX_EPOCHS, max(MIN_EPOCHS, math.ceil(STEP_BUDGET / steps)))
        )
        return Plan(
            train=self._dataset(train, training=True),
            val=self._dataset(val, training=False) if val else None,
            steps=steps,
            epochs=epochs,
            repeating=True,
            class_weight=self._class_weight(train),
            callbacks=time_budget(c, steps, epochs),
        )

    def _class_weight(self, train: LabelledTexts) -> dict | None:
        """Balanced weights when class_weight is auto and the classes are imbalanced (single
        label only: Keras weighs a sample by its one class)."""
        if self.config.class_weight != "auto" or self.multi_label_:
            return None
        labels = self._targets(train)
        counts = np.bincount(labels, minlength=len(self.classes_))
        if counts.max() < IMBALANCE * max(counts.min(), 1):
            return None
        return balanced_class_weights(labels, len(self.classes_))

    def _optimizer(self, plan: Plan, epochs: int, lr_scale: float):
        scale = self.config.pretrained_lr_factor if self.pretrained else 1.0
        return budget_optimizer(self.config, plan.steps, epochs, scale=scale * lr_scale)

    def _build(self, prepared: _Prepared, plan: Plan) -> keras.Model:
        c, kind = self.config, self._kind()
        classes = len(self.classes_)
        if kind == "pretrained":
            from dltoolkit.models.hub_text import load_text_classifier

            model = load_text_classifier(c.preset, classes, self.multi_label_, c.max_length)
        else:
            from dltoolkit.models import text_classification as tc

            common = {"classes": classes, "multi_label": self.multi_label_, "dropout": c.dropout}
            if kind == "fasttext":
                model = tc.FastTextClassifier(
                    ngrams=c.ngrams, buckets=c.ngram_buckets, dim=c.d_model, **common
                )
            else:
                sequence = {
                    "vocabulary": self.vocabulary_,
                    "max_length": c.max_length,
                    "truncation": "head" if c.long_texts == "chunk" else c.long_texts,
                    "d_model": c.d_model,
                    **common,
                }
                if kind == "cnn":
                    model = tc.ConvTextClassifier(**sequence)
                else:
                    model = tc.TransformerClassifier(
                        layers=c.layers,
                        heads=c.heads,
                        ff_dim=c.ff_dim,
                        pooling=c.pooling,
                        **sequence,
                    )
        model(tf.constant(["a text"]))
        if c.pretrain_epochs:
            self._pretrain(model, prepared.splits["train"].texts, plan)
        return model

    def _pretrain(self, model, texts: list[str], plan: Plan) -> None:
        """Masked-LM pretraining of the encoder on the training texts; with train_minutes, the
        classifier then trains for what is left of the time."""
        from dltoolkit.models.text_classification import mlm_pretrainer

        c = self.config
        pretrainer = mlm_pretrainer(model, mask_rate=c.mask_rate)
        steps = math.ceil(len(texts) / c.batch_size)
        pretrainer.compile(optimizer=budget_optimizer(c, steps, c.pretrain_epochs))
        ds = tf.data.Dataset.from_tensor_slices(tf.constant(texts))
        ds = ds.shuffle(len(texts), seed=c.seed).batch(c.batch_size).prefetch(tf.data.AUTOTUNE)
        started = time.monotonic()
        with self._phase(f"masked-LM pretraining ({c.pretrain_epochs} epochs)"):
            pretrainer.fit(ds, epochs=c.pretrain_epochs, verbose=0)
        if c.train_minutes:
            left = c.train_minutes - (time.monotonic() - started) / 60
            if left <= 0:
                raise ConfigError(
                    f"masked-LM pretraining used all of train_minutes={c.train_minutes:g}; "
                    "lower pretrain_epochs or raise train_minutes"
                )
            rest = dataclasses.replace(c, train_minutes=left)
            plan.callbacks[:] = time_budget(rest, plan.steps, plan.epochs)

    def _compile_args(self) -> dict:
        from dltoolkit.models.text_classification import classification_loss

        accuracy = (
            keras.metrics.BinaryAccuracy(name="accuracy")
            if self.multi_label_
            else keras.metrics.SparseCategoricalAccuracy(name="accuracy")
        )
        return {"loss": classification_loss(self.multi_label_), "metrics": [accuracy]}

    def _fitted(self, prepared: _Prepared) -> None:
        """Multi-label: per-label thresholds with the best F1 on the validation texts."""
        if not self.multi_label_:
            return
        val = prepared.splits.get("val")
        if val is None or not len(val):
            self.thresholds_ = [0.5] * len(self.classes_)
            return
        self.thresholds_ = tuned_thresholds(self._targets(val), self.predict_proba(val.texts))

    # -- scoring --------------------------------------------------------------------------

    def _probabilities_graph(self, text):
        """Strings (B,) -> probabilities (B, classes) float32, windows averaged with `chunk`."""
        if self.config.long_texts == "chunk" and hasattr(self.model_, "chunk_probabilities"):
            probabilities = self.model_.chunk_probabilities(text)
        else:
            probabilities = self.model_(text, training=False)
        return tf.cast(probabilities, tf.float32)

    def predict_proba(self, texts: list[str]) -> np.ndarray:
        """Class probabilities (N, classes) of raw strings."""
        self._require_model()
        if self._scorer is None:
            self._scorer = tf.function(self._probabilities_graph, input_signature=[_TEXT])
        if not texts:
            return np.zeros((0, len(self.classes_)), np.float32)
        size = self.config.batch_size * 4
        return np.concatenate(
            [
                self._scorer(tf.constant(texts[i : i + size])).numpy()
                for i in range(0, len(texts), size)
            ]
        )

    def _metrics(self, texts: LabelledTexts, probabilities: np.ndarray) -> dict:
        if self.multi_label_:
            return multi_label_metrics(
                self._targets(texts), probabilities, self.thresholds_, self.classes_
            )
        return classification_metrics(self._targets(texts), probabilities, self.classes_)

    def _evaluate_prepared(self, prepared: _Prepared) -> dict:
        splits = prepared.splits
        name = self._held_out(splits)
        texts = splits[name]
        with self._phase(f"scoring {len(texts)} {name} texts"):
            probabilities = self.predict_proba(texts.texts)
        prepared.held_out.update(split=name, texts=texts, probabilities=probabilities)
        metrics = self._metrics(texts, probabilities)
        return {**metrics, **self._baseline(splits["train"], texts), "split": name}

    def _baseline(self, train: LabelledTexts, held_out: LabelledTexts) -> dict:
        """The most frequent training class (single label) said for every held-out text."""
        if self.multi_label_:
            return {}
        counts = np.bincount(self._targets(train), minlength=len(self.classes_))
        return {"baseline_accuracy": float(np.mean(self._targets(held_out) == counts.argmax()))}

    def evaluate(self, data) -> dict:
        """Accuracy, macro-F1, per-class precision/recall/F1 and the confusion matrix on
        labelled `data` (micro/macro F1 and per-label for multi-label); a table whose header
        differs from the training table's is read by the training columns' positions.
        Texts whose labels the model never learned are left out and counted ("skipped")."""
        self._require_model()
        named = data_splits(data, self.config.tfds_data_dir)
        split = "test" if "test" in named else "train"
        texts = self._read(data, split, training=False, like=self._columns())
        texts, dropped = _known_labels(texts, self.classes_)
        if not len(texts):
            raise DataError(
                f"{texts.description}: no text carries a label this model knows "
                f"({', '.join(self.classes_[:10])})"
            )
        metrics = self._metrics(texts, self.predict_proba(texts.texts))
        skipped = len(texts.problems) + len(dropped)
        return {**metrics, **({"skipped": skipped} if skipped else {})}

    def _columns(self):
        return tuple(self.columns_) if self.columns_ else None

    def predict(
        self, inputs=None, *, text: list[str] | str | None = None, strict: bool = False
    ) -> list[dict]:
        """Labels of `text` (strings) and of `inputs` (.txt files, folders of them, or tables
        with a text column): one row per text, {input, label, score, probabilities} (and
        `labels`, those over their tuned thresholds, for multi-label). A text that cannot
        be read or is empty gets an error row `{"input", "error"}` in its place; with
        `strict` the first raises a DataError."""
        self._require_model()
        texts = [text] if isinstance(text, str) else list(text or [])
        documents = [as_document(f"text {i + 1}", t) for i, t in enumerate(texts)]
        if inputs:
            documents += read_documents([inputs] if isinstance(inputs, str) else list(inputs))
        if not documents:
            raise DataError('nothing to classify: pass --text "..." or .txt files / a folder')
        stop_if_strict(documents, strict=strict)
        good = [d for d in documents if not isinstance(d, Bad)]
        probabilities = iter(self.predict_proba([t for _, t in good]))
        rows = [
            d if isinstance(d, Bad) else self._row(d[0], next(probabilities)) for d in documents
        ]
        return assemble(rows, strict=strict)

    def _row(self, name: str, probabilities: np.ndarray) -> dict:
        best = int(probabilities.argmax())
        row = {
            "input": name,
            "label": self.classes_[best],
            "score": float(probabilities[best]),
            "probabilities": {
                c: float(p) for c, p in zip(self.classes_, probabilities, strict=True)
            },
        }
        if self.multi_label_:
            row["labels"] = [
                c
                for c, p, t in zip(self.classes_, probabilities, self.thresholds_, strict=True)
                if p >= t
            ]
        return row

    # -- persistence and export ---------------------------------------------------------------

    def _restored(self) -> None:
        self._scorer = None

    def _serve(self, text):
        """Strings (B,) -> label, score, probabilities (and for multi-label `selected`, a
        (B, classes) flag per label over its tuned threshold, and `labels`, those joined
        with '|')."""
        probabilities = self._probabilities_graph(text)
        names = tf.constant(self.classes_)
        best = tf.argmax(probabilities, axis=1, output_type=tf.int32)
        out = {
            "label": tf.gather(names, best),
            "score": tf.reduce_max(probabilities, axis=1),
            "probabilities": probabilities,
        }
        if self.multi_label_:
            selected = probabilities >= tf.constant(self.thresholds_, tf.float32)[None, :]
            chosen = tf.where(selected, names[None, :], tf.constant(""))
            joined = tf.strings.reduce_join(chosen, axis=1, separator="|")
            out["selected"] = selected
            out["labels"] = tf.strings.regex_replace(
                tf.strings.regex_replace(joined, r"\|+", "|"), r"^\||\|$", ""
            )
        return out

    def _signatures(self) -> dict[str, Signature]:
        return {"serving_default": Signature([_TEXT], call=self._serve)}

    # -- report ---------------------------------------------------------------------------

    def _report(self, report: Report, prepared: _Prepared) -> None:
        c, m, held = self.config, self.metrics_, prepared.held_out
        report.text("Data", prepared.description)
        if prepared.problems:
            report.table(
                f"Records left out ({len(prepared.problems)}; the first 20)",
                [{"record": s, "reason": r} for s, r in prepared.problems[:20]],
            )
        report.text("Model", self._model_description())
        scalars = {k: v for k, v in m.items() if isinstance(v, int | float)}
        report.table(f"Scores on the {held['split']} split", scalars)
        report.table("Per class", [{"class": k, **v} for k, v in m["per_class"].items()])
        if "confusion_matrix" in m:
            report.figure(
                "Confusion matrix",
                plot_confusion_matrix(np.array(m["confusion_matrix"]), self.classes_),
                "confusion_matrix",
            )
        texts, probabilities = held["texts"], held["probabilities"]
        if not self.multi_label_ and c.report_examples:
            predicted = [self.classes_[i] for i in probabilities.argmax(axis=1)]
            mistakes = confident_mistakes(
                texts.texts, texts.labels, predicted, probabilities.max(axis=1), c.report_examples
            )
            if mistakes:
                report.table("Most confident mistakes", mistakes)
        if c.report_tokens:
            with self._phase("word attributions (occlusion)"):
                words = occlusion_words(
                    self.predict_proba, texts.texts, self.classes_, c.report_tokens
                )
            rows = [
                {"class": name, "words (mean drop in probability when removed)": _words(found)}
                for name, found in words.items()
            ]
            if rows:
                report.table("Words that move each class most", rows)

    def _model_description(self) -> str:
        c, kind = self.config, self._kind()
        if kind == "pretrained":
            return f"pretrained preset {c.preset}, fine-tuned; window {c.max_length} tokens"
        if kind == "fasttext":
            return (
                f"fastText-style bag of word 1-{c.ngrams}-grams hashed into {c.ngram_buckets} "
                f"buckets, {c.d_model}-wide embeddings"
            )
        body = (
            f"BERT-style Transformer encoder from scratch: {c.layers} layers, d_model "
            f"{c.d_model}, {c.heads} heads, {c.pooling} pooling"
            if kind == "transformer"
            else f"convolutional text model from scratch: {c.d_model}-wide embeddings"
        )
        pretraining = (
            f"; masked-LM pretraining {c.pretrain_epochs} epochs" if c.pretrain_epochs else ""
        )
        return (
            f"{body}; WordPiece vocabulary of {len(self.vocabulary_)}; window {c.max_length} "
            f"tokens, longer texts: {c.long_texts}{pretraining}"
        )


def _known_labels(texts: LabelledTexts, classes: list[str]) -> tuple[LabelledTexts, list]:
    """`texts` without the records whose label (or every label) the training data lacks;
    those are returned as (source, reason) problems. Multi-label sets lose unknown labels."""
    known = set(classes)
    keep, dropped = [], []
    for i, label in enumerate(texts.labels):
        wanted = [lab for lab in label if lab in known] if texts.multi_label else label
        if (texts.multi_label and wanted) or (not texts.multi_label and label in known):
            keep.append(i)
            if texts.multi_label:
                texts.labels[i] = wanted
        else:
            dropped.append((texts.sources[i], f"label {label!r} is not among the training labels"))
    return (texts if len(keep) == len(texts) else texts.take(keep)), dropped


def _words(found: list[dict]) -> str:
    return ", ".join(f"{w['word']} ({w['mean_drop']:+.3f})" for w in found) or "-"
