"""Text for language models: documents to pretrain on, prompt/response pairs for supervised
fine-tuning, preference pairs for DPO, and their packing into fixed-length id arrays.

Sources: a .txt/.md file, a folder of them (recursive, sorted), a JSONL file (gzipped too),
Python lists, or the built-in corpus sample. A JSONL line that cannot be used (bad JSON, a missing or non-string field,
a preference pair that cannot be split) is left out and listed in `problems` as
"file:line: what"; with `strict=True` the first one is a DataError instead.

Id arrays share one layout: ids (N, T + 1) int32 and a loss mask (N, T) float32, the model
reading ids[:, :-1] and predicting ids[:, 1:] where the mask is 1.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from dltoolkit.core.errors import ConfigError, DataError
from dltoolkit.core.records import Bad, attempt
from dltoolkit.data.samples import SAMPLES, load_sample
from dltoolkit.data.text import json_lines, read_utf8, split_indices

END_OF_TEXT = "<|endoftext|>"
TEXT_SUFFIXES = (".txt", ".md")
JSONL_SUFFIXES = (".jsonl", ".json", ".jsonl.gz", ".json.gz")
ASSISTANT = "\n\nAssistant:"  # the turn marker of HH-RLHF dialogues
KINDS = ("corpus", "pairs", "preferences")
LAYOUTS = (
    "pass a .txt/.md file, a folder of them, a JSONL file, a list of strings or a built-in "
    "corpus sample (counting-songs)"
)


@dataclass
class Records:
    """What a language model learns from: documents (kind "corpus"), (prompt, response)
    pairs ("pairs") or (prompt, chosen, rejected) triples ("preferences"), with the problems
    met reading them ("file:line: what") and a description of the source."""

    items: list
    kind: str
    description: str
    problems: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.items)

    def __iter__(self):
        return iter(self.items)

    def __getitem__(self, index):
        return self.items[index]


def read_records(
    data,
    kind: str,
    *,
    text_field: str | None = None,
    prompt_field: str | None = None,
    response_field: str | None = None,
    strict: bool = False,
) -> Records:
    """The records of `kind` ("corpus", "pairs" or "preferences") in `data`; see
    `read_corpus`, `read_dialogues` and `read_preferences`."""
    if isinstance(data, Records):
        return data
    if kind == "corpus":
        return read_corpus(data, text_field or "text", strict=strict)
    if kind == "pairs":
        return read_dialogues(
            data, prompt_field or "prompt", response_field or "response", strict=strict
        )
    if kind == "preferences":
        return read_preferences(data, strict=strict)
    raise ConfigError(f"unknown kind of text data {kind!r}; use one of {', '.join(KINDS)}")


def split_records(records: Records, val_fraction: float, seed: int = 0):
    """(train items, validation items, a line describing the split). A corpus is split by
    `split_documents`; pairs and triples by record, shuffled by `seed`."""
    if records.kind == "corpus":
        train, val = split_documents(records.items, val_fraction, seed)
        if len(records) == 1:
            how = f"one document: its first {1 - val_fraction:.0%} trains, the rest validates"
            return train, val, f"{records.description} ({how})"
    else:
        picked = split_indices(len(records), val_fraction, seed)
        train, val = ([records.items[i] for i in part] for part in picked)
    unit = {"corpus": "documents", "pairs": "pairs", "preferences": "preference pairs"}
    count = f"{len(train)} train / {len(val)} validation {unit[records.kind]}"
    return train, val, f"{records.description} ({count})"


def record_texts(items: list, kind: str) -> list[str]:
    """Every string of `kind` records (documents, or each field of pairs and triples)."""
    return list(items) if kind == "corpus" else [text for item in items for text in item]


def sample_prompts(items: list, kind: str, count: int) -> list[str]:
    """`count` prompts from records, for samples in a report: evenly spaced non-blank lines
    of the documents, or the prompts of pairs and triples."""
    if kind != "corpus":
        prompts = [item[0] for item in items]
    else:
        prompts = [line for doc in items for line in doc.splitlines() if line.strip()]
    if not prompts or count < 1:
        return []
    picked = np.linspace(0, len(prompts) - 1, min(count, len(prompts))).round().astype(int)
    return [prompts[i] for i in picked]


def read_corpus(data, text_field: str = "text", *, strict: bool = False) -> Records:
    """Documents from a text file, a folder of .txt/.md files, a JSONL file whose
    `text_field` holds each document, a list of strings, or a built-in corpus sample
    (counting-songs). Blank documents are problems."""
    description = _describe(data)
    if _is_sample(data):
        description = f"sample {data}: {SAMPLES[data].description}"
        data = load_sample(data)
    corpus = Records([], "corpus", description)
    for where, text in _texts(data, text_field):
        if isinstance(text, Bad):
            _report(corpus.problems, where, text.reason, strict)
        elif not text.strip():
            _report(corpus.problems, where, "empty document", strict)
        else:
            corpus.items.append(text)
    if not corpus.items:
        raise DataError(f"{corpus.description}: no usable text{_first(corpus.problems)}; {LAYOUTS}")
    return corpus


def read_dialogues(
    data, prompt_field: str = "prompt", response_field: str = "response", *, strict: bool = False
) -> Records:
    """(prompt, response) pairs for supervised fine-tuning from a JSONL file, or a list of
    pairs or dicts. A missing or non-string field is a problem; an empty prompt is allowed."""
    records = Records([], "pairs", _describe(data))
    for where, row in _rows(data, (prompt_field, response_field)):
        pair = _fields(row, (prompt_field, response_field))
        if isinstance(pair, str):
            _report(records.problems, where, pair, strict)
        elif not "".join(pair).strip():
            _report(records.problems, where, "empty prompt and response", strict)
        else:
            records.items.append(pair)
    return _nonempty(records, f"'{prompt_field}' and '{response_field}' fields")


def read_preferences(data, *, strict: bool = False) -> Records:
    """(prompt, chosen, rejected) triples from a JSONL file or a list of dicts/triples: rows
    with "prompt", "chosen" and "rejected", or HH-RLHF rows whose "chosen" and "rejected"
    are whole dialogues sharing a prefix (see `split_dialogues`). A pair whose responses are
    equal, or that cannot be split, is a problem."""
    records = Records([], "preferences", _describe(data))
    for where, row in _rows(data, ("prompt", "chosen", "rejected")):
        triple = _preference(row)
        if isinstance(triple, str):
            _report(records.problems, where, triple, strict)
        else:
            records.items.append(triple)
    return _nonempty(records, "'chosen' and 'rejected' fields (and 'prompt', or dialogues)")


def split_dialogues(chosen: str, rejected: str) -> tuple[str, str, str] | None:
    """(prompt, chosen response, rejected response) of two dialogues that share a prefix,
    split after the last "\\n\\nAssistant:" marker inside their common prefix; None if the
    common prefix holds no such marker."""
    shared = os.path.commonprefix([chosen, rejected])
    at = shared.rfind(ASSISTANT)
    if at < 0:
        return None
    cut = at + len(ASSISTANT)
    return chosen[:cut], chosen[cut:], rejected[cut:]


def split_documents(documents, val_fraction: float, seed: int = 0):
    """(train, validation) lists of documents. One document is cut by characters: the first
    (1 - val_fraction) of it trains, the rest validates (nanoGPT's split of tinyshakespeare).
    Several are split by document, shuffled by `seed`."""
    documents = list(documents)
    if len(documents) == 1:
        text = documents[0]
        cut = int(len(text) * (1 - val_fraction))
        return [text[:cut]], ([text[cut:]] if cut < len(text) else [])
    train, val = split_indices(len(documents), val_fraction, seed)
    return [documents[i] for i in train], [documents[i] for i in val]


def sft_examples(pairs_ids, context: int, end_id: int, pad_id: int, start_id: int | None = None):
    """(ids (N, context + 1) int32, loss mask (N, context) float32) for supervised
    fine-tuning: prompt + response + end, padded with `pad_id`; the mask covers the response
    and end tokens only. The prompt is opened by the end token, as a document is in
    training and a prompt in generation (the token before it closed the one before), and is
    cut from the left so that the response fits; a response longer than the context is cut
    (and loses its end). `start_id`, when the vocabulary has one, opens the prompt instead."""
    rows = [_example(p, r, context, end_id, pad_id, start_id=start_id) for p, r in pairs_ids]
    return _stack(rows, context)


def preference_examples(
    triples_ids, context: int, end_id: int, pad_id: int, start_id: int | None = None
):
    """(chosen ids, chosen mask, rejected ids, rejected mask) for DPO, each in the layout of
    `sft_examples`; both sides of a pair keep the same (left-cut) prompt."""
    chosen, rejected = [], []
    for prompt, good, bad in triples_ids:
        longest = max(_response_length(good, context), _response_length(bad, context))
        chosen.append(_example(prompt, good, context, end_id, pad_id, longest, start_id))
        rejected.append(_example(prompt, bad, context, end_id, pad_id, longest, start_id))
    return (*_stack(chosen, context), *_stack(rejected, context))


# -- reading --------------------------------------------------------------------------------


def _describe(data) -> str:
    if isinstance(data, list | tuple):
        return f"{len(data)} records"
    return str(data)


def _is_sample(data) -> bool:
    """Whether `data` names a built-in corpus sample (and no file or folder)."""
    if not isinstance(data, str) or data not in SAMPLES or Path(data).exists():
        return False
    if SAMPLES[data].kind != "corpus":
        raise DataError(f"sample {data!r} is not a corpus ({SAMPLES[data].kind}); {LAYOUTS}")
    return True


def _is_jsonl(path: Path) -> bool:
    return path.name.lower().endswith(JSONL_SUFFIXES)


def _texts(data, text_field: str):
    """(where, text or Bad) for every document of `data`."""
    if isinstance(data, list | tuple):
        for i, item in enumerate(data):
            text = item if isinstance(item, str) else Bad({}, "not a string")
            yield f"[{i}]", text
        return
    path = Path(data)
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.suffix.lower() in TEXT_SUFFIXES)
        if not files:
            raise DataError(f"folder '{path}' has no .txt or .md files; {LAYOUTS}")
        for file in files:
            yield str(file), attempt({"input": str(file)}, read_utf8, file)
    elif _is_jsonl(path):
        for where, row in _rows(path, (text_field,)):
            text = _fields(row, (text_field,))
            yield where, Bad({}, text) if isinstance(text, str) else text[0]
    elif path.is_file():
        yield str(path), read_utf8(path)
    else:
        raise DataError(f"'{path}' does not exist; {LAYOUTS}")


def _rows(data, names: tuple[str, ...]):
    """(where, dict or problem string) for each record of a JSONL file or a list of dicts or
    tuples (a tuple's items are named by `names`)."""
    if isinstance(data, list | tuple):
        for i, item in enumerate(data):
            row = dict(zip(names, item, strict=False)) if isinstance(item, list | tuple) else item
            yield f"[{i}]", row if isinstance(row, dict) else "not a record"
        return
    path = Path(data)
    if not path.is_file() or not _is_jsonl(path):
        raise DataError(f"'{path}' is not a JSONL file; pass one, one JSON object per line")
    rows, bad = json_lines(read_utf8(path))
    found = [(n, row) for n, row in rows] + [(n, reason) for n, reason in bad]
    for number, row in sorted(found, key=lambda item: item[0]):
        yield f"{path}:{number}", row


def _fields(row, names: tuple[str, ...]) -> tuple[str, ...] | str:
    """The string values of `names` in `row`, or the reason they cannot be had."""
    if isinstance(row, str):
        return row
    missing = [name for name in names if name not in row]
    if missing:
        return f"no '{missing[0]}' field (fields: {', '.join(map(str, row)) or 'none'})"
    wrong = next((name for name in names if not isinstance(row[name], str)), None)
    if wrong is not None:
        return f"'{wrong}' is {type(row[wrong]).__name__}, not a string"
    return tuple(row[name] for name in names)


def _preference(row) -> tuple[str, str, str] | str:
    """(prompt, chosen, rejected) of one record, or the reason it cannot be used."""
    with_prompt = not isinstance(row, str) and "prompt" in row
    triple = _fields(
        row, ("prompt", "chosen", "rejected") if with_prompt else ("chosen", "rejected")
    )
    if isinstance(triple, str):
        return triple
    if not with_prompt:
        triple = split_dialogues(*triple)
        if triple is None:
            return f"chosen and rejected share no {ASSISTANT.strip()!r} turn to split at"
    if triple[1] == triple[2]:
        return "chosen and rejected are the same"
    return triple


def _report(problems: list[str], where: str, reason: str, strict: bool) -> None:
    if strict:
        raise DataError(f"{where}: {reason}; fix or remove it, or leave out --strict to skip it")
    problems.append(f"{where}: {reason}")


def _first(problems: list[str]) -> str:
    return f" ({len(problems)} problem(s), e.g. {problems[0]})" if problems else ""


def _nonempty(records: Records, needed: str) -> Records:
    if not records.items:
        raise DataError(
            f"{records.description}: no usable record{_first(records.problems)}; each needs "
            f"{needed}"
        )
    return records


# -- id arrays ------------------------------------------------------------------------------


def _response_length(response, context: int) -> int:
    """Response ids + end, at most `context` long."""
    return min(len(response) + 1, context)


def _example(prompt, response, context, end_id, pad_id, room_for=None, start_id=None):
    """(ids, response start, response end) of one example; the prompt keeps its last
    context + 1 - `room_for` ids (`room_for` defaults to this response's length)."""
    tail = [*response, end_id][:context]
    prompt = [end_id if start_id is None else start_id, *prompt]
    keep = context + 1 - (room_for or len(tail))
    prompt = prompt[-keep:]
    ids = [*prompt, *tail]
    return ids + [pad_id] * (context + 1 - len(ids)), len(prompt), len(ids)


def _stack(rows, context: int):
    """Examples -> (ids (N, context + 1) int32, mask (N, context) float32); the mask is 1
    where the target (ids[:, 1:]) is a response or end token."""
    ids = np.asarray([row[0] for row in rows], np.int32).reshape(-1, context + 1)
    target = np.arange(1, context + 1)[None]
    start = np.asarray([row[1] for row in rows])[:, None]
    stop = np.asarray([row[2] for row in rows])[:, None]
    return ids, ((target >= start) & (target < stop)).astype(np.float32)
