"""The GPT generation loop: greedy or seeded sampling with temperature, top-k, top-p and a
repetition penalty, one cached step per new token; graph ops, so it traces inside the
SavedModel's serving function and gives the same ids eagerly, traced and reloaded.

Prompts arrive right-padded with their lengths. Inside the loop they are left-padded, so all
rows write the same cache slot at each step, and the model's `start` argument keeps each
row's positions counting from its first real token and its padding unseen. A prompt longer
than the context keeps its last `context` tokens; once prompt + generated text fills the
context, the window slides: each further token is predicted from the last `context` tokens,
recomputed in one call (as nanoGPT's generate does).
"""

from __future__ import annotations

import tensorflow as tf
from keras import ops

from dltoolkit.models.decoding import _token_set

_REMOVED = -1e9


def repetition_penalised(logits, seen, penalty):
    """CTRL's penalty: logits (B, V) of tokens `seen` (B, V) divided by `penalty` where
    positive, multiplied where negative (penalty 1: unchanged)."""
    penalised = ops.where(logits > 0, logits / penalty, logits * penalty)
    return ops.where(seen, penalised, logits)


def top_k_filtered(logits, k):
    """Logits (B, V) outside each row's `k` largest removed; k 0 (or >= V) keeps all."""
    vocabulary = tf.shape(logits)[-1]
    k = tf.cast(k, tf.int32)

    def filtered():
        kth = tf.math.top_k(logits, tf.minimum(k, vocabulary)).values[:, -1:]
        return ops.where(logits < kth, _REMOVED, logits)

    return tf.cond(tf.logical_and(k > 0, k < vocabulary), filtered, lambda: logits)


def top_p_filtered(logits, p):
    """Nucleus filtering: keep each row's most likely tokens whose probabilities reach `p`
    (at least one token); p >= 1 keeps all."""
    p = tf.cast(p, tf.float32)

    def filtered():
        ranked = tf.sort(logits, axis=-1, direction="DESCENDING")
        probabilities = ops.softmax(ranked, axis=-1)
        before = ops.cumsum(probabilities, axis=-1) - probabilities
        threshold = ops.min(ops.where(before < p, ranked, ranked[:, :1]), axis=-1, keepdims=True)
        return ops.where(logits < threshold, _REMOVED, logits)

    return tf.cond(p < 1.0, filtered, lambda: logits)


def choose_tokens(logits, seen, temperature, top_k, top_p, repetition_penalty, seed, step):
    """Next ids (B,) int32 from float32 logits (B, V): the repetition penalty, then greedy
    (temperature 0) or a draw from logits / temperature filtered by top-k then top-p, seeded
    by (seed, step) so the same seed always draws the same tokens."""
    logits = repetition_penalised(logits, seen, tf.cast(repetition_penalty, tf.float32))
    temperature = tf.cast(temperature, tf.float32)
    greedy = tf.argmax(logits, axis=-1, output_type=tf.int32)
    scaled = logits / tf.maximum(temperature, 1e-6)
    filtered = top_p_filtered(top_k_filtered(scaled, top_k), top_p)
    draw_seed = tf.stack([tf.cast(seed, tf.int64), tf.cast(step, tf.int64)])
    drawn = tf.random.stateless_categorical(filtered, 1, draw_seed, dtype=tf.int32)[:, 0]
    return tf.where(temperature > 0, drawn, greedy)


def left_padded(prompt_ids, prompt_lengths, context: int):
    """Right-padded prompts (B, P) with lengths (B,) -> each row's last min(length, context)
    tokens right-aligned in (B, W), W the longest of those, and each row's padding (B,)."""
    kept = tf.minimum(prompt_lengths, context)
    width = tf.reduce_max(kept)
    slots = tf.range(width)[None, :]
    padding = width - kept
    source = prompt_lengths[:, None] - width + slots
    tokens = tf.gather(
        prompt_ids, tf.clip_by_value(source, 0, tf.shape(prompt_ids)[1] - 1), batch_dims=1
    )
    return tf.where(slots >= padding[:, None], tokens, tf.zeros_like(tokens)), padding


