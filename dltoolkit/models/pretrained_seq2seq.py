"""Pretrained KerasHub encoder-decoders (Seq2SeqLM: BART, T5, ...) from a preset name or a
local preset directory, and a small random BART preset to try that path offline."""

from __future__ import annotations

from pathlib import Path

from dltoolkit.core.errors import ConfigError, WeightsError

REMOTE_PREFIXES = ("kaggle://", "hf://", "gs://", "modelscope://")


def preset_names() -> list[str]:
    """The Seq2SeqLM preset names KerasHub knows."""
    import keras_hub

    return sorted(keras_hub.models.Seq2SeqLM.presets)


def is_local(preset: str) -> bool:
    return not preset.startswith(REMOTE_PREFIXES) and (
        Path(preset).expanduser().exists() or "/" in preset or preset.startswith(".")
    )


def check_preset(preset: str) -> None:
    """A ConfigError unless `preset` is a known name, a remote handle or a preset directory."""
    if is_local(preset):
        if not (Path(preset).expanduser() / "config.json").is_file():
            raise ConfigError(
                f"--preset '{preset}' is not a KerasHub preset directory (no config.json); "
                "save one with model.save_to_preset(dir) or pass a preset name "
                "such as bart_base_en"
            )
    elif not preset.startswith(REMOTE_PREFIXES) and preset not in preset_names():
        raise ConfigError(
            f"unknown preset '{preset}'; pass a local preset directory or one of: "
            f"{', '.join(preset_names())}"
        )


def load_seq2seq(preset: str, max_source_length: int, max_target_length: int):
    """The Seq2SeqLM (with its preprocessor) of `preset`, sequence lengths set for training."""
    import keras_hub

    check_preset(preset)
    try:
        model = keras_hub.models.Seq2SeqLM.from_preset(
            str(Path(preset).expanduser()) if is_local(preset) else preset
        )
    except Exception as err:  # downloads fail in many ways; the user needs the offline option
        if is_local(preset):
            raise ConfigError(
                f"--preset '{preset}' could not be loaded as a Seq2SeqLM: "
                f"{str(err).splitlines()[0]}"
            ) from None
        raise WeightsError(
            f"preset '{preset}' could not be downloaded ({type(err).__name__}); "
            "offline, pass a local preset directory instead: --preset ./my_local_preset "
            "(made with save_to_preset)"
        ) from None
    return set_lengths(model, max_source_length, max_target_length)


def set_lengths(model, max_source_length: int, max_target_length: int):
    """Set the token lengths `model`'s preprocessor pads and cuts to (not kept by model.keras)."""
    model.preprocessor.encoder_sequence_length = max_source_length
    model.preprocessor.decoder_sequence_length = max_target_length
    return model


def summarize_graph(model, text, sampler, max_length: int):
    """Raw strings (B,) -> summary strings (B,) with `model`'s own preprocessor and cached
    decoding loop, as graph ops (for tf.function and export)."""
    model.sampler = sampler
    inputs = model.preprocessor.generate_preprocess(text, sequence_length=max_length)
    outputs = model.generate_step(inputs, stop_token_ids=end_token_ids(model))
    return model.preprocessor.generate_postprocess(outputs)


def end_token_ids(model) -> list[int]:
    """The ids that end generation (some tokenizers have two)."""
    tokenizer = model.preprocessor.tokenizer
    return [tokenizer.end_token_id] + (
        [tokenizer.end_token2_id] if hasattr(tokenizer, "end_token2_id") else []
    )


def random_bart_preset(
    directory,
    texts: list[str],
    vocabulary_size=400,
    hidden_dim=32,
    layers=1,
    heads=2,
    max_length=256,
) -> Path:
    """Save a small randomly initialised BART (byte-level BPE trained on `texts`) as a preset
    directory: the fine-tuning path end to end without downloading weights."""
    import tempfile

    import keras_hub
    from tokenizers import ByteLevelBPETokenizer

    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(
        texts,
        vocab_size=vocabulary_size,
        special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"],
    )
    with tempfile.TemporaryDirectory() as tmp:
        bpe.save_model(tmp)
        lines = Path(tmp, "merges.txt").read_text(encoding="utf-8").splitlines()
    merges = [line for line in lines if line and not line.startswith("#")]
    tokenizer = keras_hub.models.BartTokenizer(vocabulary=bpe.get_vocab(), merges=merges)
    preprocessor = keras_hub.models.BartSeq2SeqLMPreprocessor(
        tokenizer, encoder_sequence_length=max_length, decoder_sequence_length=max_length
    )
    backbone = keras_hub.models.BartBackbone(
        vocabulary_size=tokenizer.vocabulary_size(),
        num_layers=layers,
        num_heads=heads,
        hidden_dim=hidden_dim,
        intermediate_dim=4 * hidden_dim,
        max_sequence_length=max_length,
    )
    keras_hub.models.BartSeq2SeqLM(backbone, preprocessor).save_to_preset(str(directory))
    return Path(directory)
