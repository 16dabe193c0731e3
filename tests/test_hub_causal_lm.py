"""Pretrained KerasHub causal LMs behind the GPT interface, on a tiny random GPT-2 preset made
locally (and a tiny random Llama for the rotary path): logits equal KerasHub's, cached steps
and left-padded rows equal the full call, generation traces, save -> load keeps the numbers,
LoRA trains only its adapters and lowers the loss."""

from __future__ import annotations

import keras
import keras_hub
import numpy as np
import pytest
import tensorflow as tf

from dltoolkit.core.errors import ConfigError
from dltoolkit.models.hub_causal_lm import (
    HubNetwork,
    check_preset,
    load_causal_lm,
    random_causal_lm_preset,
)
from dltoolkit.models.language_model import LanguageModel

TEXTS = [
    "the quick brown fox jumps over the lazy dog.",
    "a stitch in time saves nine.",
    "the early bird catches the worm.",
    "all that glitters is not gold.",
] * 4
CONTEXT = 24


@pytest.fixture(scope="module")
def preset(tmp_path_factory):
    return random_causal_lm_preset(tmp_path_factory.mktemp("hub") / "gpt2", TEXTS)


@pytest.fixture(scope="module")
def model(preset):
    return load_causal_lm(str(preset), CONTEXT)


SMALL = dict(vocabulary_size=50, num_layers=2, hidden_dim=16, intermediate_dim=32)
ROTARY = {  # tiny random backbones of the other families and their KerasHub CausalLMs
    "llama": lambda: keras_hub.models.LlamaCausalLM(
        keras_hub.models.LlamaBackbone(num_query_heads=4, num_key_value_heads=2, **SMALL), None
    ),
    "gemma2": lambda: keras_hub.models.GemmaCausalLM(
        keras_hub.models.GemmaBackbone(
            num_query_heads=4,
            num_key_value_heads=2,
            head_dim=8,
            use_post_ffw_norm=True,
            use_post_attention_norm=True,
            attention_logit_soft_cap=50.0,
            final_logit_soft_cap=30.0,
            use_sliding_window_attention=True,
            sliding_window_size=4,  # shorter than the test's sequences
            **SMALL,
        ),
        None,
    ),
    "smollm3": lambda: keras_hub.models.SmolLM3CausalLM(
        keras_hub.models.SmolLM3Backbone(
            num_attention_heads=4,
            num_key_value_heads=2,
            attention_bias=False,
            attention_dropout=0.0,
            rope_layer_enabled_list=[True, False],  # its NoPE layers have no positions
            layer_types=["attention", "attention"],
            mlp_bias=False,
            layer_norm_epsilon=1e-6,
            max_position_embeddings=CONTEXT,
            rope_theta=10000.0,
            partial_rotary_factor=1.0,
            **SMALL,
        ),
        None,
    ),
}


@pytest.fixture(scope="module", params=sorted(ROTARY))
def rotary(request):
    """(HubNetwork, the CausalLM it wraps) of one rotary family."""
    keras.utils.set_random_seed(3)
    causal_lm = ROTARY[request.param]()
    return HubNetwork(causal_lm.backbone, CONTEXT), causal_lm


def ids_of(model, texts):
    return model.tokenizer(texts).to_tensor(0)


def test_tokens_and_logits_equal_keras_hub(preset, model):
    causal_lm = keras_hub.models.CausalLM.from_preset(str(preset))
    texts = ["the quick brown fox", "all that glitters"]
    ids = ids_of(model, texts)
    own_ids = tf.ragged.constant(causal_lm.preprocessor.tokenizer(texts))  # eager: lists
    np.testing.assert_array_equal(ids, own_ids.to_tensor(0))
    expected = causal_lm({"token_ids": ids, "padding_mask": tf.ones_like(ids)})
    logits = model(ids)
    assert logits.dtype == "float32" and logits.shape == (2, ids.shape[1], 300)
    np.testing.assert_allclose(logits, expected, atol=1e-5)
    assert model.end_token == model.start_token == "<|endoftext|>" and model.end_id == 0
    assert model.context == CONTEXT
    assert model.tokenizer.detokenize(ids[:1])[0].numpy().decode() == texts[0]


def test_rotary_network_equals_keras_hub(rotary):
    network, causal_lm = rotary
    ids = np.random.default_rng(0).integers(1, 50, (2, 9)).astype("int32")
    expected = causal_lm({"token_ids": ids, "padding_mask": np.ones_like(ids)})
    np.testing.assert_allclose(network(ids), expected, atol=1e-5)


def cached_logits(network, ids, start=None, prefill=3):
    """Logits of `ids` fed as one prefill then a token at a time against the cache."""
    cache = network.empty_cache(ids.shape[0], CONTEXT)
    logits, cache = network.call_with_cache(ids[:, :prefill], cache, 0, start=start)
    steps = [logits]
    for i in range(prefill, ids.shape[1]):
        logits, cache = network.call_with_cache(ids[:, i : i + 1], cache, i, start=start)
        steps.append(logits)
    return np.concatenate(steps, axis=1)