def generate_ids(
    model,
    prompt_ids,
    prompt_lengths,
    max_new_tokens,
    temperature=1.0,
    top_k=0,
    top_p=1.0,
    repetition_penalty=1.0,
    seed=0,
    end_id=None,
):
    """Continue each prompt by up to `max_new_tokens` ids with a `GPT` (`call_with_cache`).

    prompt_ids (B, P) int32, right-padded; prompt_lengths (B,) their true lengths, each at
    least 1 (start prompts with the end-of-text token to generate from nothing). Every
    setting but `end_id` may be a scalar tensor; temperature 0 is greedy, top_k 0 and top_p 1
    are off, repetition_penalty 1 is off; `end_id` None (or negative) means no end token.
    Returns new ids (B, max_new_tokens) int32 and new lengths (B,) int32: the ids before each
    row's first `end_id`; from that end token on a row holds only `end_id`.
    """
    context = model.context
    prompt_ids = tf.cast(prompt_ids, tf.int32)
    prompt_lengths = tf.cast(prompt_lengths, tf.int32)
    max_new_tokens = tf.cast(max_new_tokens, tf.int32)
    batch = tf.shape(prompt_ids)[0]
    end = tf.constant(-1) if end_id is None else tf.cast(end_id, tf.int32)

    window, padding = left_padded(prompt_ids, prompt_lengths, context)
    width = tf.shape(window)[1]
    logits, cache = model.call_with_cache(
        window, model.empty_cache(batch, context), 0, start=padding
    )
    tokens = tf.pad(window, [[0, 0], [0, context - width]])
    prompt_valid = tf.range(tf.shape(prompt_ids)[1])[None, :] < prompt_lengths[:, None]
    vocabulary = tf.shape(logits)[-1]
    seen = _token_set(prompt_ids, prompt_valid, vocabulary)

    def feed(token, tokens, padding, index, cache):
        """The model's next logits after `token` (B,), and the loop's new window state."""

        def within_context():
            written = ops.slice_update(tokens, [0, index], token[:, None])
            logits, updated = model.call_with_cache(token[:, None], cache, index, start=padding)
            return written, padding, index + 1, updated, logits[:, -1]

        def slide():
            shifted = tf.concat([tokens[:, 1:], token[:, None]], axis=1)
            kept_padding = tf.maximum(padding - 1, 0)
            logits, updated = model.call_with_cache(
                shifted, model.empty_cache(batch, context), 0, start=kept_padding
            )
            return shifted, kept_padding, index, updated, logits[:, -1]

        return tf.cond(index < context, within_context, slide)

    def body(step, out, done, lengths, seen, logits, tokens, padding, index, cache):
        chosen = choose_tokens(
            logits, seen, temperature, top_k, top_p, repetition_penalty, seed, step
        )
        token = tf.where(done, end, chosen)
        ended = tf.equal(token, end)
        lengths += tf.cast(tf.logical_not(tf.logical_or(done, ended)), tf.int32)
        done = tf.logical_or(done, ended)
        seen = tf.logical_or(seen, tf.one_hot(token, vocabulary, on_value=True, off_value=False))
        tokens, padding, index, cache, logits = feed(token, tokens, padding, index, cache)
        return (
            step + 1,
            out.write(step, token),
            done,
            lengths,
            seen,
            logits,
            tokens,
            padding,
            index,
            cache,
        )

    def unfinished(step, out, done, *_):
        return tf.logical_and(step < max_new_tokens, tf.logical_not(tf.reduce_all(done)))

    state = (
        tf.constant(0),
        tf.TensorArray(tf.int32, size=0, dynamic_size=True, element_shape=[None]),
        tf.zeros([batch], tf.bool),
        tf.zeros([batch], tf.int32),
        seen,
        logits[:, -1],
        tokens,
        padding,
        width,
        cache,
    )
    steps, out, _, lengths, *_ = tf.while_loop(unfinished, body, state)
    new_ids = tf.transpose(tf.reshape(out.stack(), [steps, batch]))
    new_ids = tf.pad(new_ids, [[0, 0], [0, max_new_tokens - steps]], constant_values=end)
    return new_ids, lengths
