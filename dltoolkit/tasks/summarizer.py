"""Summarizer: the summarize-text recipe (a Transformer trained from scratch with its own
WordPiece vocabulary, or a pretrained KerasHub Seq2SeqLM such as BART fine-tuned)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import keras
import numpy as np
import tensorflow as tf

from dltoolkit.core import files, state
from dltoolkit.core.callbacks import snapshot_path
from dltoolkit.core.config import check_preset_choice
from dltoolkit.core.errors import ConfigError, DataError
from dltoolkit.core.export import Signature
from dltoolkit.core.optim import time_budget
from dltoolkit.core.recipe import Recipe
from dltoolkit.core.records import Bad, assemble, stop_if_strict
from dltoolkit.core.report import Report
from dltoolkit.core.rundir import RunDir
from dltoolkit.core.training import Plan
from dltoolkit.data.text import (
    SPECIAL_TOKENS,
    Pairs,
    as_document,
    read_documents,
    read_pairs,
    split_indices,
    tidy_spacing,
    train_vocabulary,
)
from dltoolkit.layers.text import WordPieces
from dltoolkit.models.decoding import ConstrainedSampler, Decoding, decode_ids
from dltoolkit.models.pretrained_seq2seq import (
    check_preset,
    end_token_ids,
    load_seq2seq,
    set_lengths,
    summarize_graph,
)
from dltoolkit.models.seq2seq import (
    Seq2SeqTransformer,
    SmoothedTokenLoss,
    Summarization,
    encoder_input,
)
from dltoolkit.specs.summarize import SPEC
from dltoolkit.tasks.summary_eval import example_rows, summary_metrics

PAD, UNK, BOS, EOS = range(len(SPECIAL_TOKENS))
_TEXT = tf.TensorSpec([None], tf.string, name="text")


@dataclass
class _Prepared:
    train: Pairs
    val: Pairs
    description: str
    held_out: dict = field(default_factory=dict)


class Summarizer(Recipe):
    """Summarise documents: train on document/summary pairs, then summarise new text.

    >>> Summarizer(text_field="article", summary_field="highlights").fit("articles.jsonl")
    >>> Summarizer(preset="bart_base_en").fit("pairs.csv").predict(text=["..."])
    """

    spec = SPEC
    learned = ("vocabulary_",)  # also inside model.keras; state.json has it for --resume

    def __init__(self, **params):
        super().__init__(**params)
        self.vocabulary_: list[str] | None = None
        self._tokenizer: WordPieces | None = None
        self._graph_fns: dict = {}

    @property
    def pretrained(self) -> bool:
        return self.config.preset is not None

    # -- parameters -----------------------------------------------------------------------

    def _validate(self) -> None:
        c = self.config
        check_preset_choice(c.model, c.preset)
        if c.preset:
            check_preset(c.preset)
        if c.d_model % c.heads:
            raise ConfigError(f"d_model {c.d_model} must be divisible by heads {c.heads}")
        self._decoding().check()
        if self._decoding().max_length > c.max_target_length - 1:
            raise ConfigError(
                f"max_length {self._decoding().max_length} exceeds what the decoder "
                f"is trained for (max_target_length - 1 = {c.max_target_length - 1})"
            )

    def _decoding(self, strategy: str | None = None) -> Decoding:
        c = self.config
        max_length = c.max_length if c.max_length is not None else c.max_target_length - 1
        return Decoding(
            strategy or c.decoding,
            c.beams,
            c.top_k,
            c.top_p,
            c.temperature,
            c.min_length,
            max_length,
            c.repetition_penalty,
            c.no_repeat_ngram,
            c.seed,
        )

    # -- data -----------------------------------------------------------------------------

    def _read(self, data, split: str) -> Pairs:
        c = self.config
        if data is None or (isinstance(data, str) and not data):
            raise DataError(
                "summarize needs --data: a JSONL/CSV/Parquet file of document/summary "
                "pairs, a folder of NAME.txt + NAME.summary.txt, or tfds:NAME"
            )
        return read_pairs(
            data,
            c.text_field,
            c.summary_field,
            strict=c.strict,
            tfds_data_dir=c.tfds_data_dir,
            split=split,
        )

    def _prepare(self, data, console) -> _Prepared:
        pairs = self._read(data, "train")
        if len(pairs) < 2:
            raise DataError(
                f"{pairs.description}: {len(pairs)} usable pair(s); at least 2 are needed"
            )
        train, val = split_indices(len(pairs), self.config.val_split, self.config.seed)
        if console is not None:
            skipped = f"; skipped {pairs.skipped} empty" if pairs.skipped else ""
            console.print(
                f"data: {pairs.description}; train {len(train)}, validation {len(val)}{skipped}"
            )
        return _Prepared(
            pairs.take(train),
            pairs.take(val),
            f"{pairs.description}; {len(train)} train / {len(val)} validation pairs"
            + (f"; {pairs.skipped} empty pairs skipped" if pairs.skipped else ""),
        )

    # -- training -------------------------------------------------------------------------

    def _adopt(self, prepared: _Prepared, run: RunDir) -> None:
        if self.pretrained:
            return
        # a resumed run keeps the vocabulary its checkpoints were trained with
        self.vocabulary_ = state.interrupted(run).get("vocabulary")
        if not self.vocabulary_:
            with self._phase("learning the wordpiece vocabulary"):
                self.vocabulary_ = train_vocabulary(
                    prepared.train.texts + prepared.train.summaries, self.config.vocabulary_size
                )
        self._tokenizer = WordPieces(self.vocabulary_)
        files.write_json(run.state_file, self._state())

    def _plan(self, prepared: _Prepared, rt, run: RunDir) -> Plan:
        c = self.config
        dataset = self._text_dataset if self.pretrained else self._id_dataset
        val_steps = math.ceil(len(prepared.val) / c.batch_size) or None
        steps = math.ceil(len(prepared.train) / c.batch_size)
        snapshots = [c.snapshot_minutes] if c.snapshot_minutes else []
        return Plan(
            train=dataset(prepared.train, True),
            val=dataset(prepared.val, False) if val_steps else None,
            steps=steps,
            epochs=c.epochs,
            validation_steps=val_steps,
            repeating=True,
            callbacks=time_budget(c, steps, c.epochs, snapshots, run.checkpoints),
        )

    def _build(self, prepared: _Prepared, plan: Plan) -> keras.Model:
        c = self.config
        if self.pretrained:
            return load_seq2seq(c.preset, c.max_source_length, c.max_target_length)
        transformer = Seq2SeqTransformer(
            len(self.vocabulary_),
            c.max_source_length,
            c.max_target_length,
            d_model=c.d_model,
            layers_=c.layers,
            heads=c.heads,
            ff_dim=c.ff_dim,
            dropout=c.dropout,
            positions=c.positions,
            pad_id=PAD,
        )
        model = Summarization(self._tokenizer, transformer, end_token=SPECIAL_TOKENS[EOS])
        dummy = np.ones((1, 4), np.int32)
        model({"source": dummy, "target": dummy})
        return model

    def _compile_args(self) -> dict:
        return {
            "loss": SmoothedTokenLoss(self.config.label_smoothing),
            "weighted_metrics": [keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
        }

    def _text_dataset(self, pairs: Pairs, training: bool) -> tf.data.Dataset:
        """Raw strings for a Seq2SeqLM, whose preprocessor tokenises them during fit."""
        ds = tf.data.Dataset.from_tensor_slices(
            {"encoder_text": pairs.texts, "decoder_text": pairs.summaries}
        )
        if training:
            ds = ds.shuffle(len(pairs), seed=self.config.seed, reshuffle_each_iteration=True)
        return ds.repeat().batch(self.config.batch_size).prefetch(tf.data.AUTOTUNE)

    def _id_dataset(self, pairs: Pairs, training: bool) -> tf.data.Dataset:
        """Token ids batched by similar source length: ({source, target}, next tokens, weights)."""
        c = self.config
        source = encoder_input(self._tokens(pairs.texts), c.max_source_length, EOS)
        summary = self._tokens(pairs.summaries)[:, : c.max_target_length - 1]
        column = tf.fill([summary.nrows(), 1], BOS)
        target_in = tf.concat([tf.RaggedTensor.from_tensor(column), summary], axis=1)
        target_out = tf.concat([summary, tf.RaggedTensor.from_tensor(column * 0 + EOS)], axis=1)
        ds = tf.data.Dataset.from_tensor_slices(
            tuple((t.to_tensor(PAD), t.row_lengths()) for t in (source, target_in, target_out))
        )
        ds = ds.map(lambda *parts: tuple(ids[:length] for ids, length in parts))
        if training:
            ds = ds.shuffle(len(pairs), seed=c.seed, reshuffle_each_iteration=True).repeat()
            edges = [c.max_source_length * k // 4 for k in (1, 2, 3)]
            ds = ds.bucket_by_sequence_length(
                lambda s, i, o: tf.shape(s)[0], edges, [c.batch_size] * (len(edges) + 1)
            )
        else:
            ds = ds.padded_batch(c.batch_size).repeat()
        return ds.map(_with_weights, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)

    def _tokens(self, texts: list[str], chunk=512) -> tf.RaggedTensor:
        tokenize = tf.function(self._tokenizer, input_signature=[_TEXT])  # graph path: tensors out
        parts = [tokenize(tf.constant(texts[i : i + chunk])) for i in range(0, len(texts), chunk)]
        return tf.concat(parts, axis=0) if parts else tf.ragged.constant([[]], tf.int32)[:0]

    # -- generation -----------------------------------------------------------------------

    def _sampler(self, decoding: Decoding) -> ConstrainedSampler:
        if self.pretrained:
            return ConstrainedSampler(
                decoding, end_token_ids(self.model_), self.model_.backbone.vocabulary_size
            )
        return ConstrainedSampler(decoding, [EOS], self._tokenizer.vocabulary_size())

    def _summarize_graph(self, text, decoding: Decoding, sampler: ConstrainedSampler):
        """Raw strings (B,) -> summaries (B,): tokenise, decode, detokenise, as graph ops."""
        if self.pretrained:
            return summarize_graph(self.model_, text, sampler, decoding.max_length)
        model = self.model_
        ids = summary_ids(
            model, model.source_ids(text).to_tensor(PAD), sampler, decoding.max_length
        )
        return detokenized(model.tokenizer, ids)

    def _graph_fn(self, decoding: Decoding):
        if decoding not in self._graph_fns:
            sampler = self._sampler(
                decoding
            )  # random samplers own a seed variable: made once, outside
            self._graph_fns[decoding] = tf.function(
                lambda text: self._summarize_graph(text, decoding, sampler), input_signature=[_TEXT]
            )
        return self._graph_fns[decoding]

    def summarize(self, texts: list[str], decoding: str | None = None) -> list[str]:
        """Summaries of `texts` with the configured decoding (or `decoding`: greedy, beam,
        top-k, top-p); documents longer than the input follow `long_documents`."""
        self._require_model()
        settings = self._decoding(decoding)
        settings.check()
        if self.config.long_documents == "chunk":
            texts = self._condensed(texts, settings)
        return self._summarize_batches(texts, settings)

    def _summarize_batches(self, texts: list[str], decoding: Decoding) -> list[str]:
        order = np.argsort([len(t) for t in texts], kind="stable")  # similar lengths share a batch
        out: list[str] = [""] * len(texts)
        fn, size = self._graph_fn(decoding), max(1, self.config.batch_size)
        for start in range(0, len(texts), size):
            batch = order[start : start + size]
            results = fn(tf.constant([texts[i] for i in batch])).numpy()
            for i, summary in zip(batch, results, strict=True):
                out[i] = summary.decode("utf-8", errors="replace").strip()
        return out

    def _condensed(self, texts: list[str], decoding: Decoding) -> list[str]:
        """Chunk-summarise-summarise: a document longer than the model's input becomes the
        joined summaries of its input-sized chunks (then summarised like any other)."""
        chunks = [self._chunks(t) for t in texts]
        flat = [piece for parts in chunks if len(parts) > 1 for piece in parts]
        summaries = iter(self._summarize_batches(flat, decoding))
        return [
            " ".join(next(summaries) for _ in parts) if len(parts) > 1 else text
            for text, parts in zip(texts, chunks, strict=True)
        ]

    def _chunks(self, text: str) -> list[str]:
        if self.pretrained:
            count = int(tf.size(self.model_.preprocessor.tokenizer(text)))
        else:
            count = int(self._tokens([text]).flat_values.shape[0])
        pieces = math.ceil(count / (self.config.max_source_length - 2))
        words = text.split()
        if pieces <= 1 or len(words) < 2:
            return [text]
        size = math.ceil(len(words) / pieces)
        return [" ".join(words[i : i + size]) for i in range(0, len(words), size)]

    # -- evaluation and prediction ----------------------------------------------------------

    def _score(self, pairs: Pairs) -> tuple[dict, list[str]]:
        summaries = self.summarize(pairs.texts)
        metrics = summary_metrics(
            pairs.texts, pairs.summaries, summaries, self.config.lead_sentences
        )
        return {
            **metrics,
            "decoding": self.config.decoding,
            "long_documents": self.config.long_documents,
        }, summaries

    def _evaluate_prepared(self, prepared: _Prepared) -> dict:
        pairs = prepared.val if len(prepared.val) else prepared.train
        if self.config.eval_samples:
            pairs = pairs.take(range(min(len(pairs), self.config.eval_samples)))
        metrics, summaries = self._score(pairs)
        prepared.held_out = {"pairs": pairs, "summaries": summaries}
        return metrics

    def evaluate(self, data) -> dict:
        """ROUGE-1/2/L of the model and of the Lead baseline against `data`'s reference
        summaries (tfds data: its 'test' split), with length statistics."""
        self._require_model()
        return self._score(self._read(data, "test"))[0]

    def predict(
        self, inputs=None, *, text: list[str] | str | None = None, strict: bool = False
    ) -> list[dict]:
        """Summaries of `text` (strings) and of `inputs` (.txt files, folders of them, or
        JSONL/CSV/Parquet tables with a text field): one row {input, summary} per document.

        A document that cannot be read (not UTF-8, blank, a table that does not parse) gets
        an error row `{"input": name, "error": reason}` in its place; with `strict` the first
        raises a DataError."""
        self._require_model()
        texts = [text] if isinstance(text, str) else list(text or [])
        documents = [as_document(f"text {i + 1}", t) for i, t in enumerate(texts)]
        if inputs:
            documents += read_documents([inputs] if isinstance(inputs, str) else list(inputs))
        if not documents:
            raise DataError('nothing to summarise: pass --text "..." or .txt files / a folder')
        stop_if_strict(documents, strict=strict)  # before the costly summarising
        good = [d for d in documents if not isinstance(d, Bad)]
        summaries = iter(self.summarize([t for _, t in good]) if good else [])
        return assemble(
            [
                d if isinstance(d, Bad) else {"input": d[0], "summary": next(summaries)}
                for d in documents
            ],
            strict=strict,
        )

    def load_snapshot(self, minutes: float) -> Summarizer:
        """Use the weights this run reached after `minutes` (needs snapshot_minutes set in fit)."""
        path = snapshot_path(self.run_.checkpoints, minutes)
        if not path.is_file():
            raise ConfigError(
                f"no snapshot at {minutes:g} minutes in {self.run_.path}; "
                "train with snapshot_minutes set to keep one"
            )
        self.model_.load_weights(path)
        return self

    # -- persistence and export ---------------------------------------------------------------

    def _restored(self) -> None:
        if self.pretrained:
            set_lengths(self.model_, self.config.max_source_length, self.config.max_target_length)
        else:
            self._tokenizer = self.model_.tokenizer

    def _serve(self, text):
        greedy = self._decoding("greedy")
        return {"summary": self._summarize_graph(text, greedy, self._sampler(greedy))}

    def _signatures(self) -> dict[str, Signature]:
        return {"serving_default": Signature([_TEXT], call=self._serve)}

    # -- report ---------------------------------------------------------------------------

    def _report(self, report: Report, prepared: _Prepared) -> None:
        c, m = self.config, self.metrics_
        report.text("Data", prepared.description)
        model = (
            f"pretrained preset {c.preset}"
            if self.pretrained
            else (
                f"Transformer from scratch: {c.layers}+{c.layers} layers, d_model {c.d_model}, "
                f"{c.positions} positions, WordPiece vocabulary of {len(self.vocabulary_)}"
            )
        )
        report.text(
            "Model and policy",
            f"{model}. Inputs longer than {c.max_source_length} tokens: "
            + (
                "truncated to the first tokens"
                if c.long_documents == "truncate"
                else "split into input-sized chunks, each summarised, then the joined chunk "
                "summaries summarised (the SavedModel always truncates)"
            )
            + f". Decoding: {c.decoding}, at most {self._decoding().max_length} tokens.",
        )
        report.table(
            "ROUGE F-measure (%) on held-out pairs",
            [
                {
                    "summaries": "model",
                    **{k: m[k] for k in ("rouge1", "rouge2", "rougeL")},
                    "mean words": m["summary_mean_words"],
                },
                {
                    "summaries": f"Lead-{c.lead_sentences}",
                    **{k: m[f"lead_{k}"] for k in ("rouge1", "rouge2", "rougeL")},
                    "mean words": m["lead_mean_words"],
                },
                {"summaries": "reference", "mean words": m["reference_mean_words"]},
            ],
        )
        held = prepared.held_out
        report.table(
            "Examples",
            example_rows(
                held["pairs"].texts,
                held["pairs"].summaries,
                held["summaries"],
                c.lead_sentences,
                c.report_examples,
            ),
        )


def _with_weights(source, target_in, target_out):
    return (
        {"source": source, "target": target_in},
        target_out,
        tf.cast(tf.not_equal(target_out, PAD), tf.float32),
    )


def summary_ids(model: Summarization, source, sampler: ConstrainedSampler, max_length: int):
    """Encoder ids (B, S) -> summary ids (B, max_length), padding from the end token on; runs
    on a summarizer's network or on its loaded model.keras."""
    return decode_ids(model.transformer, source, sampler, max_length, BOS, EOS, PAD)


def detokenized(tokenizer: WordPieces, ids):
    """Summary ids (B, L), padded, -> summary strings (B,)."""
    return tidy_spacing(tokenizer.detokenize(tf.RaggedTensor.from_tensor(ids, padding=PAD)))
