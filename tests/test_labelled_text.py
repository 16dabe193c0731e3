"""Labelled texts from every layout (files the tests write), their problems, and the
classify-text parameters."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from dltoolkit.core.config import make_config
from dltoolkit.core.errors import ConfigError, DataError
from dltoolkit.data.labelled_text import LabelledTexts, data_splits, read_labelled_texts
from dltoolkit.data.samples import SAMPLES, list_samples, toy_reviews
from dltoolkit.specs.classify_text import SPEC, TextClassifierConfig

REVIEWS = pd.DataFrame(
    {
        "id": [1, 2, 3, 4, 5, 6],
        "review": ["loved it", "great fun", "dull plot", "awful", "fine", "so good"],
        "stars": ["5", "5", "1", "1", "3", "5"],
    }
)


def write_table(frame: pd.DataFrame, path) -> None:
    suffix = path.suffix
    if suffix == ".csv":
        frame.to_csv(path, index=False)
    elif suffix == ".tsv":
        frame.to_csv(path, sep="\t", index=False)
    elif suffix == ".jsonl":
        frame.to_json(path, orient="records", lines=True)
    else:
        frame.to_parquet(path)


@pytest.mark.parametrize("suffix", [".csv", ".tsv", ".jsonl", ".parquet"])
def test_tables_by_name_default_name_and_position(tmp_path, suffix):
    path = tmp_path / f"reviews{suffix}"
    write_table(REVIEWS, path)
    named = read_labelled_texts(path, text_field="review", label_field="stars", rare_labels="keep")
    assert named.texts == list(REVIEWS["review"])
    assert named.labels == list(REVIEWS["stars"])
    assert (named.text_column, named.label_column, named.columns) == ("review", "stars", (1, 2))
    assert named.rare_labels == ["3"] and not named.problems
    by_default = read_labelled_texts(path, rare_labels="keep")  # review and stars are known names
    assert by_default.texts == named.texts and by_default.labels == named.labels
    for text_field, label_field in [(1, 2), ("#1", "#2"), ("1", "2")]:
        by_position = read_labelled_texts(
            path, text_field=text_field, label_field=label_field, rare_labels="keep"
        )
        assert by_position.labels == named.labels and by_position.text_column == "review"


def test_missing_or_bad_column_is_one_line_error(tmp_path):
    path = tmp_path / "reviews.csv"
    REVIEWS.rename(columns={"review": "words"}).to_csv(path, index=False)
    with pytest.raises(DataError, match="no text column .*columns: id, words, stars") as err:
        read_labelled_texts(path)
    assert "\n" not in str(err.value)
    with pytest.raises(DataError, match="no label column 'grade'"):
        read_labelled_texts(path, text_field="words", label_field="grade")
    with pytest.raises(DataError, match="no column at position 7"):
        read_labelled_texts(path, text_field=7)
    with pytest.raises(DataError, match="both column 'stars'"):
        read_labelled_texts(path, text_field="stars")


def test_evaluation_file_with_another_header_is_read_by_the_training_positions(tmp_path):
    """SST-2: train.tsv is `label sentence`, dev.tsv `label content`."""
    rows = [("0", "a dull , lifeless film ."), ("1", "a charming , witty ride ."), ("1", "fun")]
    (tmp_path / "train.tsv").write_text(
        "label\tsentence\n" + "".join(f"{lab}\t{text}\n" for lab, text in rows)
    )
    (tmp_path / "dev.tsv").write_text('label\tcontent\n0\tnot worth it " at all\n1\tjoyous\n')
    train = read_labelled_texts(tmp_path / "train.tsv", text_field="sentence", rare_labels="keep")
    assert train.columns == (1, 0) and train.labels == ["0", "1", "1"]
    with pytest.raises(DataError, match="no text column 'sentence'; columns: label, content"):
        read_labelled_texts(tmp_path / "dev.tsv", text_field="sentence", training=False)
    dev = read_labelled_texts(
        tmp_path / "dev.tsv", text_field="sentence", header_like=train, training=False
    )
    assert dev.texts == ['not worth it " at all', "joyous"] and dev.labels == ["0", "1"]
    assert dev.text_column == "content"
    by_tuple = read_labelled_texts(
        tmp_path / "dev.tsv", text_field="sentence", header_like=(1, 0), training=False
    )
    assert by_tuple.texts == dev.texts


def write_texts(folder, texts) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i, text in enumerate(texts):
        (folder / f"{i}.txt").write_text(text)


def test_folder_per_class(tmp_path):
    write_texts(tmp_path / "pos", ["great", "lovely"])
    write_texts(tmp_path / "neg", ["awful", "dull", "poor"])
    (tmp_path / "empty_class").mkdir()
    (tmp_path / "README.txt").write_text("not a class")
    texts = read_labelled_texts(tmp_path)
    assert texts.classes == ["neg", "pos"] and len(texts) == 5
    assert texts.labels.count("neg") == 3 and "great" in texts.texts
    assert texts.sources[0].endswith("0.txt") and data_splits(tmp_path) == []
    with pytest.raises(DataError, match="no test/ folder"):
        read_labelled_texts(tmp_path, split="test")


def test_aclimdb_layout_picks_the_split_and_skips_unsup(tmp_path):
    root = tmp_path / "aclImdb"
    write_texts(root / "train" / "pos", ["a fine film", "superb"])
    write_texts(root / "train" / "neg", ["bad", "boring"])
    write_texts(root / "train" / "unsup", ["no label here"])
    write_texts(root / "test" / "pos", ["wonderful"])
    write_texts(root / "test" / "neg", ["tedious"])
    (root / "train" / "urls_pos.txt").write_text("http://example.com\n")
    (root / "imdb.vocab").write_text("the\n")
    assert data_splits(root) == ["train", "test"]
    train = read_labelled_texts(root)
    assert train.classes == ["neg", "pos"] and len(train) == 4
    assert "no label here" not in train.texts
    test = read_labelled_texts(root, split="test", training=False)
    assert sorted(test.texts) == ["tedious", "wonderful"]
    with pytest.raises(DataError, match="no validation/ folder .*found: train, test"):
        read_labelled_texts(root, split="validation")


def test_multi_label_from_lists_and_from_delimited_strings(tmp_path):
    tickets = [
        {"text": "app crashes on login", "tags": ["bug", "auth"]},
        {"text": "add dark mode", "tags": ["feature"]},
        {"text": "password reset fails", "tags": ["bug", "auth", "bug"]},
        {"text": "thanks!", "tags": []},
        {"text": "faster sync please", "tags": ["feature"]},
    ]
    path = tmp_path / "tickets.jsonl"
    path.write_text("".join(json.dumps(t) + "\n" for t in tickets))
    listed = read_labelled_texts(path, multi_label=True, label_field="tags")
    assert listed.labels == [["bug", "auth"], ["feature"], ["bug", "auth"], [], ["feature"]]
    assert listed.classes == ["auth", "bug", "feature"] and listed.multi_label
    frame = pd.DataFrame(
        {
            "text": [t["text"] for t in tickets],
            "tags": ["bug|auth", "feature", "bug| auth", "", "feature"],
        }
    )
    frame.to_csv(tmp_path / "tickets.csv", index=False)
    piped = read_labelled_texts(tmp_path / "tickets.csv", multi_label=True)
    assert piped.labels == listed.labels
    frame.assign(tags=frame["tags"].str.replace("|", ";")).to_csv(
        tmp_path / "semi.csv", index=False
    )
    explicit = read_labelled_texts(tmp_path / "semi.csv", multi_label=True, label_delimiter=";")
    assert explicit.labels == listed.labels
    json_cells = frame.assign(tags=[json.dumps(t["tags"]) for t in tickets])
    json_cells.to_csv(tmp_path / "json_cells.csv", index=False)
    assert (
        read_labelled_texts(tmp_path / "json_cells.csv", multi_label=True).labels == listed.labels
    )
    with pytest.raises(DataError, match="a list of labels; pass --multi-label"):
        read_labelled_texts(path, label_field="tags")


def problem_table(tmp_path):
    """A CSV with an empty text, a missing label, a byte that is not UTF-8 and a rare label."""
    rows = (
        b"text,label\ngood,pos\nnice,pos\nbad,neg\nawful,neg\n,neg\nmeh,\ncaf\xe9,pos\nodd,weird\n"
    )
    path = tmp_path / "problems.csv"
    path.write_bytes(rows)
    return path


def test_problems_are_counted_not_fatal(tmp_path):
    dropped = read_labelled_texts(problem_table(tmp_path))
    assert dropped.texts == ["good", "nice", "bad", "awful"]
    reasons = [reason for _, reason in dropped.problems]
    assert reasons[0] == "empty text" and reasons[1] == "no label"
    assert reasons[2].startswith("not UTF-8 text")
    assert reasons[3] == "label 'weird' is seen only once: dropped"
    assert dropped.problems[2][0].endswith("problems.csv row 7") and dropped.rare_labels == [
        "weird"
    ]
    kept = read_labelled_texts(problem_table(tmp_path), rare_labels="keep")
    assert kept.texts[-1] == "odd" and len(kept.problems) == 3
    assert kept.rare_labels == ["weird"]
    (tmp_path / "texts" / "a").mkdir(parents=True)
    write_texts(tmp_path / "texts" / "b", ["fine", "also fine"])
    (tmp_path / "texts" / "a" / "bad.txt").write_bytes(b"\xff\xfe broken")
    (tmp_path / "texts" / "a" / "ok.txt").write_text("ok")
    (tmp_path / "texts" / "a" / "empty.txt").write_text("  \n")
    (tmp_path / "texts" / "a" / "more.txt").write_text("more")
    folder = read_labelled_texts(tmp_path / "texts")
    assert sorted(folder.texts) == ["also fine", "fine", "more", "ok"]
    assert sorted(r for _, r in folder.problems) == [
        "empty text",
        "not UTF-8 text (byte 0); re-encode it",
    ]
    ragged = tmp_path / "ragged.csv"
    ragged.write_text("text,label\na,x\nb,y,extra\nc,x\nd,y\ne,y\n")
    assert read_labelled_texts(ragged).problems == [
        (str(ragged), "a row of 3 cells ('b'...): skipped")
    ]
    with pytest.raises(DataError, match="ragged.csv: a row of 3 cells"):
        read_labelled_texts(ragged, strict=True)
    jsonl = tmp_path / "rows.jsonl"
    jsonl.write_text(
        '{"text": "a", "label": "x"}\n{"text": "b", "label": 1}\nnot json\n[1]\n'
        '{"text": "c", "label": "x"}\n{"text": "d", "label": 1.0}\n'
    )
    rows = read_labelled_texts(jsonl)
    assert rows.labels == ["x", "1", "x", "1"]
    assert [r for _, r in rows.problems] == [
        "not valid JSON (Expecting value)",
        "not a JSON object",
    ]


def test_strict_makes_each_problem_an_error(tmp_path):
    path = problem_table(tmp_path)
    with pytest.raises(DataError, match=r"problems.csv row 5: empty text; .*leave out --strict"):
        read_labelled_texts(path, strict=True)
    body = path.read_bytes().replace(b",neg\nmeh,\ncaf\xe9,pos\n", b"")
    path.write_bytes(body.replace(b"awful,neg\n", b"awful,neg\nmeh,\n"))
    with pytest.raises(DataError, match="row 5: no label"):
        read_labelled_texts(path, strict=True)
    path.write_bytes(body.replace(b"awful,neg\n", b"awful,neg\ncaf\xe9,pos\n"))
    with pytest.raises(DataError, match="row 5: not UTF-8"):
        read_labelled_texts(path, strict=True)
    path.write_bytes(body)
    with pytest.raises(DataError, match="label 'weird' is seen only once; .*--rare-labels keep"):
        read_labelled_texts(path, strict=True)
    assert read_labelled_texts(path, strict=True, rare_labels="keep").texts[-1] == "odd"


def test_single_class_or_no_usable_text_is_one_line_error(tmp_path):
    path = tmp_path / "one.csv"
    pd.DataFrame({"text": ["a", "b", "c"], "label": ["pos"] * 3}).to_csv(path, index=False)
    with pytest.raises(DataError, match="only the class 'pos' \\(label column 'label'\\)"):
        read_labelled_texts(path)
    assert len(read_labelled_texts(path, training=False)) == 3  # an evaluation file may
    with pytest.raises(
        DataError, match="no usable text among 2 record\\(s\\) \\(e.g. .*empty text"
    ):
        read_labelled_texts((["", " "], ["a", "b"]))
    with pytest.raises(DataError, match="only the class 'a'"):  # 'b' is dropped as rare
        read_labelled_texts((["x", "y", "z"], ["a", "a", "b"]))
    with pytest.raises(ConfigError, match="rare_labels 'maybe'"):
        read_labelled_texts(path, rare_labels="maybe")


def test_arrays_dataframes_samples_and_unknown_inputs():
    arrays = read_labelled_texts(([b"good", "bad", "fine", "ok"], [1, 0, 1, 0]))
    assert arrays.texts == ["good", "bad", "fine", "ok"] and arrays.labels == ["1", "0", "1", "0"]
    assert arrays.sources[1] == "array[1]"
    frame = read_labelled_texts(REVIEWS, rare_labels="keep")
    assert frame.text_column == "review" and len(frame) == 6
    assert read_labelled_texts(frame) is frame
    with pytest.raises(DataError, match="got 2 texts and 3"):
        read_labelled_texts((["a", "b"], ["x", "y", "z"]))
    with pytest.raises(DataError, match="holds table, not texts; .*toy-reviews"):
        read_labelled_texts("breast-cancer")
    with pytest.raises(DataError, match="'nowhere.csv' does not exist; pass a CSV"):
        read_labelled_texts("nowhere.csv")
    assert isinstance(read_labelled_texts("toy-reviews"), LabelledTexts)


def test_toy_reviews_need_word_pairs_and_are_listed():
    from sklearn.feature_extraction.text import CountVectorizer
    from sklearn.linear_model import LogisticRegression

    texts, labels = toy_reviews()
    assert (texts, labels) == toy_reviews() and len(texts) == 600
    assert set(labels) == {"positive", "negative", "neutral"}
    assert "toy-reviews" in dict(list_samples()) and SAMPLES["toy-reviews"].kind == "text"

    def accuracy(ngrams):  # trained on 400 reviews, scored on the other 200
        words = CountVectorizer(ngram_range=ngrams).fit(texts[:400])
        model = LogisticRegression(C=10, max_iter=300).fit(
            words.transform(texts[:400]), labels[:400]
        )
        return model.score(words.transform(texts[400:]), labels[400:])

    assert accuracy((1, 2)) > 0.95 and accuracy((1, 1)) < 0.85


def test_tfds_reads_a_prepared_local_dataset_and_never_downloads(tmp_path):
    import tensorflow as tf
    import tensorflow_datasets as tfds
    from tensorflow_datasets.core.dataset_builders.adhoc_builder import store_as_tfds_dataset

    with pytest.raises(DataError, match="not prepared in .*never downloaded"):
        read_labelled_texts("tfds:imdb_reviews", tfds_data_dir=str(tmp_path))
    features = tfds.features.FeaturesDict(
        {"text": tfds.features.Text(), "label": tfds.features.ClassLabel(names=["neg", "pos"])}
    )
    rows = {"text": ["good film", "bad film", "fine", "poor"], "label": [1, 0, 1, 0]}
    store_as_tfds_dataset(
        name="tiny_reviews",
        version="1.0.0",
        features=features,
        split_datasets={"train": tf.data.Dataset.from_tensor_slices(rows)},
        data_dir=str(tmp_path),
    )
    texts = read_labelled_texts("tfds:tiny_reviews", tfds_data_dir=str(tmp_path))
    named = dict(zip(rows["text"], ["pos", "neg", "pos", "neg"], strict=True))
    assert dict(zip(texts.texts, texts.labels, strict=True)) == named
    assert data_splits("tfds:tiny_reviews", str(tmp_path)) == ["train"]
    with pytest.raises(DataError, match="no split 'test'"):
        read_labelled_texts("tfds:tiny_reviews", tfds_data_dir=str(tmp_path), split="test")


def test_spec_parameters_and_cli_spellings():
    import typer

    from dltoolkit.cli.train import train_command

    config = make_config(TextClassifierConfig, {"text_field": 1, "label_field": "stars"})
    assert (config.model, config.long_texts, config.pretrain_epochs) == ("auto", "head+tail", 0)
    for bad in ({"model": "bert"}, {"pooling": "max"}, {"mask_rate": 1.5}, {"max_length": 2}):
        with pytest.raises(ConfigError):
            make_config(TextClassifierConfig, bad)
    assert SPEC.task == "classify-text" and SPEC.default_data == "toy-reviews"
    assert [o.name for o in SPEC.predict_options] == ["text", "strict"]
    app = typer.Typer()
    app.command()(train_command(SPEC))
    flags = {flag for option in typer.main.get_command(app).params for flag in option.opts}
    for flag in ("--text-col", "--label-field", "--multi-label", "--long-texts", "--preset"):
        assert flag in flags
