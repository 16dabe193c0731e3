"""The GPT decoder and its generation loop: the cache equals the full call, a tiny model learns
a repeated pattern and greedy generation continues it, and sampling is seeded, batch-safe,
window-sliding and the same traced as eager."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf
from keras import ops

from dltoolkit.models.gpt import GPT, token_log_probs
from dltoolkit.models.sampling import (
    choose_tokens,
    generate_ids,
    repetition_penalised,
    top_k_filtered,
    top_p_filtered,
)

PATTERN = "abcdef"
STOP = 1  # the id of "a", used as the end token where a test stops rows early
CONTEXT = 12


def encode(text: str) -> list[int]:
    return [PATTERN.index(c) + 1 for c in text]


def decode(ids) -> str:
    return "".join(PATTERN[i - 1] if i else "|" for i in ids)


def batch(prompts: list[list[int]]):
    """Right-padded ids and lengths, as generate_ids takes them."""
    width = max(len(p) for p in prompts)
    ids = np.zeros((len(prompts), width), "int32")
    for row, prompt in enumerate(prompts):
        ids[row, : len(prompt)] = prompt
    return ids, np.array([len(p) for p in prompts], "int32")


SIGNATURE = [
    tf.TensorSpec([None, None], tf.int32),  # prompt ids, right-padded
    tf.TensorSpec([None], tf.int32),  # prompt lengths
    tf.TensorSpec([], tf.int32),  # max_new_tokens
    tf.TensorSpec([], tf.float32),  # temperature
    tf.TensorSpec([], tf.int32),  # top_k
    tf.TensorSpec([], tf.float32),  # top_p
    tf.TensorSpec([], tf.float32),  # repetition_penalty
    tf.TensorSpec([], tf.int64),  # seed
    tf.TensorSpec([], tf.int32),  # end_id (-1: none)
]
_traced = {}


def traced_loop(model):
    """generate_ids for `model` in a tf.function with every setting a tensor input, as the
    export serves it (traced once per model)."""
    if id(model) not in _traced:

        @tf.function(input_signature=SIGNATURE)
        def loop(*inputs):
            return generate_ids(model, *inputs)

        _traced[id(model)] = (model, loop)
    return _traced[id(model)][1]


def generate(
    model,
    prompts,
    max_new_tokens,
    temperature=1.0,
    top_k=0,
    top_p=1.0,
    repetition_penalty=1.0,
    seed=0,
    end_id=None,
    eager=False,
):
    """New ids and lengths as numpy arrays, from the traced loop (or eagerly)."""
    ids, lengths = batch(prompts)
    settings = (max_new_tokens, temperature, top_k, top_p, repetition_penalty, seed, end_id)
    if eager:
        new_ids, new_lengths = generate_ids(model, ids, lengths, *settings)
    else:
        settings = settings[:-1] + (-1 if end_id is None else end_id,)
        dtypes = [spec.dtype.as_numpy_dtype for spec in SIGNATURE[2:]]
        tensors = [np.asarray(value, dtype) for value, dtype in zip(settings, dtypes, strict=True)]
        new_ids, new_lengths = traced_loop(model)(ids, lengths, *tensors)
    return ops.convert_to_numpy(new_ids), ops.convert_to_numpy(new_lengths)


def tiny(positions="rotary", seed=0, **overrides):
    keras.utils.set_random_seed(seed)
    settings = dict(context=CONTEXT, d_model=32, layers=2, heads=4, positions=positions)
    return GPT(len(PATTERN) + 1, **{**settings, **overrides})


@pytest.fixture(scope="module")
def pattern_model():
    """A GPT trained on windows of "abcdefabcdef..." until it continues the pattern."""
    model = tiny()
    stream = np.array(encode(PATTERN * 40), "int32")
    starts = np.arange(len(stream) - CONTEXT - 1)
    windows = np.stack([stream[s : s + CONTEXT + 1] for s in starts])
    model.compile(
        optimizer=keras.optimizers.Adam(3e-3),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        jit_compile=False,
    )
    history = model.fit(
        windows[:, :-1], windows[:, 1:], batch_size=16, epochs=6, verbose=0, shuffle=True
    )
    assert history.history["loss"][-1] < 0.1 * history.history["loss"][0]
    return model


@pytest.mark.parametrize("positions", ["rotary", "learned"])
def test_cache_steps_equal_the_full_call(positions):
    model = tiny(positions)
    ids = np.random.RandomState(1).randint(0, 7, (3, CONTEXT)).astype("int32")
    full = ops.convert_to_numpy(model(ids))
    logits, cache = model.call_with_cache(ids[:, :5], model.empty_cache(3), 0)
    stepped = [ops.convert_to_numpy(logits)]
    for index in range(5, CONTEXT):
        logits, cache = model.call_with_cache(ids[:, index : index + 1], cache, tf.constant(index))
        stepped.append(ops.convert_to_numpy(logits))
    np.testing.assert_allclose(np.concatenate(stepped, axis=1), full, atol=1e-4)


@pytest.mark.parametrize("positions", ["rotary", "learned"])
def test_left_padding_keeps_each_rows_positions(positions):
    model = tiny(positions)
    ids = np.random.RandomState(2).randint(1, 7, (1, 6)).astype("int32")
    padded = np.concatenate([np.full((1, 4), 3, "int32"), ids], axis=1)
    logits, _ = model.call_with_cache(padded, model.empty_cache(1), 0, start=np.array([4]))
    np.testing.assert_allclose(
        ops.convert_to_numpy(logits)[:, 4:], ops.convert_to_numpy(model(ids)), atol=1e-4
    )


def test_mixed_precision_gives_float32_logits_and_a_half_precision_cache():
    model = tiny(dtype="mixed_bfloat16")
    ids = np.random.RandomState(6).randint(0, 7, (2, 8)).astype("int32")
    full = model(ids)
    assert full.dtype == "float32"
    logits, cache = model.call_with_cache(ids, model.empty_cache(2), 0)
    assert cache.dtype == "bfloat16" and logits.dtype == "float32"
    np.testing.assert_allclose(ops.convert_to_numpy(logits), ops.convert_to_numpy(full), atol=1e-2)


def test_save_and_load_give_the_same_logits(tmp_path):
    model = tiny("learned", dropout=0.1, ff_dim=48)
    ids = np.arange(14, dtype="int32").reshape(2, 7) % 7
    expected = ops.convert_to_numpy(model(ids))
    model.save(tmp_path / "gpt.keras")
    loaded = keras.saving.load_model(tmp_path / "gpt.keras")
    assert loaded.get_config() == model.get_config()
    np.testing.assert_allclose(ops.convert_to_numpy(loaded(ids)), expected, atol=1e-6)


def test_token_log_probs_sum_the_masked_targets():
    logits = np.random.RandomState(3).normal(size=(2, 4, 5)).astype("float32")
    targets = np.array([[1, 2, 3, 4], [0, 0, 1, 1]], "int32")
    mask = np.array([[1, 1, 0, 1], [0, 1, 1, 0]], "float32")
    log_p = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    picked = np.take_along_axis(log_p, targets[..., None], -1)[..., 0]
    sums, counts = token_log_probs(logits, targets, mask)
    np.testing.assert_allclose(ops.convert_to_numpy(sums), (picked * mask).sum(1), rtol=1e-5)
    np.testing.assert_array_equal(ops.convert_to_numpy(counts), [3, 2])


def test_greedy_generation_continues_the_pattern(pattern_model):
    new_ids, lengths = generate(pattern_model, [encode("cde")], 8, temperature=0.0)
    assert decode(new_ids[0]) == "fabcdefa"
    assert lengths.tolist() == [8]


def test_long_prompt_and_output_beyond_the_context_slide_the_window(pattern_model):
    prompt = encode((PATTERN * 4)[:20])  # longer than the context: cut from the left
    new_ids, _ = generate(pattern_model, [prompt], 3 * CONTEXT, temperature=0.0)
    assert decode(new_ids[0]) == (PATTERN * 10)[20 : 20 + 3 * CONTEXT]
    # Exactly nanoGPT's rule: each token is the argmax after the last `context` tokens.
    next_logits = tf.function(
        lambda ids: pattern_model(ids)[:, -1], input_signature=[tf.TensorSpec([1, None], tf.int32)]
    )
    ids = list(prompt)
    for _ in range(3 * CONTEXT):
        ids.append(int(np.argmax(next_logits(np.array([ids[-CONTEXT:]], "int32")))))
    assert new_ids[0].tolist() == ids[len(prompt) :]


def test_end_id_stops_each_row(pattern_model):
    new_ids, lengths = generate(
        pattern_model, [encode("abc"), encode("bcdef")], 6, temperature=0.0, end_id=STOP
    )
    assert lengths.tolist() == [3, 0]  # "def" then "a" ends row 0; row 1's "a" comes first
    assert new_ids.tolist() == [[4, 5, 6, 1, 1, 1], [1] * 6]


@pytest.fixture(scope="module")
def untrained_model():
    """A random GPT: near-uniform predictions, so samples differ from seed to seed."""
    return tiny(seed=5)


def test_a_batch_of_different_lengths_gives_each_row_what_it_gives_alone(untrained_model):
    prompts = [encode("ab"), encode("cdefabcdefabcdef"), encode("fedcb")]
    together, together_lengths = generate(untrained_model, prompts, CONTEXT + 3, temperature=0.0)
    for row, prompt in enumerate(prompts):
        alone, alone_lengths = generate(untrained_model, [prompt], CONTEXT + 3, temperature=0.0)
        assert together[row].tolist() == alone[0].tolist()
        assert together_lengths[row] == alone_lengths[0]


def test_seeded_sampling_repeats_and_top_k_one_is_greedy(untrained_model):
    prompt = [encode("abc")]
    first, _ = generate(untrained_model, prompt, 20, temperature=1.0, seed=7)
    again, _ = generate(untrained_model, prompt, 20, temperature=1.0, seed=7)
    other, _ = generate(untrained_model, prompt, 20, temperature=1.0, seed=8)
    assert first.tolist() == again.tolist()
    assert first.tolist() != other.tolist()
    greedy, _ = generate(untrained_model, prompt, 20, temperature=0.0)
    top_one, _ = generate(untrained_model, prompt, 20, temperature=1.0, top_k=1, seed=9)
    assert top_one.tolist() == greedy.tolist()
    nucleus, _ = generate(untrained_model, prompt, 20, temperature=1.0, top_p=1e-6, seed=9)
    assert nucleus.tolist() == greedy.tolist()


def test_top_k_and_top_p_keep_the_most_likely_tokens():
    logits = tf.math.log(tf.constant([[0.05, 0.5, 0.15, 0.3]]))

    def kept(filtered):
        return (filtered.numpy() > -1e8).astype(int).tolist()

    assert kept(top_k_filtered(logits, 2)) == [[0, 1, 0, 1]]
    assert kept(top_k_filtered(logits, 0)) == [[1, 1, 1, 1]]
    assert kept(top_p_filtered(logits, 0.7)) == [[0, 1, 0, 1]]
    assert kept(top_p_filtered(logits, 0.85)) == [[0, 1, 1, 1]]
    assert kept(top_p_filtered(logits, 1.0)) == [[1, 1, 1, 1]]


def test_repetition_penalty_divides_positive_and_multiplies_negative_logits():
    logits = tf.constant([[3.0, 2.5, -1.0, -0.4]])
    seen = tf.constant([[True, False, True, False]])
    penalised = repetition_penalised(logits, seen, 2.0)
    np.testing.assert_allclose(penalised.numpy(), [[1.5, 2.5, -2.0, -0.4]])
    greedy = choose_tokens(logits, seen, 0.0, 0, 1.0, 2.0, 0, 0)
    assert greedy.numpy().tolist() == [1]


def test_traced_loop_gives_what_eager_gives(untrained_model):
    settings = dict(temperature=0.9, top_k=4, top_p=0.95, repetition_penalty=1.3, seed=11)
    prompts = [encode("abcd"), encode("efabcdefabcdefab")]
    eager = generate(untrained_model, prompts, CONTEXT + 4, end_id=STOP, eager=True, **settings)
    traced = generate(untrained_model, prompts, CONTEXT + 4, end_id=STOP, **settings)
    np.testing.assert_array_equal(traced[0], eager[0])
    np.testing.assert_array_equal(traced[1], eager[1])


@pytest.mark.slow
def test_a_reloaded_saved_model_samples_what_the_traced_loop_samples(untrained_model, tmp_path):
    loop = traced_loop(untrained_model)
    ids, lengths = batch([encode("abc"), encode("ab")])
    inputs = (ids, lengths, np.int32(15), np.float32(0.8), np.int32(0))
    inputs += (np.float32(0.9), np.float32(1.2), np.int64(3), np.int32(STOP))
    module = tf.Module()
    module.model, module.generate = untrained_model, loop
    tf.saved_model.save(module, str(tmp_path / "generate"))
    reloaded = tf.saved_model.load(str(tmp_path / "generate"))
    for ours, theirs in zip(loop(*inputs), reloaded.generate(*inputs), strict=True):
        np.testing.assert_array_equal(theirs.numpy(), ours.numpy())
