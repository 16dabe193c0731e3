"""`dltoolkit summarize`: train a summariser on document/summary pairs, report and export it."""

from __future__ import annotations

from typing import Annotated

import typer

from dltoolkit.cli import common as c
from dltoolkit.tasks import Summarizer


@c.recipe_command(Summarizer)
def summarize(
    data: c.Data = None,
    text_field: Annotated[
        str | None,
        typer.Option(
            help="Field holding the documents (default: text, article, document, dialogue, ...)."
        ),
    ] = None,
    summary_field: Annotated[
        str | None,
        typer.Option(
            help="Field holding the reference summaries (default: summary, highlights, abstract, ...)."
        ),
    ] = None,
    preset: Annotated[
        str | None,
        typer.Option(
            help="Fine-tune a KerasHub Seq2SeqLM: a preset name (e.g. bart_base_en, downloads) or a local preset directory."
        ),
    ] = None,
    model: Annotated[
        str | None,
        typer.Option(
            help="transformer (from scratch, the default without --preset) or pretrained."
        ),
    ] = None,
    strict: Annotated[
        bool | None,
        typer.Option(
            "--strict/--no-strict",
            help="Fail on empty documents or summaries instead of skipping them.",
        ),
    ] = None,
    tfds_data_dir: Annotated[
        str | None,
        typer.Option(
            help="tensorflow-datasets data_dir for --data tfds:NAME (default TFDS_DATA_DIR; never downloads)."
        ),
    ] = None,
    max_source_length: Annotated[
        int | None, typer.Option(help="Document tokens the model reads.")
    ] = None,
    max_target_length: Annotated[
        int | None, typer.Option(help="Summary tokens the decoder is trained on.")
    ] = None,
    decoding: Annotated[
        str | None, typer.Option(help="greedy (default), beam, top-k or top-p.")
    ] = None,
    min_length: Annotated[int | None, typer.Option(help="Shortest summary, in tokens.")] = None,
    max_length: Annotated[
        int | None, typer.Option(help="Longest summary, in tokens (default max_target_length - 1).")
    ] = None,
    no_repeat_ngram: Annotated[
        int | None, typer.Option(help="Never repeat an n-gram of this size (0: off).")
    ] = None,
    repetition_penalty: Annotated[
        float | None, typer.Option(help="Divide the logits of tokens already generated (1: off).")
    ] = None,
    long_documents: Annotated[
        str | None,
        typer.Option(
            help="Documents longer than the input: truncate (default) or chunk (summarise chunks, then their summaries)."
        ),
    ] = None,
    train_minutes: Annotated[
        float | None, typer.Option(help="Stop training after this many minutes.")
    ] = None,
    epochs: c.Epochs = None,
    batch_size: c.BatchSize = None,
    learning_rate: c.LearningRate = None,
):
    """Train a summariser (from-scratch Transformer, or fine-tune a KerasHub preset)."""
    return data, dict(
        text_field=text_field,
        summary_field=summary_field,
        preset=preset,
        model=model,
        strict=strict,
        tfds_data_dir=tfds_data_dir,
        max_source_length=max_source_length,
        max_target_length=max_target_length,
        decoding=decoding,
        min_length=min_length,
        max_length=max_length,
        no_repeat_ngram=no_repeat_ngram,
        repetition_penalty=repetition_penalty,
        long_documents=long_documents,
        train_minutes=train_minutes,
        epochs=epochs,
        batch_size=batch_size,
        learning_rate=learning_rate,
    )
