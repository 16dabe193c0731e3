"""TextGenerator: the generate-text recipe. A GPT-style decoder trained from scratch on a
character or byte-level BPE vocabulary learned on the data, fine-tuned from an earlier run
(prompt/response pairs: the loss falls on the responses), or aligned with preference pairs
by DPO; sampling runs in the graph, so the SavedModel maps prompt strings to text."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from dltoolkit.core import files, state
from dltoolkit.core.config import check_preset_choice, read_recipe_file
from dltoolkit.core.errors import ConfigError
from dltoolkit.core.export import Signature
from dltoolkit.core.optim import time_budget
from dltoolkit.core.recipe import Recipe
from dltoolkit.core.records import Bad, assemble, stop_if_strict
from dltoolkit.core.report import Report
from dltoolkit.core.rundir import RunDir
from dltoolkit.core.training import Plan
from dltoolkit.data.corpus import (
    Records,
    read_records,
    record_texts,
    sample_prompts,
    split_records,
)
from dltoolkit.data.lm_batches import Encoder
from dltoolkit.data.text import read_documents
from dltoolkit.models.language_model import (
    END_TOKEN,
    cut_at_stops,
    learn_vocabulary,
    make_tokenizer,
)
from dltoolkit.specs.generate_text import SPEC, alignment_params
from dltoolkit.tasks.text_generation_eval import (
    language_scores,
    preference_scores,
    report_scores,
    token_frequencies,
)

DEFAULT_EPOCHS = 8  # of eval_every steps: 2,000 optimizer steps by default
DEFAULT_PASSES = 10  # ... but no more than about this many passes over small training data
DPO_PASSES = 2  # default length of DPO training, in passes over the preference pairs
# DPO's validation loss rises once the margins grow, while its preference accuracy, the
# figure that matters, still climbs: DPO keeps the epoch with the most accurate rewards.
DPO_BEST = {"best_by": "preference_accuracy", "best_mode": "max"}
# XLA compiles each step's shapes once (seconds on a CPU), then a GPT step takes about 3/4
# of its time (4 blocks, batch 12 x 64 on one core: 58 ms, not 80): worth it on long runs.
XLA_FROM_STEPS = 500
TIMED_EPOCHS = 10_000  # with train_minutes and no epochs, the clock ends training
_TEXT = tf.TensorSpec([None], tf.string, name="text")
_SCALARS = {
    "max_new_tokens": tf.TensorSpec([], tf.int32, name="max_new_tokens"),
    "temperature": tf.TensorSpec([], tf.float32, name="temperature"),
    "top_p": tf.TensorSpec([], tf.float32, name="top_p"),
    "seed": tf.TensorSpec([], tf.int32, name="seed"),
}


@dataclass
class _Prepared:
    train: list  # documents, (prompt, response) pairs, or (prompt, chosen, rejected) triples
    val: list
    kind: str  # "corpus", "pairs" or "preferences"
    description: str
    problems: list[str] = field(default_factory=list)
    held_out: dict = field(default_factory=dict)


class TextGenerator(Recipe):
    """Train a language model on text, then generate from prompts.

    >>> TextGenerator(context=64).fit("shakespeare.txt").predict(text=["ROMEO:"])
    >>> sft = TextGenerator(preset="runs/lm", prompt_field="prompt", response_field="response")
    >>> sft.fit("chats.jsonl").align("pairs.jsonl")  # DPO, into a new run
    """

    spec = SPEC
    learned = ("vocabulary_", "merges_", "token_frequencies_")

    def __init__(self, **params):
        super().__init__(**params)
        self.vocabulary_: list[str] | None = None
        self.merges_: list[str] | None = None
        self.token_frequencies_: np.ndarray | None = None  # the unigram baseline
        self._generate_fn = None
        self._parent_recipe: TextGenerator | None = None
        self._pretrained = None  # a KerasHub preset's LanguageModel, while fitting

    # -- parameters -----------------------------------------------------------------------

    def _validate(self) -> None:
        c = self.config
        if c.d_model % c.heads or (c.d_model // c.heads) % 2:
            raise ConfigError(
                f"d_model {c.d_model} must be divisible by heads {c.heads} into an even width"
            )
        if (c.prompt_field is None) != (c.response_field is None):
            raise ConfigError("prompt/response pairs need both --prompt-field and --response-field")
        if c.objective == "dpo" and not c.preset:
            raise ConfigError(
                "objective dpo aligns a trained model: give the run to align as --preset "
                "(or use `dltoolkit align RUN --preferences pairs.jsonl`)"
            )
        if self._from_run():
            _check_parent(c.preset)
            if c.model == "pretrained":
                raise ConfigError(f"--preset {c.preset} is a run; leave out --model pretrained")
        else:
            check_preset_choice(c.model, c.preset)
            if c.preset:
                from dltoolkit.models.hub_causal_lm import check_preset

                check_preset(c.preset)

    def _from_run(self) -> bool:
        """Whether --preset names an earlier run (else a KerasHub preset, or nothing)."""
        return bool(self.config.preset) and (Path(self.config.preset) / "recipe.toml").is_file()

    def sampling(self, **overrides) -> dict:
        """The settings a call may change (max_new_tokens, temperature, top_p, seed): the
        run's, with `overrides` (None: keep the run's). top_k, repetition_penalty and stop
        are the run's, traced into its generation graph."""
        c = self.config
        settings = {
            "max_new_tokens": c.max_new_tokens,
            "temperature": c.temperature,
            "top_p": c.top_p,
            "seed": c.seed,
        }
        settings.update({k: v for k, v in overrides.items() if v is not None})
        if settings["max_new_tokens"] < 1 or settings["temperature"] < 0:
            raise ConfigError("max_new_tokens must be at least 1 and temperature at least 0")
        if not 0 < settings["top_p"] <= 1:
            raise ConfigError(f"top_p must be in (0, 1], got {settings['top_p']}")
        return settings

    # -- data -----------------------------------------------------------------------------

    def _kind(self) -> str:
        if self.config.objective == "dpo":
            return "preferences"
        return "pairs" if self.config.prompt_field else "corpus"

    def _read(self, data) -> Records:
        c = self.config
        return read_records(
            data,
            self._kind(),
            text_field=c.text_field,
            prompt_field=c.prompt_field,
            response_field=c.response_field,
            strict=c.strict,
        )

    def _prepare(self, data, console) -> _Prepared:
        records = self._read(data)
        train, val, description = split_records(records, self.config.val_split, self.config.seed)
        if console is not None:
            console.print(f"data: {description}")
            for problem in records.problems[:5]:
                console.print(f"  skipped {problem}", markup=False)
        return _Prepared(train, val, records.kind, description, records.problems)

    # -- training -------------------------------------------------------------------------

    def _adopt(self, prepared: _Prepared, run: RunDir) -> None:
        c = self.config
        if self._from_run():
            parent = self._parent()
            self.vocabulary_, self.merges_ = parent.vocabulary_, parent.merges_
            self.token_frequencies_ = parent.token_frequencies_
            return
        if c.preset:  # a KerasHub preset brings its tokenizer
            from dltoolkit.models.hub_causal_lm import load_causal_lm

            with self._phase(f"loading {c.preset}"):
                self._pretrained = load_causal_lm(c.preset, c.context, c.lora_rank)
            return
        saved = state.interrupted(run)  # a resumed run keeps the vocabulary it trained with
        self.vocabulary_, self.merges_ = saved.get("vocabulary"), saved.get("merges")
        if self.vocabulary_ is None:
            with self._phase(f"learning the {c.tokens} vocabulary"):
                self.vocabulary_, self.merges_ = learn_vocabulary(
                    record_texts(prepared.train, prepared.kind), c.tokens, c.vocabulary_size
                )
            files.write_json(run.state_file, self._state())

    def _reference(self):
        """The model a DPO run started from (None: this run was not aligned)."""
        c = self.config
        if c.objective != "dpo":
            return None
        if self._from_run():
            return self._parent().model_
        from dltoolkit.models.hub_causal_lm import load_causal_lm

        return load_causal_lm(c.preset, c.context, c.lora_rank)

    def _parent(self) -> TextGenerator:
        """The run this one starts from (--preset), loaded once."""
        if self._parent_recipe is None:
            self._parent_recipe = TextGenerator.load(self.config.preset, progress=False)
        return self._parent_recipe

    def _encoder(self, model=None) -> Encoder:
        """Texts to ids as `model` (default: the one being built) reads them."""
        if model is not None:
            return Encoder(model.tokenizer, self.config.context, model.end_id, model.start_id)
        if self._pretrained is not None:
            return self._encoder(self._pretrained)
        tokenizer = make_tokenizer(self.vocabulary_, self.merges_)
        end = tokenizer.token_to_id(END_TOKEN)
        return Encoder(tokenizer, self.config.context, end, end)

    def _plan(self, prepared: _Prepared, rt, run: RunDir) -> Plan:
        c = self.config
        encoder = self._encoder()
        train = encoder.examples(prepared.train, prepared.kind)
        val = encoder.examples(prepared.val, prepared.kind) if prepared.val else None
        if prepared.kind != "preferences" and self.token_frequencies_ is None:
            size = encoder.tokenizer.vocabulary_size()
            self.token_frequencies_ = token_frequencies(train.ids, size)
        if c.epochs or c.train_minutes:
            epochs = c.epochs or TIMED_EPOCHS
        elif c.objective == "dpo":
            epochs = max(1, math.ceil(DPO_PASSES * train.batches(c.batch_size) / c.eval_every))
        else:  # DEFAULT_EPOCHS, or fewer on small data
            per_epoch = c.eval_every * c.batch_size * c.context
            epochs = min(DEFAULT_EPOCHS, math.ceil(DEFAULT_PASSES * train.ids.size / per_epoch))
        return Plan(
            train=train.training_batches(c.batch_size, c.seed),
            val=val.scoring_batches(c.batch_size).repeat() if prepared.val else None,
            steps=c.eval_every,
            epochs=epochs,
            validation_steps=val.batches(c.batch_size) if prepared.val else None,
            repeating=True,
            callbacks=time_budget(c, c.eval_every, epochs),
            jit_compile=self._xla(epochs * c.eval_every),
            **(DPO_BEST if c.objective == "dpo" else {}),
        )

    def _xla(self, steps: int) -> bool:
        """Whether to compile the steps with XLA: on long runs of a network of ours, DPO's
        included (KerasHub presets keep Keras' choice). A DPO step on the HH-RLHF benchmark's
        model: 4.7-5.7 s with XLA, 5.8-8 s without, on one shared core."""
        return self._pretrained is None and steps >= XLA_FROM_STEPS

    def _build(self, prepared: _Prepared, plan: Plan) -> keras.Model:
        c = self.config
        if self._from_run():
            model = keras.saving.load_model(RunDir.open(c.preset).model_file)  # a copy to train
        elif self._pretrained is not None:  # again, under the strategy's scope
            from dltoolkit.models.hub_causal_lm import load_causal_lm

            model = load_causal_lm(c.preset, c.context, c.lora_rank)
        else:
            from dltoolkit.models.gpt import GPT
            from dltoolkit.models.language_model import LanguageModel

            encoder = self._encoder()
            network = GPT(
                encoder.tokenizer.vocabulary_size(),
                context=c.context,
                d_model=c.d_model,
                layers=c.layers,
                heads=c.heads,
                ff_dim=c.ff_dim,
                dropout=c.dropout,
                positions=c.positions,
            )
            model = LanguageModel(encoder.tokenizer, network)
        model(np.zeros((1, 4), np.int32))
        if c.objective == "dpo":
            from dltoolkit.models.preference import DPOTrainer

            return DPOTrainer.from_policy(
                model, beta=c.beta, label_smoothing=c.label_smoothing, sft_weight=c.sft_weight
            )
        return model

    def _compile_args(self) -> dict:
        if self.config.objective == "dpo":
            return {}
        return {
            "loss": keras.losses.SparseCategoricalCrossentropy(
                from_logits=True, reduction="mean_with_sample_weight"
            ),
        }

    def _fitted(self, prepared: _Prepared) -> None:
        if self.config.objective == "dpo":  # the aligned policy is the run's model
            self.model_ = self.model_.policy
        self._generate_fn = None

    # -- evaluation -------------------------------------------------------------------------

    def _scores(self, records: list, kind: str) -> dict:
        """Loss per token, perplexity and bits per character (next-token), or preference
        accuracy and reward margin (preferences), with the baseline beside them."""
        examples = self._encoder(self.model_).examples(records, kind)
        size = self.config.batch_size
        if kind == "preferences":
            reference = self._reference()
            return preference_scores(self.model_, reference, examples, size, self.config.beta)
        return language_scores(self.model_, examples, size, self.token_frequencies_)

    def _evaluate_prepared(self, prepared: _Prepared) -> dict:
        held = prepared.val or prepared.train
        metrics = self._scores(held, prepared.kind)
        prompts = sample_prompts(held, prepared.kind, self.config.report_samples)
        prepared.held_out = {
            "prompts": prompts,
            "samples": self.generate(prompts) if prompts else [],
        }
        return metrics

    def evaluate(self, data) -> dict:
        """Loss, perplexity and bits per character on `data` (read as the training data was:
        text, prompt/response pairs or preference pairs), beside the unigram baseline."""
        self._require_model()
        records = self._read(data)
        return self._scores(records.items, records.kind)

    # -- generation ---------------------------------------------------------------------------

    def _graph(self):
        if self._generate_fn is None:
            model, stops = self.model_, (self.config.stop or "").split("|")
            top_k, penalty = self.config.top_k, self.config.repetition_penalty

            def generate(text, max_new_tokens, temperature, top_p, seed):
                out = model.generate(text, max_new_tokens, temperature, top_k, top_p, penalty, seed)
                return cut_at_stops(out, [s for s in stops if s])

            self._generate_fn = tf.function(generate, input_signature=[_TEXT, *_SCALARS.values()])
        return self._generate_fn

    def generate(self, prompts: list[str], **settings) -> list[str]:
        """Continuations of `prompts` (without the prompt), sampled with the run's settings
        or `settings` (max_new_tokens, temperature, top_p, seed)."""
        self._require_model()
        s = self.sampling(**settings)
        out: list[str] = []
        size = max(1, self.config.batch_size)
        fn = self._graph()
        for start in range(0, len(prompts), size):
            texts = fn(
                tf.constant(prompts[start : start + size], tf.string),
                tf.constant(s["max_new_tokens"], tf.int32),
                tf.constant(s["temperature"], tf.float32),
                tf.constant(s["top_p"], tf.float32),
                tf.constant(s["seed"], tf.int32),
            )
            out += [t.decode("utf-8", errors="replace") for t in texts.numpy()]
        return out

    def predict(
        self,
        inputs=None,
        *,
        text: list[str] | str | None = None,
        max_new_tokens: int | None = None,
        temperature: float | None = None,
        top_p: float | None = None,
        seed: int | None = None,
        strict: bool = False,
    ) -> list[dict]:
        """One row {input, prompt, text} per prompt: `text` (strings) and `inputs` (.txt
        files or folders of them, each file one prompt). An unreadable file gets an error row
        in its place; with `strict` the first raises a DataError."""
        self._require_model()
        texts = [text] if isinstance(text, str) else list(text or [])
        prompts = [(f"text {i + 1}", t) for i, t in enumerate(texts)]  # "" starts a document
        if inputs:
            prompts += read_documents([inputs] if isinstance(inputs, str) else list(inputs))
        if not prompts:
            prompts = [("empty prompt", "")]
        stop_if_strict(prompts, strict=strict)
        good = [p for p in prompts if not isinstance(p, Bad)]
        settings = {"max_new_tokens": max_new_tokens, "temperature": temperature}
        generated = iter(
            self.generate([t for _, t in good], top_p=top_p, seed=seed, **settings) if good else []
        )
        return assemble(
            [
                p
                if isinstance(p, Bad)
                else {"input": p[0], "prompt": p[1], "text": next(generated)}
                for p in prompts
            ],
            strict=strict,
        )

    # -- alignment ------------------------------------------------------------------------

    def align(self, preferences, out=None, *, overwrite=False, progress=True, **params):
        """A new run aligned with `preferences` by DPO, starting from this run's model (its
        frozen copy is the reference); its recipe file names this run as the parent."""
        self._require_model()
        child = {**alignment_params(self.get_params(), str(self.run_.path)), **params}
        out = out or f"{self.run_.path}-dpo"
        return type(self)(**child).fit(preferences, out, overwrite=overwrite, progress=progress)

    # -- persistence and export -------------------------------------------------------------

    def _restored(self) -> None:
        self._generate_fn = None

    def _serve(self, text, max_new_tokens, temperature, top_p, seed):
        return {"text": self._graph()(text, max_new_tokens, temperature, top_p, seed)}

    def _signatures(self) -> dict[str, Signature]:
        return {"serving_default": Signature([_TEXT, *_SCALARS.values()], call=self._serve)}

    # -- report ---------------------------------------------------------------------------

    def _report(self, report: Report, prepared: _Prepared) -> None:
        c = self.config
        report.text("Data", prepared.description)
        if prepared.problems:
            report.table("Skipped records", [{"problem": p} for p in prepared.problems[:50]])
        objective = f"Objective: {c.objective}" + (
            f" (beta {c.beta})" if c.objective == "dpo" else ""
        )
        size = self.model_.tokenizer.vocabulary_size()
        if c.preset and not self._from_run():
            model = f"KerasHub preset {c.preset} (context {c.context} tokens, vocabulary of {size})"
        else:
            origin = f"fine-tuned from run {c.preset}" if c.preset else "trained from scratch"
            model = (
                f"GPT-style decoder {origin}: {c.layers} blocks, d_model {c.d_model}, {c.heads} "
                f"heads, {c.positions} positions, context {c.context} tokens, vocabulary of "
                f"{size} ({c.tokens})"
            )
        report.text("Model", f"{model}. {objective}.")
        report_scores(report, self.metrics_)
        held = prepared.held_out
        if held.get("prompts"):
            report.table(
                f"Samples (temperature {c.temperature}, top-p {c.top_p}, seed {c.seed})",
                [
                    {"prompt": p[-200:], "generated": g[:600]}
                    for p, g in zip(held["prompts"], held["samples"], strict=True)
                ],
            )


def _check_parent(path) -> None:
    """A one-line ConfigError unless `path` is a finished generate-text run."""
    run = Path(path)
    if not (run / "model.keras").is_file() or not (run / "recipe.toml").is_file():
        raise ConfigError(
            f"--preset {path}: not a finished generate-text run directory (no model.keras); "
            "train one first with `dltoolkit generate-text`"
        )
    task = read_recipe_file(run / "recipe.toml")["task"]
    if task != SPEC.task:
        raise ConfigError(f"--preset {path} is a {task} run, not a generate-text run")
