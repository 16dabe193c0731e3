"""Batch prediction that survives bad records.

A recipe that predicts many inputs at once (image files, forecast files, table rows, texts,
observations) reads each on its own. One that cannot be read becomes an error row in its
place among the good rows, `{"input": name, "error": "<one-line reason>"}` (with the keys
that locate it, e.g. a "row"), and the good inputs are predicted as if it were absent.
With `strict=True` the first bad input raises a DataError naming it instead. When not one
input can be read there is nothing to predict, and that is a DataError as well.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TypeVar

from dltoolkit.core.errors import DataError

ERROR = "error"
T = TypeVar("T")


@dataclass(frozen=True)
class Bad:
    """An input that cannot be read: where it is (e.g. {"input": "a.jpg"}) and why."""

    where: dict
    reason: str

    def row(self) -> dict:
        return {**self.where, ERROR: self.reason}

    def error(self) -> DataError:
        """The DataError that stops a strict predict at this input."""
        return DataError(
            f"{_named(self)}; fix or remove it, or predict without --strict to skip it"
        )


def attempt(where: dict, read: Callable[..., T], *args) -> T | Bad:
    """`read(*args)`, or the Bad record at `where` when it raises a DataError."""
    try:
        return read(*args)
    except DataError as err:
        return Bad(where, one_line(err))


def assemble(results: Iterable[Bad | dict | list[Bad | dict]], *, strict: bool) -> list[dict]:
    """Every input's result rows (a row, a Bad, or a list of them) in input order, each Bad
    becoming its error row.

    With `strict` the first Bad raises its DataError. When every row is an error row
    (nothing could be read) that is a DataError too, naming the first.
    """
    rows = []
    for result in (r for item in results for r in (item if isinstance(item, list) else [item])):
        if isinstance(result, Bad):
            if strict:
                raise result.error()
            result = result.row()
        rows.append(result)
    bad = errors(rows)
    if rows and len(bad) == len(rows):
        first = Bad({k: v for k, v in bad[0].items() if k != ERROR}, bad[0][ERROR])
        if len(bad) == 1:
            raise DataError(_named(first))
        raise DataError(f"none of the {len(bad)} inputs can be read, e.g. {_named(first)}")
    return rows


def stop_if_strict(results: Iterable, *, strict: bool) -> None:
    """With `strict`, raise the first Bad among `results` now, before anything is predicted."""
    first = next((r for r in results if isinstance(r, Bad)), None) if strict else None
    if first is not None:
        raise first.error()


def errors(rows: list[dict]) -> list[dict]:
    """The error rows among prediction rows."""
    return [row for row in rows if ERROR in row]


def warning(rows: list[dict], shown: int = 3) -> str | None:
    """One line counting and naming the unreadable inputs (None when there are none)."""
    bad = errors(rows)
    if not bad:
        return None
    names = ", ".join(_location(row) for row in bad[:shown])
    more = f" and {len(bad) - shown} more" if len(bad) > shown else ""
    return (
        f"skipped {len(bad)} unreadable input(s): {names}{more} "
        f"(the reason is in their '{ERROR}' column; --strict stops at the first instead)"
    )


def one_line(reason) -> str:
    """The first line of an error message (or of any text)."""
    text = str(reason).strip()
    return (text.splitlines() or [type(reason).__name__])[0]


def _location(row: dict) -> str:
    """'a.csv' or 'a.csv row 3': a row's locating keys (the input's name bare)."""
    return " ".join(
        str(v) if k in ("input", "observation") else f"{k} {v}"
        for k, v in row.items()
        if k != ERROR
    )


def _named(bad: Bad) -> str:
    """The reason, prefixed with where the input is unless the reason names it already."""
    where = _location(bad.where)
    return bad.reason if where and where in bad.reason else f"{where}: {bad.reason}"