def test_rotary_cache_and_left_padding_equal_full_call(rotary):
    assert_cache_and_left_padding_equal_full_call(rotary[0])


def test_cache_and_left_padding_equal_full_call(model):
    assert_cache_and_left_padding_equal_full_call(model.network)


def assert_cache_and_left_padding_equal_full_call(network):
    rng = np.random.default_rng(1)
    long = rng.integers(1, 50, (1, 10)).astype("int32")
    short = rng.integers(1, 50, (1, 6)).astype("int32")
    np.testing.assert_allclose(cached_logits(network, long), network(long), atol=1e-4)
    padded = np.concatenate([long, np.concatenate([np.zeros((1, 4), "int32"), short], 1)])
    batched = cached_logits(network, padded, start=np.array([0, 4], "int32"), prefill=5)
    np.testing.assert_allclose(batched[:1], network(long), atol=1e-4)
    np.testing.assert_allclose(batched[1:, 4:], network(short), atol=1e-4)


def test_generation_traces_and_batches_like_single_prompts(model):
    """`LanguageModel.generate` runs sampling.generate_ids on the HubNetwork in a tf.function."""
    scalar = [tf.TensorSpec([], dtype) for dtype in (tf.float32, tf.float32, tf.int64)]

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string), *scalar])
    def generate(text, temperature, top_p, seed):
        return model.generate(text, 8, temperature, 0, top_p, 1.0, seed)

    prompts = tf.constant(["the quick brown fox jumps", "a"])
    together = generate(prompts, 0.0, 1.0, 0).numpy()  # greedy
    alone = [generate(prompts[i : i + 1], 0.0, 1.0, 0).numpy()[0] for i in range(2)]
    assert list(together) == alone
    sampled = generate(prompts, 1.0, 0.9, 5).numpy()
    assert list(sampled) == list(generate(prompts, 1.0, 0.9, 5).numpy())
    assert list(sampled) != list(generate(prompts, 1.0, 0.9, 6).numpy())


def test_model_keras_round_trip(model, tmp_path):
    ids = ids_of(model, ["the early bird", "gold"])
    model.save(tmp_path / "model.keras")
    loaded = keras.saving.load_model(tmp_path / "model.keras", compile=False)
    assert isinstance(loaded, LanguageModel) and isinstance(loaded.network, HubNetwork)
    assert (loaded.end_token, loaded.start_token) == (model.end_token, model.start_token)
    assert loaded.context == CONTEXT
    np.testing.assert_allclose(loaded(ids), model(ids), atol=1e-6)


def test_lora_trains_only_adapters_and_survives_saving(preset, model, tmp_path):
    lora = load_causal_lm(str(preset), CONTEXT, lora_rank=2)
    trainable = [w.path for w in lora.trainable_weights]
    assert trainable and all("lora_kernel" in path for path in trainable)
    for weight in lora.trainable_weights:  # adapters start at zero: give them something
        weight.assign(np.full(weight.shape, 0.1, "float32"))
    ids = ids_of(model, TEXTS[:2])  # the same vocabulary, its tokenizer already traced
    expected = lora(ids)
    lora.save(tmp_path / "lora.keras")
    loaded = keras.saving.load_model(tmp_path / "lora.keras", compile=False)
    assert loaded.network.lora_rank == 2
    assert [w.path for w in loaded.trainable_weights] == trainable
    np.testing.assert_allclose(loaded(ids), expected, atol=1e-5)


@pytest.mark.slow
def test_lora_fit_lowers_loss_and_keeps_the_backbone(preset, model):
    keras.utils.set_random_seed(0)
    lora = load_causal_lm(str(preset), CONTEXT, lora_rank=2)
    frozen = [w.numpy().copy() for w in lora.non_trainable_weights]
    ids = ids_of(model, TEXTS[:4])[:, :CONTEXT].numpy()
    lora.compile(
        optimizer=keras.optimizers.Adam(0.1),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    losses = lora.fit(ids[:, :-1], ids[:, 1:], epochs=10, batch_size=4, verbose=0)
    losses = losses.history["loss"]
    # A random GPT-2's tiny embeddings keep its logits near uniform, so the fall is small.
    assert losses[-1] < losses[0] - 0.05
    for before, after in zip(frozen, lora.non_trainable_weights, strict=True):
        np.testing.assert_array_equal(before, after)


def test_bad_presets_are_refused(tmp_path):
    with pytest.raises(ConfigError, match="unknown preset"):
        check_preset("no_such_model")
    with pytest.raises(ConfigError, match="no config.json"):
        check_preset(str(tmp_path))
    bloom = keras_hub.models.BloomBackbone(num_heads=2, **SMALL)  # ALiBi positions
    with pytest.raises(ConfigError, match="BloomBackbone presets are not supported"):
        HubNetwork(bloom, CONTEXT)
