"""Splitting and joining data sets (ImageSet, MaskSet, BoxSet, Clips, LabelledTexts: anything
with `subset` and `len`)."""

from __future__ import annotations

import dataclasses

import numpy as np
from sklearn.model_selection import train_test_split

from dltoolkit.core.errors import ConfigError, DataError


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


def stratified_splits(
    items, labels, fractions: dict[str, float], seed: int, unit: str = "items"
) -> dict:
    """Carve stratified splits, e.g. {"val": 0.1, "test": 0.1}, out of `items` (anything with
    `subset` and `len`) by their class `labels`; the rest is train.

    Deterministic per seed. Zero fractions are left out. Classes too small for sklearn's
    stratification are split per class instead, keeping at least one item in train.
    """
    labels = np.asarray(labels)
    fractions = {name: float(f) for name, f in fractions.items() if f}
    if any(f < 0 for f in fractions.values()) or sum(fractions.values()) >= 1:
        raise ConfigError(
            f"split fractions {fractions} must be positive and sum to less than 1, "
            "e.g. val 0.1 and test 0.1"
        )
    rest, remaining, parts = np.arange(len(items)), 1.0, {}
    for name, frac in fractions.items():
        rest, parts[name] = _stratified_cut(rest, labels[rest], frac / remaining, seed)
        remaining -= frac
        if not len(parts[name]):
            raise DataError(
                f"{len(items)} {unit} are too few to carve out a {name} split; "
                f"add {unit} or give a separate {name} set"
            )
    return {name: items.subset(np.sort(idx)) for name, idx in {"train": rest, **parts}.items()}


def _stratified_cut(idx, labels, frac, seed) -> tuple[np.ndarray, np.ndarray]:
    """Split `idx` into (kept, cut) with about `frac` of each class in `cut`."""
    try:
        kept, cut = train_test_split(idx, test_size=frac, stratify=labels, random_state=seed)
    except ValueError:  # a class has too few members for sklearn
        rng = np.random.default_rng(seed)
        cut = []
        for label in np.unique(labels):
            members = rng.permutation(idx[labels == label])
            cut.extend(members[: min(len(members) - 1, max(1, round(frac * len(members))))])
        cut = np.asarray(cut, dtype=idx.dtype)
        kept = np.setdiff1d(idx, cut)
    return kept, cut
