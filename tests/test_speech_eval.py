"""Transcript scoring: jiwer's WER/CER after the documented normalisation, per group."""

from __future__ import annotations

import pytest

from dltoolkit.tasks.speech_eval import (
    constant_baseline,
    normalize_transcript,
    speech_metrics,
    worst_clips,
)


def test_normalisation_drops_case_and_punctuation_but_keeps_apostrophes():
    assert (
        normalize_transcript("Hello, World!  It's 'quoted' - 3.5") == "hello world it's quoted 3 5"
    )
    assert normalize_transcript("...") == ""


def test_metrics_count_errors_overall_and_per_group():
    refs = ["One two.", "three", "four five six", "!!"]  # the last normalises to nothing
    hyps = ["one two", "tree", "four six", "seven"]
    m = speech_metrics(refs, hyps, groups=["a", "b", "a", "b"])
    assert m["clips"] == 3 and m["words"] == 6
    assert (m["substitutions"], m["deletions"], m["insertions"]) == (1, 1, 0)
    assert m["wer"] == pytest.approx(2 / 6) and m["exact_match"] == pytest.approx(1 / 3)
    assert m["per_group"]["a"]["wer"] == pytest.approx(1 / 5)
    assert m["per_group"]["b"] == pytest.approx(
        {**m["per_group"]["b"], "wer": 1.0, "exact_match": 0.0, "clips": 1}
    )
    assert 0 < m["cer"] < m["wer"]


def test_baseline_answers_the_commonest_training_transcript_and_worst_clips_come_first():
    assert constant_baseline(["one", "One!", "two"], ["one", "two"]) == pytest.approx(
        {"baseline_wer": 0.5, "baseline_cer": 0.5, "baseline_exact_match": 0.5}
    )
    assert worst_clips(["one two", "three", "four five six"], ["one two", "tree", "x"], 2) == [2, 1]
