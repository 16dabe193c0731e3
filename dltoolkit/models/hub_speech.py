"""Pretrained KerasHub speech models (Moonshine, Whisper) from a preset name, a kaggle:// or
hf:// handle or a local preset directory: loading, fine-tuning on raw 16 kHz audio and text,
and transcription as graph ops (for tf.function and the SavedModel export).

Both models train with `model.fit` on batches `{"audio": (B, N) float32 at 16 kHz,
"text": (B,) string}` (a tf.data.Dataset; no labels: the transcript is the target, fed back
shifted by one token for teacher forcing). Moonshine is KerasHub's own AudioToText task,
whose preprocessor tokenizes the text; Whisper has no task in KerasHub, so `WhisperSpeechToText`
is ours: the backbone, the audio converter (log-mel in the graph) and the tokenizer in one Keras
model that tokenizes inside its train and test steps.
"""

from __future__ import annotations

import json
from pathlib import Path

import keras

from dltoolkit.core.errors import ConfigError, WeightsError
from dltoolkit.core.presets import REMOTE_PREFIXES, is_local

BACKBONE_KINDS = {"MoonshineBackbone": "moonshine", "WhisperBackbone": "whisper"}
SUPPORTED = "Moonshine (MoonshineAudioToText) or Whisper (WhisperBackbone)"


def speech_preset_names() -> dict[str, str]:
    """Preset name -> kind, for the speech models KerasHub knows."""
    import keras_hub

    names = {name: "moonshine" for name in keras_hub.models.MoonshineBackbone.presets}
    names.update({name: "whisper" for name in keras_hub.models.WhisperBackbone.presets})
    return names


def kind_of_config(config: dict) -> str | None:
    """'moonshine', 'whisper' or None, from a preset's config.json."""
    name = str(config.get("registered_name", "")).split(">")[-1]
    return BACKBONE_KINDS.get(name)


