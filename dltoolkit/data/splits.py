"""Splitting and joining data sets (ImageSet, MaskSet, BoxSet, Clips: any dataclass of
per-example arrays with `subset` and `len`)."""

from __future__ import annotations

import dataclasses

import numpy as np


def random_splits(train, fractions: dict[str, float], seed: int) -> dict:
    """Carve seeded random splits (by image) out of `train`; the rest stays train."""
    order = np.random.default_rng(seed).permutation(len(train))
    splits, start = {}, 0
    for name, fraction in fractions.items():
        count = min(round(fraction * len(train)), len(train) - start - 1)
        if count < 1:
            continue
        splits[name] = train.subset(np.sort(order[start : start + count]))
        start += count
    return {"train": train.subset(np.sort(order[start:])), **splits}


def concat_sets(sets: list):
    """One set of the same type holding every image of `sets`, in order."""
    if len(sets) == 1:
        return sets[0]

    def joined(name):
        parts = [getattr(s, name) for s in sets]
        return None if any(p is None for p in parts) else np.concatenate(parts)

    return type(sets[0])(**{f.name: joined(f.name) for f in dataclasses.fields(sets[0])})
