"""Atomic file and directory writes: a crash never leaves a file that looks complete."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside `path`; move it into place only if the block succeeds.

    Works for files and directories (e.g. a SavedModel): whatever is written at the
    temporary path replaces `path` in one rename.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp_dir = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    tmp = tmp_dir / path.name
    try:
        yield tmp
        if not tmp.exists():
            raise FileNotFoundError(f"nothing was written to {tmp}")
        _replace(tmp, path)
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)


def _replace(src: Path, dst: Path) -> None:
    if src.is_dir() and dst.exists():
        old = dst.with_name(f".{dst.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(dst, old)
        os.replace(src, dst)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(src, dst)


def write_text(path: str | Path, text: str) -> None:
    """Write a text file atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_bytes(path: str | Path, data: bytes) -> None:
    """Write a binary file atomically."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_json(path: str | Path, obj) -> None:
    """Write `obj` as indented JSON, atomically."""
    write_text(path, json.dumps(obj, indent=2, default=_json_default) + "\n")


def output_stems(names: list[str], folder: str | Path | None) -> list[Path | None]:
    """One path stem in `folder` per input name, for the files written about it: the input's
    own stem, with `-2`, `-3`, ... for later inputs whose stem is taken (a.jpg and a.png,
    or two folders' a.jpg), so no input's files overwrite another's. None without a folder."""
    if folder is None:
        return [None] * len(names)
    taken: set[str] = set()
    stems = []
    for name in names:
        stem, n = Path(name).stem, 1
        while (stem if n == 1 else f"{stem}-{n}") in taken:
            n += 1
        stem = stem if n == 1 else f"{stem}-{n}"
        taken.add(stem)
        stems.append(Path(folder) / stem)
    return stems


def _json_default(obj):
    if hasattr(obj, "tolist"):  # numpy scalars and arrays
        return obj.tolist()
    raise TypeError(f"{type(obj).__name__} is not JSON serialisable")
