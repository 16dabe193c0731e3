"""Summarizer end to end on a made-up corpus whose summary is a function of the text:
training, ROUGE beside Lead, decoding options, save/load, export, CLI and bad input."""

from __future__ import annotations

import json
import random
import re
import shutil

import keras
import keras_hub
import numpy as np
import pandas as pd
import pytest
import tensorflow as tf
from serving import ServingProcess, plain
from test_cli import assert_user_error, cli

from dltoolkit import Summarizer, load
from dltoolkit.core.callbacks import read_history
from dltoolkit.core.errors import DataError
from dltoolkit.data.text import read_pairs, tidy_spacing
from dltoolkit.models.pretrained_seq2seq import random_bart_preset
from dltoolkit.tasks.summarizer import EOS, PAD, detokenized, summary_ids

NAMES = ["anna", "boris", "clara", "david", "elena", "farid", "greta", "hugo", "irene", "jonas"]
VERBS = ["bought", "sold", "painted", "found", "lost", "repaired", "borrowed", "cooked"]
THINGS = [
    "a bicycle",
    "three apples",
    "an old clock",
    "a red car",
    "the blue lamp",
    "two books",
    "a guitar",
    "some bread",
]
PLACES = ["in the market", "at the station", "near the river", "in the garden", "at school"]
FILLER = [
    "the weather was cold that morning .",
    "many people were walking around .",
    "a dog barked somewhere .",
    "the shops opened early .",
    "it started to rain later .",
    "the radio played an old song .",
    "nobody expected anything special .",
    "the street was quiet .",
]
TINY = dict(
    d_model=64,
    layers=1,
    heads=2,
    ff_dim=128,
    vocabulary_size=300,
    max_source_length=64,
    max_target_length=16,
    batch_size=32,
    learning_rate=3e-3,
    dropout=0.0,
    seed=0,
)


