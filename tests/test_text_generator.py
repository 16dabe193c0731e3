"""TextGenerator: learning the counting songs, sampling (seeds, greedy, stop strings, long
generations), supervised fine-tuning of a run on prompt/response pairs, DPO alignment into a
new run, and the CLI's one-line errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
from test_cli import assert_user_error, cli

from dltoolkit import TextGenerator, load
from dltoolkit.core.callbacks import read_history
from dltoolkit.core.config import read_recipe_file
from dltoolkit.core.errors import ConfigError, DataError
from dltoolkit.data.samples import counting_songs
from dltoolkit.specs.generate_text import alignment_params

# Small enough to fit in seconds, big enough to learn the songs' verses.
TINY = dict(
    context=48,
    d_model=64,
    layers=2,
    heads=4,
    ff_dim=128,
    epochs=5,
    eval_every=100,
    batch_size=16,
    learning_rate=3e-3,
    warmup_epochs=0.2,
    max_new_tokens=40,
    report_samples=2,
)
SUBJECTS = ("green bottle", "little duck", "speckled frog")


def write_songs(path, count=40, seed=0):
    """Counting songs as JSON lines, with one malformed line (reported, skipped)."""
    lines = [json.dumps({"text": song}) for song in counting_songs(count, seed)]
    lines.insert(3, "{not json")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def countdowns(count, seed=0):
    """Prompt/response pairs: 'count down from five:' -> ' five four three two one.'"""
    words = ("one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
    rng = np.random.default_rng(seed)
    rows = []
    for _ in range(count):
        n = int(rng.integers(2, 10))
        rows.append(
            {
                "prompt": f"count down from {words[n - 1]}:",
                "response": " " + " ".join(words[k - 1] for k in range(n, 0, -1)) + ".",
            }
        )
    return rows


@pytest.fixture(scope="module")
def fitted(fits):
    """The session's fit of the contract case (40 counting songs, TINY GPT)."""
    return fits.get("generate-text")


def test_fit_learns_the_songs_and_writes_its_run(fitted):
    recipe, folder = fitted
    m = recipe.metrics_
    assert m["loss"] < m["baseline_loss"] - 1.0, m  # far below the unigram model
    assert m["bits_per_char"] < 0.6 * m["baseline_bits_per_char"], m
    history = read_history(folder / "run" / "history.csv")
    assert history[-1]["loss"] < 0.5 * history[0]["loss"]
    # 500 steps: compiled by XLA, 25 at a call, and every epoch exactly eval_every steps
    assert recipe.model_.jit_compile and recipe.model_.steps_per_execution == 25
    assert int(recipe.model_.optimizer.iterations) == len(history) * TINY["eval_every"]
    report = (folder / "run" / "report.html").read_text()
    assert "Samples" in report and "unigram baseline" in report
    assert "songs.jsonl:4: not valid JSON" in report  # the malformed line, by its number


def test_sampling_is_seeded_greedy_is_fixed_and_stops_cut(fitted):
    recipe, _ = fitted
    prompt = ["Five green bottles hanging on the wall,\nfive green bottles hanging on the wall,\n"]
    same = recipe.generate(prompt, temperature=1.0, seed=3)
    assert same == recipe.generate(prompt, temperature=1.0, seed=3)
    assert {recipe.generate(prompt, temperature=1.0, seed=s)[0] for s in range(4)} != set(same)
    greedy = recipe.generate(prompt, temperature=0.0, seed=1)
    assert greedy == recipe.generate(prompt, temperature=0.0, seed=2)
    assert greedy[0].startswith("and if one green bottle should"), greedy
    assert len(recipe.generate(prompt, max_new_tokens=7)[0]) <= 7  # characters: one a token
    long = recipe.generate(["Three"], max_new_tokens=3 * TINY["context"], temperature=0.0)
    assert len(long[0]) > 2 * TINY["context"]  # the window slides past the context
    recipe.set_params(stop=",")
    recipe._generate_fn = None
    assert "," not in recipe.generate(prompt, temperature=0.0)[0]
    recipe.set_params(stop=None)
    recipe._generate_fn = None


def test_predict_rows_for_texts_and_files_with_an_error_row(fitted, tmp_path):
    recipe, _ = fitted
    good = tmp_path / "prompt.txt"
    good.write_text("Two little ducks", encoding="utf-8")
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"\xff\xfe\x00bad")
    rows = recipe.predict([str(good), str(bad)], text="Four", seed=1, max_new_tokens=12)
    assert rows[0]["prompt"] == "Four" and len(rows[0]["text"]) <= 12
    assert rows[1]["input"] == str(good) and rows[1]["prompt"] == "Two little ducks"
    assert "error" in rows[2]
    with pytest.raises(DataError, match="bad.txt"):
        recipe.predict([str(bad)], strict=True)


