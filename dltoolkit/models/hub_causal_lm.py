"""Pretrained KerasHub decoder-only language models (GPT-2, Llama, Mistral, Qwen, SmolLM3, ...)
from a preset name, a kaggle:// or hf:// handle or a local preset directory, behind the
interface of dltoolkit's own `GPT`, so `LanguageModel` and the sampling loop drive them
unchanged; and a small random GPT-2 preset to try that path offline.

`HubNetwork` holds the preset's backbone. The sampling loop left-pads a batch of prompts and
passes each row's first real slot (`start`); KerasHub's own cached call knows one position
for the whole batch, so `HubNetwork.call_with_cache` runs the backbone's layers itself with
an attention mask that hides each row's padding, and
- GPT-2 (learned absolute positions) reads its position table at each row's own positions;
- rotary models (Llama, Mistral, Qwen, SmolLM3, Phi-3, Gemma) rotate queries and keys by
  the cache slot: attention scores under rotary embeddings (and sliding windows) depend only
  on the distance between query and key, so a row shifted right by its padding scores
  exactly as it would alone.
Other families (ALiBi models, Gemma 3, ...) are refused with the supported list rather than
generating from a wrong mask.
"""

from __future__ import annotations

from pathlib import Path

import keras
from keras import ops

from dltoolkit.core import presets
from dltoolkit.core.errors import ConfigError

# How HubNetwork feeds each backbone family: "learned" (a table of absolute positions),
# "rotary" (decoder layers with KerasHub's TransformerDecoder arguments) or "gemma" (scaled
# embeddings, layers masked by a padding mask over the cache slots).
FAMILIES = {
    "GPT2Backbone": "learned",
    "LlamaBackbone": "rotary",
    "Llama3Backbone": "rotary",
    "MistralBackbone": "rotary",
    "QwenBackbone": "rotary",
    "Qwen3Backbone": "rotary",
    "SmolLM3Backbone": "rotary",
    "Phi3Backbone": "rotary",
    "GemmaBackbone": "gemma",
}


def _family(backbone) -> str:
    """How `HubNetwork` feeds `backbone` (FAMILIES), or a ConfigError naming those it can."""
    name = type(backbone).__name__
    if name not in FAMILIES:
        raise ConfigError(
            f"{name} presets are not supported for text generation; use one of: "
            + ", ".join(FAMILIES)
        )
    return FAMILIES[name]


@keras.saving.register_keras_serializable(package="dltoolkit")
class HubNetwork(keras.Model):
    """A KerasHub causal backbone as a `GPT`: ids (B, T), T <= context -> float32 logits
    (B, T, vocabulary), with `empty_cache` and `call_with_cache(ids, cache, index, start)`.
    `lora_rank` > 0 freezes the backbone, biases included, and trains only low-rank adapters
    on its attention (KerasHub's `enable_lora`), also after loading from model.keras."""

    def __init__(self, backbone, context: int, lora_rank: int = 0, **kwargs):
        super().__init__(**kwargs)
        self.family = _family(backbone)
        window = getattr(backbone, "max_sequence_length", None)
        self.context = int(context if window is None else min(context, window))
        self.backbone, self.lora_rank = backbone, int(lora_rank)
        if self.lora_rank:
            backbone.enable_lora(self.lora_rank)
            for weight in backbone.trainable_weights:  # the adapted layers' biases too
                weight.trainable = "lora_kernel" in weight.path
        self.final_norm = backbone.layer_norm if hasattr(backbone, "layer_norm") else backbone.norm
        self.kv_heads = getattr(backbone, "num_key_value_heads", None) or backbone.num_heads
        query_heads = getattr(backbone, "num_query_heads", None) or getattr(
            backbone, "num_attention_heads", None
        )
        self.head_dim = getattr(backbone, "head_dim", None) or backbone.hidden_dim // (
            query_heads or backbone.num_heads
        )

    def build(self, input_shape=None):
        """Nothing to build: the backbone's weights exist from the start."""
        self.built = True

    def get_config(self):
        return {
            **super().get_config(),
            "backbone": keras.saving.serialize_keras_object(self.backbone),
            "context": self.context,
            "lora_rank": self.lora_rank,
        }

    @classmethod
    def from_config(cls, config):
        config["backbone"] = keras.saving.deserialize_keras_object(config["backbone"])
        return cls(**config)

    def _logits(self, hidden):
        return ops.cast(self.backbone.token_embedding(hidden, reverse=True), "float32")

    def call(self, ids, training=None):
        ids = ops.cast(ids, "int32")
        inputs = {"token_ids": ids, "padding_mask": ops.ones_like(ids)}
        return self._logits(self.backbone(inputs, training=training))

    def empty_cache(self, batch_size, length=None):
        """Zeros (B, layers, 2, length, key/value heads, head_dim) for `call_with_cache`;
        `length` (cache slots) defaults to the context."""
        length = self.context if length is None else length
        shape = (batch_size, self.backbone.num_layers, 2, length, self.kv_heads, self.head_dim)
        return ops.zeros(shape, self.backbone.compute_dtype)

    def call_with_cache(self, ids, cache, index, start=None):
        """Feed `ids` (B, t) into cache slots index .. index + t -> (float32 logits
        (B, t, vocabulary), updated cache). Slots before `start` (B,) are padding, never
        attended; each row's slot s is its position s - start (default: no padding)."""
        ids = ops.cast(ids, "int32")
        index = ops.cast(index, "int32")
        batch, length = ops.shape(ids)[0], ops.shape(ids)[1]
        start = ops.zeros((batch,), "int32") if start is None else ops.cast(start, "int32")
        x = self.backbone.token_embedding(ids)
        if self.family == "learned":
            slots = ops.arange(length) + index
            positions = ops.maximum(slots[None, :] - start[:, None], 0)
            table = self.backbone.position_embedding.position_embeddings
            x = x + ops.cast(ops.take(table, positions, axis=0), x.dtype)
        if self.family == "gemma":
            x = x * ops.cast(ops.sqrt(self.backbone.hidden_dim), x.dtype)
        real = ops.arange(ops.shape(cache)[3])[None, :] >= start[:, None]  # (B, slots)
        mask = ops.broadcast_to(real[:, None, :], (batch, length, ops.shape(cache)[3]))
        layer_caches = []
        for i, layer in enumerate(self.backbone.transformer_layers):
            if self.family == "gemma":
                x, layer_cache = layer(
                    x, padding_mask=real, cache=cache[:, i], cache_update_index=index
                )
            else:
                x, layer_cache = layer(
                    x,
                    decoder_attention_mask=mask,
                    self_attention_cache=cache[:, i],
                    self_attention_cache_update_index=index,
                )
            layer_caches.append(layer_cache)
        return self._logits(self.final_norm(x)), ops.stack(layer_caches, axis=1)