def make_pairs(n: int, seed: int = 0) -> list[dict]:
    """Stories whose third sentence says who did what; the summary is that fact, shortened.
    Lead-3 contains it but also two sentences of filler."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        who, verb, what, where = (
            rng.choice(NAMES),
            rng.choice(VERBS),
            rng.choice(THINGS),
            rng.choice(PLACES),
        )
        filler = rng.sample(FILLER, 4)
        story = " ".join(filler[:2] + [f"yesterday {who} {verb} {what} {where} ."] + filler[2:])
        rows.append({"article": story, "highlights": f"{who} {verb} {what} ."})
    return rows


def words(text: str) -> set[str]:
    return set(re.findall(r"[a-z]+", text))


def write_jsonl(path, rows) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return str(path)


@pytest.fixture(scope="module")
def trained(fits):
    """10 epochs of TINY on 360 made-up pairs plus two empty ones (contract_cases.SUMMARIZE);
    the run is root / "run"."""
    return fits.get("summarize")


def test_fit_learns_the_task_and_reports_rouge_beside_lead(trained):
    model, root = trained
    out = root / "run"
    for name in (
        "recipe.toml",
        "model.keras",
        "state.json",
        "history.csv",
        "metrics.json",
        "report.html",
    ):
        assert (out / name).is_file(), name
    m = json.loads((out / "metrics.json").read_text())
    assert m["documents"] == 36 and m["decoding"] == "greedy"
    assert m["rougeL"] > 80 and m["rougeL"] > m["lead_rougeL"] + 30, m
    assert 3 < m["summary_mean_words"] < 7 and m["lead_mean_words"] > 15
    losses = [row["loss"] for row in read_history(out / "history.csv")]
    assert len(losses) == 10 and losses[-1] < 0.4 * losses[0]
    report = (out / "report.html").read_text()
    assert "Lead-3" in report and "Examples" in report and "truncated to the first tokens" in report
    assert "2 empty pairs skipped" in report


def test_predict_means_the_story_from_strings_or_files(trained, tmp_path):
    model, _ = trained
    new = make_pairs(6, seed=7)
    rows = model.predict(text=[r["article"] for r in new])
    assert [r["input"] for r in rows] == [f"text {i}" for i in range(1, 7)]
    recall = [
        len(words(r["summary"]) & words(p["highlights"])) / len(words(p["highlights"]))
        for r, p in zip(rows, new, strict=True)
    ]
    assert sum(recall) / len(recall) > 0.6, rows  # the key sentence, retold
    (tmp_path / "docs").mkdir()
    for i, r in enumerate(new[:2]):
        (tmp_path / "docs" / f"{i}.txt").write_text(r["article"], encoding="utf-8")
    from_files = model.predict([str(tmp_path / "docs")])
    assert [r["summary"] for r in from_files] == [r["summary"] for r in rows[:2]]


def test_decoding_strategies_and_length_limits(trained):
    model, _ = trained
    texts = [r["article"] for r in make_pairs(4, seed=9)]
    greedy = model.summarize(texts)
    assert model.summarize(texts, decoding="beam") == greedy  # a learned, peaked task
    sampled = model.summarize(texts, decoding="top-k")
    assert len(sampled) == 4 and all(isinstance(s, str) for s in sampled)
    try:
        model.set_params(max_length=2)
        assert all(len(s.split()) <= 2 for s in model.summarize(texts))
        model.set_params(max_length=None, min_length=9)
        assert all(len(s.split()) >= 6 for s in model.summarize(texts))
    finally:
        model.set_params(max_length=None, min_length=0)


def test_chunk_policy_summarises_a_long_document_piece_by_piece(trained):
    model, _ = trained
    stories = make_pairs(3, seed=21)
    long_document = " ".join(s["article"] for s in stories)  # about 100 tokens; the input takes 64
    try:
        model.set_params(long_documents="chunk")
        assert len(model._chunks(long_document)) == 2
        condensed = model._condensed([long_document], model._decoding())[0]
        assert len(condensed.split(".")) >= 3  # one summary per chunk, joined
        assert model.summarize([long_document])[0].split()[0] in NAMES
    finally:
        model.set_params(long_documents="truncate")


def _as_strings(summaries) -> list[str]:
    return [s.decode("utf-8").strip() for s in np.asarray(summaries)]


def test_model_keras_holds_the_tokenizer_and_decodes_as_predict(trained):
    model, root = trained
    texts = [r["article"] for r in make_pairs(4, seed=13)] + ["word " * 300]
    loaded = keras.saving.load_model(root / "run" / "model.keras")  # after `import dltoolkit`
    source = tf.function(loaded.source_ids)(tf.constant(texts))
    own = model._tokens(texts)[:, : model.config.max_source_length - 1]
    assert source.to_list() == [row + [EOS] for row in own.to_list()]
    greedy = model._decoding("greedy")
    ids = summary_ids(loaded, source.to_tensor(PAD), model._sampler(greedy), greedy.max_length)
    assert _as_strings(detokenized(loaded.tokenizer, ids)) == model.summarize(texts)


def test_export_gives_what_the_old_export_computed(trained, tmp_path):
    """dltoolkit 0.1's serving graph, by hand: a KerasHub WordPiece tokenizer made from
    state.json's vocabulary, the ids cut to the input and ended by EOS, the greedy loop, the
    same tokenizer back to text."""
    model, root = trained
    texts = [r["article"] for r in make_pairs(4, seed=17)] + ["word " * 300]
    vocabulary = json.loads((root / "run" / "state.json").read_text())["vocabulary"]
    old = keras_hub.tokenizers.WordPieceTokenizer(
        vocabulary=vocabulary,
        lowercase=True,
        oov_token="[UNK]",
        dtype="int32",
        _allow_python_workflow=False,
    )
    cut = model.config.max_source_length - 1
    rows = [t[:cut] + [EOS] for t in tf.function(old.tokenize)(tf.constant(texts)).to_list()]
    source = np.full((len(rows), max(map(len, rows))), PAD, np.int32)
    for i, row in enumerate(rows):
        source[i, : len(row)] = row
    greedy = model._decoding("greedy")
    ids = summary_ids(model.model_, source, model._sampler(greedy), greedy.max_length)
    ragged = tf.RaggedTensor.from_tensor(ids, padding=PAD)
    expected = _as_strings(tidy_spacing(tf.function(old.detokenize)(ragged)))
    served = tf.saved_model.load(str(model.export(tmp_path / "export")))
    summaries = served.signatures["serving_default"](text=tf.constant(texts))["summary"]
    assert _as_strings(summaries) == expected


def test_resume_keeps_the_vocabulary_its_run_was_trained_with(trained, tmp_path):
    _, root = trained
    out = tmp_path / "run"
    out.mkdir()
    for name in ("recipe.toml", "state.json"):  # a run killed during its first epoch
        shutil.copy(root / "run" / name, out / name)
    saved = json.loads((out / "state.json").read_text())["vocabulary"]
    pairs = [(r["article"] + " xylophone quartz", r["highlights"]) for r in make_pairs(40)]
    model = Summarizer(**{**TINY, "epochs": 1, "eval_samples": 4}).fit(
        pairs, out, resume=True, progress=False
    )
    assert model.vocabulary_ == saved and "xylophone" not in saved
    assert load(out).model_.tokenizer.get_vocabulary() == saved


def test_a_time_budget_keeps_its_snapshot_and_ends_the_cosine_decay_at_its_floor(tmp_path):
    pairs = [(r["article"], r["highlights"]) for r in make_pairs(64)]
    model = Summarizer(
        **{**TINY, "batch_size": 8, "eval_samples": 2, "epochs": 1000},
        schedule="cosine",
        warmup_epochs=0,
        train_minutes=0.25,
        snapshot_minutes=0.05,
    ).fit(pairs, tmp_path / "run", progress=False)
    rates = [row["learning_rate"] for row in read_history(tmp_path / "run" / "history.csv")]
    peak = TINY["learning_rate"]  # the decay is timed to the budget: near its floor at the end
    assert 3 < len(rates) < 1000 and rates[-1] < 0.5 * peak and rates[0] > 0.9 * peak, rates
    before = model.model_.get_weights()[0]
    assert not np.array_equal(model.load_snapshot(0.05).model_.get_weights()[0], before)


def test_folder_of_paired_files(tmp_path):
    stories = make_pairs(3)
    for i, story in enumerate(stories):
        (tmp_path / f"s{i}.txt").write_text(story["article"], encoding="utf-8")
        (tmp_path / f"s{i}.summary.txt").write_text(story["highlights"], encoding="utf-8")
    pairs = read_pairs(tmp_path)
    assert pairs.texts == [s["article"] for s in stories]
    assert pairs.summaries == [s["highlights"] for s in stories]
    (tmp_path / "extra.txt").write_text("a story without its summary", encoding="utf-8")
    with pytest.raises(DataError, match="1 documents have no summary"):
        read_pairs(tmp_path)


def test_cli_predict_and_evaluate(trained, tmp_path, capsys):
    _, root = trained
    stories = make_pairs(20, seed=5)
    code, out, err = cli(
        capsys,
        "predict",
        root / "run",
        "--text",
        stories[0]["article"],
        "--text",
        stories[1]["article"],
        "--json",
    )
    assert code == 0, err
    rows = json.loads(out)
    assert len(rows) == 2 and rows[0]["summary"].startswith(stories[0]["highlights"].split()[0])
    pd.DataFrame(stories).to_csv(tmp_path / "test.csv", index=False)  # the run's field names
    code, out, err = cli(
        capsys, "evaluate", root / "run", "--data", tmp_path / "test.csv", "--json"
    )
    assert code == 0, err
    metrics = json.loads(out)
    assert metrics["documents"] == 20 and metrics["rougeL"] > metrics["lead_rougeL"]


BAD = {
    "missing fields": ({"story": "a b c", "gist": "a"}, [], "fields found: story, gist"),
    "named field missing": (
        None,
        ["--text-field", "body"],
        "no text field 'body'; fields found: article, highlights",
    ),
    "empty under --strict": ("empty", ["--strict"], "1 empty document(s) or summary(ies)"),
    "preset neither name nor directory": (
        None,
        ["--preset", "./no_such_preset"],
        "not a KerasHub preset directory",
    ),
    "unknown preset name": (
        None,
        ["--preset", "bart_gigantic_xx"],
        "unknown preset 'bart_gigantic_xx'",
    ),
    "max below min": (
        None,
        ["--min-length", "10", "--max-length", "5"],
        "max_length 5 is below min_length 10",
    ),
    "non-UTF-8 file": ("latin1", [], "is not UTF-8"),
}


def test_summarize_without_data_says_what_to_pass(tmp_path, capsys):
    code, stdout, err = cli(capsys, "summarize", "--out", tmp_path / "run")
    assert_user_error(code, stdout, err, "summarize needs --data")
    assert not (tmp_path / "run").exists()


def test_unprepared_tfds_data_set_is_a_one_line_error(tmp_path, capsys):
    code, stdout, err = cli(
        capsys,
        "summarize",
        "--data",
        "tfds:no_such_corpus",
        "--tfds-data-dir",
        tmp_path,
        "--out",
        tmp_path / "run",
    )
    assert_user_error(code, stdout, err, "tfds:no_such_corpus (train split) is not prepared")
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("case", BAD)
def test_bad_input_is_one_line_exit_2_and_writes_nothing(case, tmp_path, capsys):
    content, options, fragment = BAD[case]
    rows = make_pairs(10)
    if isinstance(content, dict):
        rows = [content] * 10
    elif content == "empty":
        rows[3]["article"] = ""
    path = tmp_path / "pairs.jsonl"
    write_jsonl(path, rows)
    if content == "latin1":
        path = tmp_path / "pairs.csv"
        path.write_bytes("text,summary\ncaf\xe9 au lait,caf\xe9\n".encode("latin-1"))
    out = tmp_path / "run"
    code, stdout, err = cli(
        capsys, "summarize", "--data", path, "--epochs", 1, "--out", out, *options
    )
    assert_user_error(code, stdout, err, fragment)
    assert not out.exists()


def test_predict_rejects_empty_text_and_a_non_summarize_option(trained, capsys):
    _, root = trained
    code, out, err = cli(capsys, "predict", root / "run", "--text", "  ")
    assert_user_error(code, out, err, "empty document")
    code, out, err = cli(capsys, "predict", root / "run", "--text", "x", "--num", 3)
    assert_user_error(code, out, err, "--num do not apply to a summarize run")


@pytest.mark.slow  # the download is retried for about 20 s before it fails
def test_offline_preset_name_names_the_local_directory_option(tmp_path, capsys):
    out = tmp_path / "run"
    code, stdout, err = cli(
        capsys,
        "summarize",
        "--data",
        write_jsonl(tmp_path / "p.jsonl", make_pairs(10)),
        "--preset",
        "bart_base_en",
        "--epochs",
        1,
        "--out",
        out,
    )
    assert_user_error(code, stdout, err, "could not be downloaded", "--preset ./my_local_preset")
    assert not out.exists()


@pytest.mark.slow  # about 2 minutes on 2 shared cores: BART's training, generation and export graphs
def test_fine_tunes_a_tiny_random_bart_from_a_local_preset(tmp_path):
    rows = make_pairs(64, seed=3)
    preset = random_bart_preset(
        tmp_path / "preset",
        [r["article"] for r in rows],
        vocabulary_size=300,
        hidden_dim=16,
        layers=1,
        heads=2,
        max_length=64,
    )
    pairs = [(r["article"], r["highlights"]) for r in rows]
    model = Summarizer(
        preset=str(preset),
        epochs=3,
        batch_size=8,
        learning_rate=5e-3,
        max_source_length=48,
        max_target_length=12,
        eval_samples=6,
        val_split=0.1,
    )
    model.fit(pairs, out=tmp_path / "run", progress=False)
    losses = [row["loss"] for row in read_history(tmp_path / "run" / "history.csv")]
    assert losses[-1] < losses[0]
    assert {"rouge1", "rougeL", "lead_rougeL"} <= set(model.metrics_)
    texts = [r["article"] for r in make_pairs(3, seed=4)]
    summaries = [r["summary"] for r in model.predict(text=texts)]
    assert len(summaries) == 3 and all(isinstance(s, str) for s in summaries)
    assert load(tmp_path / "run").summarize(texts) == summaries
    server = ServingProcess(("tensorflow_text",))
    try:
        served = server.call(model.export(), {"text": np.array(texts, dtype=object)})
    finally:
        server.close()
    assert plain(served["summary"]).tolist() == summaries