def test_fine_tunes_a_run_on_pairs_then_aligns_it_by_dpo(fitted, tmp_path):
    recipe, folder = fitted
    pairs = write_jsonl(tmp_path / "pairs.jsonl", countdowns(200))
    sft = TextGenerator(
        **{**TINY, "epochs": 3, "eval_every": 40},
        preset=str(folder / "run"),
        prompt_field="prompt",
        response_field="response",
    ).fit(str(pairs), out=tmp_path / "sft", progress=False)
    assert read_recipe_file(tmp_path / "sft" / "recipe.toml")["params"]["preset"] == str(
        folder / "run"
    )
    assert sft.metrics_["loss"] < 0.5 * sft.metrics_["baseline_loss"], sft.metrics_
    answer = sft.generate(["count down from four:"], temperature=0.0)[0]
    assert answer.startswith(" four three two one"), answer
    # Preferences: the chosen counts down, the rejected counts up.
    rows = [
        {
            "prompt": r["prompt"],
            "chosen": r["response"],
            "rejected": " " + " ".join(reversed(r["response"].strip(" .").split())) + ".",
        }
        for r in countdowns(120, seed=5)
        if len(r["response"].split()) > 1
    ]
    preferences = write_jsonl(tmp_path / "prefs.jsonl", rows)
    aligned = sft.align(
        str(preferences), tmp_path / "dpo", progress=False, eval_every=20, sft_weight=0.5
    )
    m = aligned.metrics_
    assert m["preference_accuracy"] >= m["reference_accuracy"] and m["reward_margin"] > 0, m
    params = read_recipe_file(tmp_path / "dpo" / "recipe.toml")["params"]
    assert params["preset"] == str(tmp_path / "sft") and params["sft_weight"] == 0.5
    assert load(tmp_path / "dpo").generate(["count down from three:"], temperature=0.0)


def test_alignment_keeps_the_parents_model_but_not_its_length_of_training():
    parent = {**TINY, "train_minutes": 5.0, "prompt_field": "prompt", "response_field": "r"}
    child = alignment_params(parent, "runs/sft")
    assert child["objective"] == "dpo" and child["preset"] == "runs/sft"
    assert child["epochs"] is None and child["train_minutes"] is None  # DPO's own length
    assert child["prompt_field"] is None and child["d_model"] == TINY["d_model"]


def test_bad_parameters_and_data_are_one_line_errors(fitted, tmp_path, capsys):
    _, folder = fitted
    with pytest.raises(ConfigError, match="response-field"):
        TextGenerator(prompt_field="prompt").fit("x.jsonl", out=tmp_path / "a", progress=False)
    with pytest.raises(ConfigError, match="divisible"):
        TextGenerator(d_model=30, heads=4).fit(out=tmp_path / "b", progress=False)
    empty = tmp_path / "empty.txt"
    empty.write_text("   \n", encoding="utf-8")
    assert_user_error(*cli(capsys, "generate-text", "--data", empty, "--out", tmp_path / "c"))
    assert not (tmp_path / "c").exists()
    code, _, err = cli(capsys, "align", folder / "run")
    assert code == 2 and "--preferences" in err  # Typer's usage error
    not_text = tmp_path / "prefs.jsonl"
    write_jsonl(not_text, [{"prompt": "a", "chosen": "b", "rejected": "b"}])
    assert_user_error(*cli(capsys, "align", folder / "run", "--preferences", not_text))


@pytest.mark.slow  # BPE graphs trace slowly: about 4 minutes on 2 busy cores
def test_a_byte_level_bpe_run_learns_generates_and_reloads(tmp_path):
    songs = counting_songs(20, seed=3)  # a list of strings is data too
    recipe = TextGenerator(
        **{**TINY, "epochs": 2, "eval_every": 40}, tokens="bytes-bpe", vocabulary_size=300
    ).fit(songs, out=tmp_path / "bpe", progress=False)
    assert len(recipe.vocabulary_) <= 300 and recipe.merges_
    m = recipe.metrics_
    assert m["bits_per_char"] < m["baseline_bits_per_char"] and m["tokens"] < m["characters"]
    prompt = ["Three speckled frogs sitting on a log,\n"]
    text = recipe.generate(prompt, temperature=0.0, max_new_tokens=8)
    assert (
        text[0]
        and load(tmp_path / "bpe").generate(prompt, temperature=0.0, max_new_tokens=8) == text
    )


@pytest.mark.slow  # BPE graphs trace slowly
def test_fine_tunes_a_kerashub_preset_from_a_local_directory(tmp_path):
    from dltoolkit.models.hub_causal_lm import random_causal_lm_preset

    songs = counting_songs(12, seed=4)
    preset = random_causal_lm_preset(tmp_path / "preset", songs, vocabulary_size=300)
    lm = TextGenerator(
        preset=str(preset),
        context=32,
        epochs=2,
        eval_every=30,
        batch_size=8,
        learning_rate=3e-3,
        max_new_tokens=8,
        report_samples=1,
    ).fit(songs, out=tmp_path / "run", progress=False)
    assert lm.metrics_["loss"] < np.log(300) - 1.0, lm.metrics_  # a random model: ln V
    assert "KerasHub preset" in (tmp_path / "run" / "report.html").read_text()
    prompt = ["Two little ducks"]
    text = lm.generate(prompt, temperature=0.0)
    assert load(tmp_path / "run").generate(prompt, temperature=0.0) == text
