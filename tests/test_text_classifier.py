"""TextClassifier: learning the toy reviews, multi-label thresholds, long texts, evaluation by
column position, predict's error rows, masked-LM pretraining and the CLI's one-line errors."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from test_cli import assert_user_error, cli

from dltoolkit import TextClassifier, load
from dltoolkit.core.errors import ConfigError, DataError
from dltoolkit.data.labelled_text import read_labelled_texts
from dltoolkit.data.samples import toy_reviews

# Small enough to fit in seconds, big enough to learn the toy reviews' word pairs.
TINY = dict(
    d_model=32,
    layers=1,
    heads=2,
    ff_dim=64,
    vocabulary_size=200,
    max_length=24,
    epochs=12,
    batch_size=16,
    learning_rate=3e-3,
    report_tokens=3,
)

FAST_TEXT = dict(model="fasttext", ngram_buckets=2000, d_model=32, learning_rate=1e-2)


def write_reviews(path, count=600, seed=0, header=("review", "stars")):
    texts, labels = toy_reviews(count, seed)
    pd.DataFrame({header[0]: texts, header[1]: labels}).to_csv(path, index=False)
    return path


@pytest.fixture(scope="module")
def fitted(fits):
    """The session's fit of the contract case (the toy reviews, TINY Transformer)."""
    return fits.get("classify-text")


def test_fit_learns_the_toy_reviews_and_writes_its_run(fitted):
    recipe, folder = fitted
    m = recipe.metrics_
    assert m["split"] == "test" and m["accuracy"] > m["baseline_accuracy"] + 0.3, m
    assert set(m["per_class"]) == {"negative", "neutral", "positive"}
    assert np.array(m["confusion_matrix"]).sum() == m["samples"]
    run = folder / "run"
    report = (run / "report.html").read_text()
    assert "Most confident mistakes" in report and "Words that move each class most" in report
    assert json.loads((run / "metrics.json").read_text())["accuracy"] == m["accuracy"]


def test_predict_texts_and_files_with_an_error_row_for_a_bad_file(fitted, tmp_path):
    recipe, _ = fitted
    good = tmp_path / "review.txt"
    good.write_text("the plot was wonderful.")
    bad = tmp_path / "latin1.txt"
    bad.write_bytes("caf\xe9 was dreadful".encode("latin-1"))
    rows = recipe.predict([str(good), str(bad)], text=["the acting was not good."])
    assert [r["input"] for r in rows] == ["text 1", str(good), str(bad)]
    assert rows[0]["label"] in recipe.classes_ and "error" in rows[2]
    assert abs(sum(rows[0]["probabilities"].values()) - 1) < 1e-5
    assert rows[0]["score"] == max(rows[0]["probabilities"].values())
    with pytest.raises(DataError):
        recipe.predict([str(bad)], strict=True)


def test_evaluate_reads_a_file_with_another_header_by_position(fitted, tmp_path):
    recipe, _ = fitted
    texts, labels = toy_reviews(120, seed=7)
    other = tmp_path / "held_out.tsv"
    pd.DataFrame({"content": texts, "sentiment": labels}).to_csv(other, sep="\t", index=False)
    scores = recipe.evaluate(str(other))
    assert scores["samples"] == 120 and scores["accuracy"] > 0.6


def test_save_load_gives_the_same_probabilities(fitted, tmp_path):
    recipe, _ = fitted
    texts = ["the plot was charming but tedious.", "not bad at all"]
    again = load(recipe.save(tmp_path / "copy"), progress=False)
    np.testing.assert_allclose(again.predict_proba(texts), recipe.predict_proba(texts), atol=1e-6)


def test_fasttext_learns_and_class_weights_follow_imbalance(tmp_path):
    texts, labels = toy_reviews(400, seed=1)
    keep = [i for i, lab in enumerate(labels) if lab != "neutral" or i % 5 == 0]
    data = ([texts[i] for i in keep], [labels[i] for i in keep])
    recipe = TextClassifier(**FAST_TEXT, epochs=15, report_tokens=0, report_examples=0)
    recipe.fit(data, tmp_path / "run", progress=False)
    assert recipe.metrics_["accuracy"] > recipe.metrics_["baseline_accuracy"] + 0.2
    weights = recipe._class_weight(read_labelled_texts(data))
    assert weights is not None and weights[recipe.classes_.index("neutral")] > 1.5
    balanced = TextClassifier(model="fasttext")
    balanced.classes_ = ["a", "b"]
    even = read_labelled_texts((["x y", "y z", "z x", "x z"], ["a", "b", "a", "b"]))
    assert balanced._class_weight(even) is None


def test_multi_label_tunes_thresholds_and_exports_labels(tmp_path):
    rng = np.random.default_rng(0)
    topics = {"sport": "match goal team", "money": "bank price market", "food": "bread soup"}
    texts, tags = [], []
    for _ in range(300):
        chosen = [t for t in topics if rng.random() < 0.4] or ["food"]
        words = " ".join(rng.choice(topics[t].split()) for t in chosen for _ in range(2))
        texts.append(f"today {words} news")
        tags.append("|".join(chosen))
    data = tmp_path / "tickets.jsonl"
    with open(data, "w") as out:
        for text, tag in zip(texts, tags, strict=True):
            out.write(json.dumps({"text": text, "tags": tag.split("|")}) + "\n")
    recipe = TextClassifier(
        **FAST_TEXT, multi_label=True, label_field="tags", epochs=20, report_tokens=0
    )
    recipe.fit(str(data), tmp_path / "run", progress=False)
    assert recipe.metrics_["micro_f1"] > 0.9, recipe.metrics_
    assert len(recipe.thresholds_) == 3
    row = recipe.predict(text=["today goal bank news"])[0]
    assert set(row["labels"]) == {"sport", "money"}, row


def test_long_texts_are_chunked_and_pooled(fitted, tmp_path):
    recipe, _ = fitted
    long_text = " ".join(["the plot was dreadful."] * 40)
    chunked = load(recipe.save(tmp_path / "copy"), progress=False)
    chunked.set_params(long_texts="chunk")
    probabilities = chunked.predict_proba([long_text, "the plot was dreadful."])
    assert probabilities.shape == (2, 3)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1, atol=1e-5)


def test_masked_lm_pretraining_runs_inside_the_time_budget(tmp_path):
    texts, labels = toy_reviews(200, seed=2)
    recipe = TextClassifier(
        **{**TINY, "epochs": None, "report_tokens": 0}, pretrain_epochs=1, train_minutes=0.4
    )
    recipe.fit((texts, labels), tmp_path / "run", progress=False)
    assert recipe.metrics_["accuracy"] > 0.3
    with pytest.raises(ConfigError, match="pretrain_epochs"):
        TextClassifier(model="fasttext", pretrain_epochs=1).fit((texts, labels), tmp_path / "x")


def test_bad_data_is_a_one_line_error_through_the_cli(tmp_path, capsys):
    one_class = tmp_path / "one.csv"
    pd.DataFrame({"text": ["good", "fine", "great"], "label": ["pos"] * 3}).to_csv(
        one_class, index=False
    )
    no_column = write_reviews(tmp_path / "reviews.csv", count=30)
    for data, args, fragment in (
        (one_class, [], "class"),
        (no_column, ["--text-col", "body"], "body"),
        (tmp_path / "missing.csv", [], "missing.csv"),
    ):
        out = tmp_path / "cli"
        code, stdout, err = cli(capsys, "classify-text", "--data", data, *args, "--out", out)
        assert_user_error(code, stdout, err, fragment)
        assert not out.exists()
