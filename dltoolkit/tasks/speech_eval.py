"""Scoring transcripts: WER and CER by jiwer after one documented normalisation, exact-match
accuracy, error counts, a per-group breakdown, the constant-transcript baseline and the
worst clips for the report.

Normalisation (`normalize_transcript`), applied to references and hypotheses alike: Unicode
NFKC, lower case, every character that is not a letter, a digit or an apostrophe inside a
word becomes a space, runs of spaces collapse. "Hello, World!" and "hello world" match.
"""

from __future__ import annotations

import unicodedata
from collections import Counter

import numpy as np


def normalize_transcript(text: str) -> str:
    """`text` lower-cased, without punctuation, single-spaced (see the module docstring)."""
    text = unicodedata.normalize("NFKC", text).casefold()
    kept = [c if unicodedata.category(c)[0] in "LN" or c == "'" else " " for c in text]
    words = ("".join(kept)).split()
    return " ".join(w.strip("'") for w in words if w.strip("'"))


def _counts(references: list[str], hypotheses: list[str]) -> dict:
    import jiwer

    words = jiwer.process_words(references, hypotheses)
    chars = jiwer.process_characters(references, hypotheses)
    return {
        "wer": float(words.wer),
        "cer": float(chars.cer),
        "substitutions": int(words.substitutions),
        "deletions": int(words.deletions),
        "insertions": int(words.insertions),
        "words": int(sum(len(r.split()) for r in references)),
    }


def speech_metrics(
    references: list[str], hypotheses: list[str], groups: list[str] | None = None
) -> dict:
    """WER, CER (fractions), exact-match accuracy and word error counts of `hypotheses`
    against `references`, both normalised; with `groups`, the same per group ("per_group")."""
    refs = [normalize_transcript(r) for r in references]
    hyps = [normalize_transcript(h) for h in hypotheses]
    keep = [i for i, r in enumerate(refs) if r]  # jiwer refuses an empty reference
    refs, hyps = [refs[i] for i in keep], [hyps[i] for i in keep]
    metrics = {
        **_counts(refs, hyps),
        "exact_match": float(np.mean([r == h for r, h in zip(refs, hyps, strict=True)])),
        "clips": len(refs),
    }
    if groups is not None:
        by_group: dict[str, list[int]] = {}
        for position, i in enumerate(keep):
            by_group.setdefault(str(groups[i]), []).append(position)
        metrics["per_group"] = {
            name: {
                **_counts([refs[i] for i in members], [hyps[i] for i in members]),
                "exact_match": float(np.mean([refs[i] == hyps[i] for i in members])),
                "clips": len(members),
            }
            for name, members in sorted(by_group.items())
        }
    return metrics


def constant_baseline(train_texts: list[str], references: list[str]) -> dict:
    """WER, CER and exact match of always answering the most frequent training transcript."""
    common = Counter(normalize_transcript(t) for t in train_texts).most_common(1)[0][0]
    scores = speech_metrics(references, [common] * len(references))
    return {f"baseline_{k}": scores[k] for k in ("wer", "cer", "exact_match")}


def worst_clips(references: list[str], hypotheses: list[str], count: int) -> list[int]:
    """Indices of the `count` clips with the highest character error rate, worst first."""
    import jiwer

    rates = []
    for ref, hyp in zip(references, hypotheses, strict=True):
        ref, hyp = normalize_transcript(ref), normalize_transcript(hyp)
        rates.append(jiwer.cer(ref, hyp) if ref else float(bool(hyp)))
    return [int(i) for i in np.argsort(rates, kind="stable")[::-1][:count]]