def check_speech_preset(preset: str) -> str:
    """The kind ('moonshine' or 'whisper') of `preset`; a ConfigError unless it is a known
    speech preset name, a remote handle, or a directory holding a supported KerasHub preset."""
    preset = str(preset)
    if is_local(preset):
        config_path = Path(preset).expanduser() / "config.json"
        try:
            config = json.loads(config_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            raise ConfigError(
                f"--preset '{preset}' is not a KerasHub preset directory (no readable "
                f"config.json); pass a {SUPPORTED} preset saved with save_to_preset"
            ) from None
        kind = kind_of_config(config) if isinstance(config, dict) else None
        if kind is None:
            found = config.get("class_name", "?") if isinstance(config, dict) else "?"
            raise ConfigError(
                f"--preset '{preset}' holds a {found}, not a speech model; "
                f"pass a {SUPPORTED} preset"
            )
        return kind
    if preset.startswith(REMOTE_PREFIXES):
        return remote_kind(preset)
    names = speech_preset_names()
    if preset not in names:
        raise ConfigError(
            f"unknown speech preset '{preset}'; pass a local {SUPPORTED} preset directory, "
            f"a kaggle:// or hf:// handle, or one of: {', '.join(sorted(names))}"
        )
    return names[preset]


def remote_kind(handle: str) -> str:
    """The kind of a remote preset, from its config.json alone."""
    from keras_hub.src.utils.preset_utils import load_json

    try:
        config = load_json(handle)
    except Exception as err:  # downloads fail in many ways; the user needs the offline option
        raise WeightsError(
            f"preset '{handle}' could not be downloaded ({type(err).__name__}); offline, "
            "pass a local preset directory instead (made with save_to_preset)"
        ) from None
    kind = kind_of_config(config)
    if kind is None:
        raise ConfigError(f"preset '{handle}' is not a speech model; pass a {SUPPORTED} preset")
    return kind


def load_speech_model(preset: str, max_target_length: int = 64):
    """The model of `preset`, ready for `fit` on {"audio", "text"} batches (see the module
    docstring) and for `transcribe_graph`: a MoonshineAudioToText or a WhisperSpeechToText.
    Transcripts are cut to `max_target_length` tokens in training."""
    import keras_hub

    kind = check_speech_preset(preset)
    source = str(Path(preset).expanduser()) if is_local(str(preset)) else str(preset)
    try:
        if kind == "moonshine":
            # An explicit dtype: MoonshineBackbone.get_config (keras-hub 0.32) saves its dtype
            # as a bare string, which from_preset cannot read back.
            model = keras_hub.models.MoonshineAudioToText.from_preset(
                source, dtype=keras.config.dtype_policy().name
            )
            model.preprocessor.decoder_sequence_length = max_target_length
            return model
        return WhisperSpeechToText(
            keras_hub.models.WhisperBackbone.from_preset(source),
            keras_hub.layers.WhisperAudioConverter.from_preset(source),
            keras_hub.tokenizers.WhisperTokenizer.from_preset(source),
            max_target_length=max_target_length,
        )
    except Exception as err:
        if is_local(str(preset)):
            raise ConfigError(
                f"--preset '{preset}' could not be loaded as a {kind} speech model: "
                f"{str(err).splitlines()[0] if str(err) else type(err).__name__}"
            ) from None
        raise WeightsError(
            f"preset '{preset}' could not be downloaded ({type(err).__name__}); offline, "
            "pass a local preset directory instead (made with save_to_preset)"
        ) from None


def whisper_prompt(tokenizer) -> list[int]:
    """Whisper's decoder prompt: start of transcript, then language and task tokens when the
    tokenizer is multilingual (English, else its first language), then no-timestamps."""
    prompt = [tokenizer.bos_token_id]
    languages = tokenizer.language_tokens or {}
    if languages:
        language = languages.get("<|en|>", next(iter(languages.values())))
        prompt += [language, tokenizer.transcribe_token_id]
    return prompt + [tokenizer.no_timestamps_token_id]


@keras.saving.register_keras_serializable(package="dltoolkit")
class WhisperSpeechToText(keras.Model):
    """A KerasHub Whisper backbone as a speech-to-text model: raw 16 kHz audio (B, N) and
    decoder token ids (B, T) -> next-token logits (B, T, vocabulary). Its train and test
    steps take {"audio", "text"} batches and tokenize the text (teacher forcing)."""

    def __init__(self, backbone, audio_converter, tokenizer, max_target_length=64, **kwargs):
        super().__init__(**kwargs)
        self.backbone = backbone
        self.audio_converter = audio_converter
        self.tokenizer = tokenizer
        self.max_target_length = max_target_length
        self.prompt_ids = whisper_prompt(tokenizer)
        self.encoder = keras.Model(
            backbone.input["encoder_features"], backbone.output["encoder_sequence_output"]
        )

    def call(self, inputs, training=None):
        outputs = self.backbone(
            {
                "encoder_features": self.audio_converter(inputs["audio"]),
                "decoder_token_ids": inputs["decoder_token_ids"],
                "decoder_padding_mask": inputs["decoder_padding_mask"],
            },
            training=training,
        )
        return self.backbone.token_embedding(outputs["decoder_sequence_output"], reverse=True)

    def teacher_forcing(self, audio, text):
        """(inputs, next-token targets, weights) for a batch of audio and transcripts: the
        prompt and the text's tokens in, the text's tokens and the end token out."""
        import tensorflow as tf

        ids = self.tokenizer(text)
        batch = tf.shape(text)[0]
        prompt = tf.tile(tf.constant([self.prompt_ids], ids.dtype), [batch, 1])
        end = tf.fill([batch, 1], tf.cast(self.tokenizer.eos_token_id, ids.dtype))
        prompt, end = tf.RaggedTensor.from_tensor(prompt), tf.RaggedTensor.from_tensor(end)
        room = self.max_target_length + 1 - len(self.prompt_ids) - 1
        ids = tf.concat([prompt, ids[:, :room], end], axis=1)
        dense = ids.to_tensor(self.tokenizer.pad_token_id, shape=[None, self.max_target_length + 1])
        mask = tf.sequence_mask(ids.row_lengths(), self.max_target_length + 1)
        targets_after_prompt = tf.range(self.max_target_length) >= len(self.prompt_ids) - 1
        inputs = {"audio": audio, "decoder_token_ids": dense[:, :-1]}
        inputs["decoder_padding_mask"] = tf.cast(mask[:, :-1], "int32")
        weights = tf.cast(tf.logical_and(mask[:, 1:], targets_after_prompt[None, :]), "float32")
        return inputs, dense[:, 1:], weights

    def train_step(self, data):
        return super().train_step(self.teacher_forcing(data["audio"], data["text"]))

    def test_step(self, data):
        return super().test_step(self.teacher_forcing(data["audio"], data["text"]))

    def get_config(self):
        return {
            **super().get_config(),
            "backbone": keras.saving.serialize_keras_object(self.backbone),
            "audio_converter": keras.saving.serialize_keras_object(self.audio_converter),
            "tokenizer": keras.saving.serialize_keras_object(self.tokenizer),
            "max_target_length": self.max_target_length,
        }

    @classmethod
    def from_config(cls, config):
        for key in ("backbone", "audio_converter", "tokenizer"):
            config[key] = keras.saving.deserialize_keras_object(config[key])
        return cls(**config)

    def save_to_preset(self, directory) -> None:
        """Backbone, audio converter and tokenizer as one KerasHub preset directory."""
        self.backbone.save_to_preset(str(directory))
        self.audio_converter.save_to_preset(str(directory))
        self.tokenizer.save_to_preset(str(directory))


def make_sampler(beams: int):
    """Greedy decoding, or beam search keeping the best of `beams` hypotheses."""
    import keras_hub

    if beams < 1:
        raise ConfigError(f"beams must be 1 or more (got {beams})")
    if beams == 1:
        return keras_hub.samplers.GreedySampler()
    return keras_hub.samplers.BeamSampler(num_beams=beams)


def transcribe_graph(model, waves, max_length: int, beams: int = 1):
    """Raw 16 kHz waves (B, N) float32 -> transcripts (B,) tf.string, the decoding loop as
    graph ops (usable in a tf.function with an input_signature, hence in a SavedModel).
    `max_length` bounds the decoder's tokens, prompt included."""
    import tensorflow as tf

    waves = tf.convert_to_tensor(waves, tf.float32)
    if isinstance(model, WhisperSpeechToText):
        tokens, tokenizer = whisper_generate(model, waves, max_length, make_sampler(beams))
        ends = [tokenizer.eos_token_id]
    else:
        tokens, tokenizer = moonshine_generate(model, waves, max_length, make_sampler(beams))
        ends = [tokenizer.end_token_id]
    specials = list(tokenizer.special_token_ids) + [tokenizer.pad_token_id]
    return detokenize_until_end(tokenizer, tokens, ends, specials)


def detokenize_until_end(tokenizer, tokens, end_ids, special_ids):
    """Token ids (B, T) -> strings (B,): tokens up to the first end token, specials dropped."""
    import tensorflow as tf

    is_end = tf.reduce_any(tokens[..., None] == tf.constant(end_ids, tokens.dtype), axis=-1)
    before_end = tf.equal(tf.cumsum(tf.cast(is_end, tf.int32), axis=1), 0)
    special = tf.reduce_any(tokens[..., None] == tf.constant(special_ids, tokens.dtype), axis=-1)
    kept = tf.ragged.boolean_mask(tokens, tf.logical_and(before_end, tf.logical_not(special)))
    text = tokenizer.detokenize(kept)
    return tf.strings.strip(text)


def prompt_batch(prompt_ids, batch, max_length, filler):
    """(B, max_length) token ids starting with `prompt_ids` (then `filler`, which the decoder
    overwrites) and the mask of the positions that are given."""
    from keras import ops

    fixed = len(prompt_ids)
    row = ops.concatenate(
        [ops.array(prompt_ids, "int32"), ops.full((max_length - fixed,), filler, "int32")]
    )
    tokens = ops.tile(row[None, :], [batch, 1])
    mask = ops.tile((ops.arange(max_length) < fixed)[None, :], [batch, 1])
    return tokens, mask


def moonshine_generate(model, waves, max_length, sampler):
    """Moonshine's own cached generate step from the start token; the preprocessor's
    generate_preprocess/postprocess are bypassed, as they leave the graph (Python lists,
    NumPy)."""
    from keras import ops

    tokenizer = model.preprocessor.tokenizer
    audio = model.preprocessor.audio_converter(waves)
    audio = audio if len(audio.shape) == 3 else audio[..., None]
    tokens, mask = prompt_batch(
        [tokenizer.start_token_id], ops.shape(waves)[0], max_length, tokenizer.pad_token_id
    )
    model.sampler = sampler
    outputs = model.generate_step(
        {
            "encoder_input_values": audio,
            # As in training: samples equal to the padding value are padding.
            "encoder_padding_mask": ops.not_equal(
                audio[..., 0], model.preprocessor.audio_converter.padding_value
            ),
            "decoder_token_ids": tokens,
            "decoder_padding_mask": mask,
        },
        stop_token_ids=[tokenizer.end_token_id],
    )
    return outputs["decoder_token_ids"], tokenizer


def whisper_generate(model, waves, max_length, sampler):
    """Our cached decoding loop over KerasHub's Whisper layers: the encoder runs once, the
    cross-attention keys and values are computed once, and each step feeds one token."""
    from keras import ops

    backbone, tokenizer = model.backbone, model.tokenizer
    max_length = min(max_length, backbone.max_decoder_sequence_length)
    encoded = model.encoder(model.audio_converter(waves), training=False)
    layers = backbone.decoder_transformer_layers
    cross_cache = ops.stack(
        [
            ops.stack(
                [
                    layer._cross_attention_layer._key_dense(encoded),
                    layer._cross_attention_layer._value_dense(encoded),
                ],
                axis=1,
            )
            for layer in layers
        ],
        axis=1,
    )
    batch = ops.shape(waves)[0]
    heads = backbone.num_heads
    self_cache = ops.zeros(
        (batch, len(layers), 2, max_length, heads, backbone.hidden_dim // heads),
        dtype=encoded.dtype,
    )
    # The filler is the start token: the pad token is the end token, which would stop at once.
    tokens, mask = prompt_batch(model.prompt_ids, batch, max_length, tokenizer.bos_token_id)

    def decode(token_ids, start, self_cache, cross_cache, encoded):
        """Decoder over `token_ids` at positions start...; logits, hidden states, new cache."""
        x = backbone.decoder_embeddings(token_ids, start_index=start)
        updated = []
        for i, layer in enumerate(layers):
            x, layer_cache, _ = layer(
                decoder_sequence=x,
                encoder_sequence=encoded,
                self_attention_cache=self_cache[:, i, ...],
                self_attention_cache_update_index=start,
                cross_attention_cache=cross_cache[:, i, ...],
                training=False,
            )
            updated.append(layer_cache)
        hidden = backbone.decoder_layer_norm(x)
        logits = backbone.token_embedding(hidden, reverse=True)
        return logits, hidden, ops.stack(updated, axis=1)

    def next_logits(prompt, cache, index):
        self_cache, cross_cache, encoded = cache
        token = ops.slice(prompt, [0, index - 1], [ops.shape(prompt)[0], 1])
        logits, hidden, self_cache = decode(token, index - 1, self_cache, cross_cache, encoded)
        return logits[:, 0, :], hidden[:, 0, :], (self_cache, cross_cache, encoded)

    # Seed the cache with the prompt (later positions are masked, then overwritten).
    _, _, self_cache = decode(tokens, 0, self_cache, cross_cache, encoded)
    tokens = sampler(
        next=next_logits,
        prompt=tokens,
        cache=(self_cache, cross_cache, encoded),
        index=len(model.prompt_ids),
        mask=mask,
        stop_token_ids=[tokenizer.eos_token_id],
        model=model,
    )
    return tokens, tokenizer


PANGRAMS = (
    "the quick brown fox jumps over the lazy dog",
    "pack my box with five dozen liquor jugs",
    "zero one two three four five six seven eight nine",
)


def random_speech_preset(
    directory,
    kind: str = "moonshine",
    texts=PANGRAMS,
    vocabulary_size: int = 64,
    hidden_dim: int = 32,
    layers: int = 1,
    heads: int = 2,
    seconds: int = 1,
    max_length: int = 64,
) -> Path:
    """Save a small randomly initialised Moonshine or Whisper preset (its tokenizer learned on
    `texts`) to `directory`: the pretrained path end to end without downloading weights.
    `vocabulary_size` is Moonshine's SentencePiece size, and Whisper's number of byte-pair
    merges over its 256 bytes. Whisper's audio converter pads or cuts audio to `seconds`;
    Moonshine takes any length."""
    if kind == "moonshine":
        tokenizer, backbone, converter = tiny_moonshine(
            texts, vocabulary_size, hidden_dim, layers, heads
        )
        import keras_hub

        preprocessor = keras_hub.models.MoonshineAudioToTextPreprocessor(
            converter, tokenizer, decoder_sequence_length=max_length
        )
        keras_hub.models.MoonshineAudioToText(backbone, preprocessor).save_to_preset(str(directory))
    elif kind == "whisper":
        model = WhisperSpeechToText(
            *tiny_whisper(texts, vocabulary_size, hidden_dim, layers, heads, seconds, max_length)
        )
        model.save_to_preset(directory)
    else:
        raise ConfigError(f"unknown speech model kind '{kind}'; use moonshine or whisper")
    return Path(directory)


def tiny_moonshine(texts, vocabulary_size, hidden_dim, layers, heads):
    """A SentencePiece tokenizer learned on `texts`, a small Moonshine backbone, its converter."""
    import io

    import keras_hub
    import sentencepiece

    proto = io.BytesIO()
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(list(texts)),
        model_writer=proto,
        vocab_size=vocabulary_size,
        hard_vocab_limit=False,
        model_type="unigram",
        minloglevel=2,
    )
    tokenizer = keras_hub.models.MoonshineTokenizer(proto=proto.getvalue())
    backbone = keras_hub.models.MoonshineBackbone(
        vocabulary_size=tokenizer.vocabulary_size(),
        filter_dim=hidden_dim,
        encoder_num_layers=layers,
        decoder_num_layers=layers,
        hidden_dim=hidden_dim,
        intermediate_dim=hidden_dim,
        encoder_num_heads=heads,
        decoder_num_heads=heads,
        feedforward_expansion_factor=2,
    )
    return tokenizer, backbone, keras_hub.layers.MoonshineAudioConverter()


def tiny_whisper(texts, vocabulary_size, hidden_dim, layers, heads, seconds, max_length):
    """A byte-level BPE learned on `texts` (`vocabulary_size` merges) with Whisper's special
    tokens, a small Whisper backbone and an audio converter of `seconds` (40 mel bands)."""
    import keras_hub

    from dltoolkit.layers.text import learn_byte_bpe

    vocabulary, merges = learn_byte_bpe(texts, 256 + vocabulary_size, special_tokens=())
    names = [
        "<|endoftext|>",
        "<|startoftranscript|>",
        "<|translate|>",
        "<|transcribe|>",
        "<|notimestamps|>",
    ]
    special = {name: len(vocabulary) + i for i, name in enumerate(names)}
    tokenizer = keras_hub.tokenizers.WhisperTokenizer(vocabulary, merges, special)
    num_mels = 40
    converter = keras_hub.layers.WhisperAudioConverter(num_mels=num_mels, max_audio_length=seconds)
    backbone = keras_hub.models.WhisperBackbone(
        vocabulary_size=len(vocabulary) + len(special),
        num_layers=layers,
        num_heads=heads,
        hidden_dim=hidden_dim,
        intermediate_dim=2 * hidden_dim,
        num_mels=num_mels,
        max_encoder_sequence_length=seconds * converter.sampling_rate // converter.stride,
        max_decoder_sequence_length=max_length,
    )
    return backbone, converter, tokenizer, max_length
