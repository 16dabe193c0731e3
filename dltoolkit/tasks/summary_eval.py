"""Scoring summaries: ROUGE-1/2/L F-measure (rouge-score, with stemming), length statistics,
the extractive Lead baseline, and side-by-side examples for the report."""

from __future__ import annotations

import re

import numpy as np

ROUGE_TYPES = ("rouge1", "rouge2", "rougeL")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+|\n+")


def lead(text: str, sentences: int) -> str:
    """The first `sentences` sentences (or lines: dialogue turns) of `text`."""
    parts = [p.strip() for p in _SENTENCE_END.split(text.strip()) if p.strip()]
    return " ".join(parts[:sentences])


def rouge(references: list[str], candidates: list[str]) -> dict:
    """Mean ROUGE-1/2/L F-measure (in percent) of `candidates` against `references`."""
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(list(ROUGE_TYPES), use_stemmer=True)
    scores = [scorer.score(r, c) for r, c in zip(references, candidates, strict=True)]
    return {kind: float(100 * np.mean([s[kind].fmeasure for s in scores])) for kind in ROUGE_TYPES}


def length_stats(texts: list[str]) -> dict:
    """Mean and median length in words."""
    words = np.array([len(t.split()) for t in texts], dtype=np.float64)
    return {"mean_words": float(words.mean()), "median_words": float(np.median(words))}


def summary_metrics(
    documents: list[str], references: list[str], summaries: list[str], lead_sentences: int
) -> dict:
    """ROUGE of the model and of Lead-`lead_sentences` on the same documents, and lengths."""
    leads = [lead(d, lead_sentences) for d in documents]
    model, baseline = rouge(references, summaries), rouge(references, leads)
    metrics = {**model, **{f"lead_{k}": v for k, v in baseline.items()}}
    metrics["rougeL_minus_lead"] = model["rougeL"] - baseline["rougeL"]
    metrics["documents"] = len(documents)
    for name, texts in (("summary", summaries), ("reference", references), ("lead", leads)):
        metrics.update({f"{name}_{k}": v for k, v in length_stats(texts).items()})
    return metrics


def example_rows(
    documents, references, summaries, lead_sentences: int, count: int, excerpt_chars=300
) -> list[dict]:
    """A few documents side by side: source excerpt, reference, model summary and Lead."""
    rows = []
    for document, reference, summary in list(zip(documents, references, summaries, strict=True))[
        :count
    ]:
        excerpt = document[:excerpt_chars] + ("..." if len(document) > excerpt_chars else "")
        rows.append(
            {
                "source (excerpt)": excerpt,
                "reference": reference,
                "model": summary,
                "lead": lead(document, lead_sentences),
            }
        )
    return rows
