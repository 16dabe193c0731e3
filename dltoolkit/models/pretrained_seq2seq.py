"""Pretrained KerasHub encoder-decoders (Seq2SeqLM: BART, T5, ...) from a preset name or a
local preset directory, and a small random BART preset to try that path offline."""

from __future__ import annotations

from pathlib import Path

from dltoolkit.core import presets


def check_preset(preset: str) -> None:
    """A ConfigError unless `preset` is a known Seq2SeqLM name, a remote handle or a preset
    directory."""
    import keras_hub

    presets.check_preset(preset, keras_hub.models.Seq2SeqLM, "bart_base_en")


def load_seq2seq(preset: str, max_source_length: int, max_target_length: int):
    """The Seq2SeqLM (with its preprocessor) of `preset`, sequence lengths set for training."""
    import keras_hub

    check_preset(preset)
    model = presets.load_preset(keras_hub.models.Seq2SeqLM, preset)
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
    import keras_hub

    from dltoolkit.layers.text import learn_byte_bpe

    vocabulary, merges = learn_byte_bpe(
        texts, vocabulary_size, special_tokens=("<s>", "<pad>", "</s>", "<unk>", "<mask>")
    )
    tokenizer = keras_hub.models.BartTokenizer(vocabulary=vocabulary, merges=merges)
    preprocessor = keras_hub.models.BartSeq2SeqLMPreprocessor(
        tokenizer, encoder_sequence_length=max_length, decoder_sequence_length=max_length
    )
    backbone = presets.small_backbone(
        keras_hub.models.BartBackbone, tokenizer, hidden_dim, layers, heads, max_length
    )
    keras_hub.models.BartSeq2SeqLM(backbone, preprocessor).save_to_preset(str(directory))
    return Path(directory)