def check_preset(preset: str) -> None:
    """A ConfigError unless `preset` is a known CausalLM name, a remote handle or a preset
    directory."""
    import keras_hub

    presets.check_preset(preset, keras_hub.models.CausalLM, "gpt2_base_en")


def hub_tokenizer(tokenizer):
    """A tokenizer with the interface `LanguageModel` needs, from a preset's tokenizer: a
    byte-level BPE (GPT-2, Llama 3, Qwen, SmolLM3, ...) becomes dltoolkit's `ByteBPE` on the
    same vocabulary and merges (its ids and strings the same in eager code, graphs and after
    loading); others (SentencePiece) are used as they are."""
    import keras_hub

    from dltoolkit.layers.text import ByteBPE

    if isinstance(tokenizer, keras_hub.tokenizers.BytePairTokenizer):
        return ByteBPE(tokenizer.vocabulary, tokenizer.merges, end_token=tokenizer.end_token)
    return tokenizer


def load_causal_lm(preset: str, context: int, lora_rank: int = 0):
    """The `LanguageModel` (tokenizer + `HubNetwork`) of a CausalLM preset, its context cut
    to `context` tokens (or the preset's window, if shorter), LoRA adapters of `lora_rank`
    when it is above 0; prompts open with the tokenizer's start token, generation ends at
    its end token."""
    import keras_hub

    from dltoolkit.models.language_model import LanguageModel

    check_preset(preset)
    causal_lm = presets.load_preset(keras_hub.models.CausalLM, preset)
    own_tokenizer = causal_lm.preprocessor.tokenizer
    network = HubNetwork(causal_lm.backbone, context, lora_rank=lora_rank)
    return LanguageModel(
        hub_tokenizer(own_tokenizer),
        network,
        end_token=own_tokenizer.end_token,
        start_token=getattr(own_tokenizer, "start_token", None),
    )


def random_causal_lm_preset(
    directory,
    texts: list[str],
    vocabulary_size: int = 300,
    hidden_dim: int = 32,
    layers: int = 2,
    heads: int = 2,
    max_length: int = 64,
) -> Path:
    """Save a small randomly initialised GPT-2 CausalLM (a byte-level BPE learned on
    `texts`) as a preset directory: the pretrained path end to end without downloading."""
    import keras_hub

    from dltoolkit.layers.text import END_OF_TEXT, learn_byte_bpe

    vocabulary, merges = learn_byte_bpe(texts, vocabulary_size, end_token=END_OF_TEXT)
    tokenizer = keras_hub.models.GPT2Tokenizer(vocabulary=vocabulary, merges=merges)
    preprocessor = keras_hub.models.GPT2CausalLMPreprocessor(tokenizer, sequence_length=max_length)
    backbone = presets.small_backbone(
        keras_hub.models.GPT2Backbone, tokenizer, hidden_dim, layers, heads, max_length
    )
    keras_hub.models.GPT2CausalLM(backbone, preprocessor).save_to_preset(str(directory))
    return Path(directory)
