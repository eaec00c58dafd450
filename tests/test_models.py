"""The five topologies: exactness against Python-loop references, and training to a target.

Each training test trains a tiny model on a generated task with one jitted
``lax.scan`` over Adam steps (a fresh batch per step) and evaluates on fresh data.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import rnnjax
from rnnjax import decoding, losses, padding, readouts

KEY = jax.random.PRNGKey(0)


def _train_and_eval(loss_fn, evaluate, params, make_batch, steps, lr, key):
    """Returns ``evaluate(trained_params)`` after ``steps`` Adam steps, all in one jit."""
    opt = optax.chain(
        optax.clip_by_global_norm(1.0), optax.adam(optax.cosine_decay_schedule(lr, steps, 0.05))
    )

    def step(state, k):
        p, s = state
        g = jax.grad(loss_fn)(p, make_batch(k))
        u, s = opt.update(g, s, p)
        return (optax.apply_updates(p, u), s), None

    @jax.jit
    def run(p, key):
        k_train, k_eval = jax.random.split(key)
        (p, _), _ = jax.lax.scan(step, (p, opt.init(p)), jax.random.split(k_train, steps))
        return evaluate(p, k_eval)

    return float(run(params, key))


def _report(name, value):
    print(f"{name}: {value:.4f}")  # shown with pytest -s / -rP; the assert is the test


# ---------------------------------------------------------------------------- one-to-one


def test_one_to_one_learns_xor_quadrants():
    model = rnnjax.one_to_one(readouts.mlp([32], 2))

    def batch(k, n=128):
        x = jax.random.uniform(k, (n, 2), minval=-1.0, maxval=1.0)
        return x, (x[:, 0] * x[:, 1] > 0).astype(jnp.int32)

    def loss(p, b):
        x, y = b
        return losses.masked_cross_entropy(jax.vmap(lambda u: model.apply(p, u))(x), y)

    def accuracy(p, k):
        x, y = batch(k, 2000)
        return jnp.mean(jnp.argmax(jax.vmap(lambda u: model.apply(p, u))(x), -1) == y)

    acc = _train_and_eval(
        loss, accuracy, model.init(KEY, 2), batch, 300, 3e-2, jax.random.PRNGKey(1)
    )
    _report("metric", acc)
    assert acc >= 0.95, acc


# ---------------------------------------------------------------------------- many-to-one


@pytest.mark.parametrize("bidi", [False, True])
def test_many_to_one_pools_match_unpadded_reference(bidi):
    cell = rnnjax.gru(4)
    layer = rnnjax.bidirectional(cell) if bidi else rnnjax.recurrent(cell)
    xs = jax.random.normal(jax.random.PRNGKey(3), (6, 3))
    n = 4
    padded = xs.at[n:].set(100.0)
    rnn_params = layer.init(KEY, 3)
    # reference: the layer on the valid prefix only (no masking involved), pooled in NumPy
    final, ys = layer.apply(rnn_params, xs[:n])
    ys = np.asarray(ys)
    reference = {
        "last": ys[-1],
        "first_last": np.concatenate([ys[0], ys[-1]]),
        "mean": ys.mean(0),
        "max": ys.max(0),
    }
    if bidi:  # first_last holds both directions' final hidden states
        np.testing.assert_allclose(ys[-1][:4], final[0], rtol=1e-5)
        np.testing.assert_allclose(ys[0][4:], final[1], rtol=1e-5)
    for pool, features in reference.items():
        model = rnnjax.many_to_one(layer, readouts.linear(2), pool=pool)
        p = model.init(KEY, 3)
        assert p["readout"]["w"].shape == (features.shape[0], 2)
        p["rnn"] = rnn_params
        expected = features @ np.asarray(p["readout"]["w"]) + np.asarray(p["readout"]["b"])
        np.testing.assert_allclose(model.apply(p, padded, length=n), expected, rtol=1e-5, atol=1e-6)


def test_many_to_one_callable_pool_reads_the_final_carry():
    layer = rnnjax.recurrent(rnnjax.lstm(4))
    model = rnnjax.many_to_one(layer, readouts.linear(1), pool=lambda carry, ys, n: carry[1])
    p = model.init(KEY, 2)
    xs = jax.random.normal(jax.random.PRNGKey(4), (5, 2))
    (_h, c), _ = layer.apply(p["rnn"], xs[:3])
    expected = np.asarray(c) @ np.asarray(p["readout"]["w"]) + np.asarray(p["readout"]["b"])
    np.testing.assert_allclose(model.apply(p, xs, length=3), expected, rtol=1e-5, atol=1e-6)


def test_many_to_one_zero_length_pools_to_zeros():
    for pool in ["last", "mean", "max"]:
        model = rnnjax.many_to_one(rnnjax.recurrent(rnnjax.elman(3)), readouts.linear(2), pool=pool)
        p = model.init(KEY, 2)
        np.testing.assert_allclose(model.apply(p, jnp.ones((4, 2)), length=0), p["readout"]["b"])


@pytest.mark.slow
def test_many_to_one_learns_sign_of_sum_with_noisy_padding():
    T, B = 10, 64
    model = rnnjax.many_to_one(rnnjax.recurrent(rnnjax.gru(16)), readouts.linear(2))

    def batch(k, n_examples=B):
        ka, kb, kc = jax.random.split(k, 3)
        xs = jax.random.normal(ka, (n_examples, T, 1))
        n = jax.random.randint(kb, (n_examples,), 3, T + 1)
        valid = (jnp.arange(T)[None] < n[:, None])[..., None]
        y = (jnp.sum(jnp.where(valid, xs, 0.0), (1, 2)) > 0).astype(jnp.int32)
        # large padding values: accuracy would collapse if padding leaked into the output
        xs = jnp.where(valid, xs, 5.0 * jax.random.normal(kc, xs.shape))
        return xs, n, y

    def predict(p, xs, n):
        return jax.vmap(lambda x, m: model.apply(p, x, length=m))(xs, n)

    def loss(p, b):
        xs, n, y = b
        return losses.masked_cross_entropy(predict(p, xs, n), y)

    def accuracy(p, k):
        xs, n, y = batch(k, 1000)
        return jnp.mean(jnp.argmax(predict(p, xs, n), -1) == y)

    acc = _train_and_eval(
        loss, accuracy, model.init(KEY, 1), batch, 300, 1e-2, jax.random.PRNGKey(1)
    )
    _report("metric", acc)
    assert acc >= 0.95, acc


# ---------------------------------------------------------------------------- many-to-many


def test_many_to_many_matches_unpadded_reference_and_zeros_padding():
    layer = rnnjax.bidirectional(rnnjax.lstm(3))
    model = rnnjax.many_to_many(layer, readouts.linear(2))
    p = model.init(KEY, 2)
    xs = jax.random.normal(jax.random.PRNGKey(5), (6, 2))
    _, ys = layer.apply(p["rnn"], xs[:4])
    expected = np.asarray(ys) @ np.asarray(p["readout"]["w"]) + np.asarray(p["readout"]["b"])
    out = model.apply(p, xs.at[4:].set(-7.0), length=4)
    np.testing.assert_allclose(out[:4], expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(out[4:], 0.0)


@pytest.mark.slow
def test_many_to_many_bidirectional_learns_lookahead_tagging():
    # tag[t] = 1 iff token[t] == token[t+1]: needs the next input, i.e. the backward direction
    T, B, K = 8, 64, 3
    model = rnnjax.many_to_many(rnnjax.bidirectional(rnnjax.gru(16)), readouts.linear(2))

    def batch(k, n_examples=B):
        ka, kb = jax.random.split(k)
        tokens = jax.random.randint(ka, (n_examples, T), 0, K)
        n = jax.random.randint(kb, (n_examples,), 2, T + 1)
        valid = jnp.arange(T)[None] < n[:, None]
        nxt = jnp.concatenate([tokens[:, 1:], -jnp.ones((n_examples, 1), tokens.dtype)], 1)
        nxt = jnp.where(jnp.arange(T)[None] < n[:, None] - 1, nxt, -1)
        tags = (tokens == nxt).astype(jnp.int32)
        xs = jnp.where(valid[..., None], jax.nn.one_hot(tokens, K), 3.0)
        return xs, n, tags, valid

    def predict(p, xs, n):
        return jax.vmap(lambda x, m: model.apply(p, x, length=m))(xs, n)

    def loss(p, b):
        xs, n, tags, valid = b
        return losses.masked_cross_entropy(predict(p, xs, n), tags, valid)

    def accuracy(p, k):
        xs, n, tags, valid = batch(k, 500)
        right = jnp.argmax(predict(p, xs, n), -1) == tags
        return jnp.sum(right & valid) / jnp.sum(valid)

    acc = _train_and_eval(
        loss, accuracy, model.init(KEY, K), batch, 200, 2e-2, jax.random.PRNGKey(2)
    )
    _report("metric", acc)
    assert acc >= 0.95, acc


# ---------------------------------------------------------------------------- one-to-many


def _loop_decoder_logits(cell, p, context, previous_tokens, *, feed_context=True, bridge=True):
    """Reference teacher-forced decoder: a Python loop over ``cell.step``."""
    if bridge:
        _leaves, treedef = jax.tree.flatten(cell.initial_carry(p["cell"]))
        carry = jax.tree.unflatten(
            treedef,
            [
                np.tanh(np.asarray(context) @ np.asarray(q["w"]) + np.asarray(q["b"]))
                for q in p["bridge"]
            ],
        )
    else:
        carry = cell.initial_carry(p["cell"])
    out = []
    for tok in previous_tokens:
        x = np.asarray(p["embed"]["table"])[tok]
        if feed_context:
            x = np.concatenate([x, np.asarray(context)])
        carry, y = cell.step(p["cell"], carry, jnp.asarray(x))
        out.append(np.asarray(y) @ np.asarray(p["readout"]["w"]) + np.asarray(p["readout"]["b"]))
    return np.stack(out)


@pytest.mark.parametrize("condition", ["carry", "input", "both"])
def test_one_to_many_teacher_forcing_matches_loop(condition):
    cell = rnnjax.lstm(5)
    gen = rnnjax.one_to_many(cell, 6, start_token=1, end_token=2, embed_size=3, condition=condition)
    x = jax.random.normal(jax.random.PRNGKey(6), (4,))
    p = gen.init(KEY, 4)
    targets = jnp.array([3, 5, 4, 2])
    expected = _loop_decoder_logits(
        cell, p, x, [1, 3, 5, 4], feed_context=condition != "carry", bridge=condition != "input"
    )
    logits = gen.apply(p, x, targets)
    np.testing.assert_allclose(logits, expected, rtol=1e-5, atol=1e-6)
    # causal: changing a later target changes no earlier logit
    np.testing.assert_allclose(
        gen.apply(p, x, targets.at[2:].set(0))[:3], expected[:3], rtol=1e-5, atol=1e-6
    )


def test_greedy_decode_matches_loop_and_stops_at_end_token():
    cell = rnnjax.gru(8)
    vocab, start, end, pad, max_length = 5, 1, 2, 0, 6
    gen = rnnjax.one_to_many(
        cell, vocab, start_token=start, end_token=end, pad_token=pad, embed_size=3
    )
    x = jax.random.normal(jax.random.PRNGKey(7), (3,))
    decode = jax.jit(lambda p: gen.generate(p, x, max_length=max_length))
    lengths = []
    for seed in range(4):
        p = gen.init(jax.random.PRNGKey(seed), 3)
        # shift the end token's bias so that some seeds stop early and some never do
        p["readout"]["b"] = p["readout"]["b"].at[end].add(1.0 * seed - 1.5)
        tokens, length = decode(p)
        # reference: a Python loop over cell.step with argmax and an explicit break
        carry = jax.tree.unflatten(
            jax.tree.structure(cell.initial_carry(p["cell"])),
            [np.tanh(np.asarray(x) @ np.asarray(q["w"]) + np.asarray(q["b"])) for q in p["bridge"]],
        )
        ref, previous = [], start
        while len(ref) < max_length:
            u = np.concatenate([np.asarray(p["embed"]["table"])[previous], np.asarray(x)])
            carry, y = cell.step(p["cell"], carry, jnp.asarray(u))
            previous = int(
                np.argmax(
                    np.asarray(y) @ np.asarray(p["readout"]["w"]) + np.asarray(p["readout"]["b"])
                )
            )
            ref.append(previous)
            if previous == end:
                break
        np.testing.assert_array_equal(tokens[: len(ref)], ref)
        np.testing.assert_array_equal(tokens[len(ref) :], pad)
        assert int(length) == len(ref)
        lengths.append(len(ref))
    assert min(lengths) < max_length, lengths  # the stopping path was exercised


def test_sampling_follows_softmax_with_temperature():
    gen = rnnjax.one_to_many(rnnjax.elman(4), 4, start_token=0, end_token=None, embed_size=2)
    p = gen.init(KEY, 2)
    x = jnp.array([0.3, -0.2])
    p["readout"]["b"] = jnp.array([1.0, 0.0, -1.0, 0.5])
    logits0 = _loop_decoder_logits(rnnjax.elman(4), p, x, [0])[0]
    temperature = 2.0
    keys = jax.random.split(jax.random.PRNGKey(8), 4000)
    first = jax.jit(
        jax.vmap(lambda k: gen.generate(p, x, max_length=2, key=k, temperature=temperature)[0][0])
    )(keys)
    freq = np.bincount(np.asarray(first), minlength=4) / len(keys)
    z = logits0 / temperature
    expected = np.exp(z - z.max()) / np.exp(z - z.max()).sum()
    # 4000 draws: standard error <= 0.008 per class
    np.testing.assert_allclose(freq, expected, atol=0.03)
    greedy, _ = gen.generate(p, x, max_length=3)
    cold, _ = gen.generate(p, x, max_length=3, key=keys[0], temperature=1e-4)
    np.testing.assert_array_equal(cold, greedy)


def _digits_data(n, num_bits=10, max_len=4):
    """Inputs: n in binary as +-1; targets: decimal digits as tokens d + 3, then end (2), pad 0."""
    x = 2.0 * ((n[:, None] >> jnp.arange(num_bits)) & 1) - 1.0
    num_digits = 1 + (n >= 10) + (n >= 100)
    pos = jnp.arange(max_len)[None]
    digit = (n[:, None] // 10 ** jnp.clip(num_digits[:, None] - 1 - pos, 0)) % 10
    targets = jnp.where(
        pos < num_digits[:, None], digit + 3, jnp.where(pos == num_digits[:, None], 2, 0)
    )
    return x, targets.astype(jnp.int32), num_digits + 1


@pytest.mark.slow
def test_one_to_many_learns_to_emit_the_digits_of_an_integer():
    gen = rnnjax.one_to_many(rnnjax.gru(64), 13, start_token=1, end_token=2, embed_size=8)

    def loss(p, b):
        x, targets, length = b
        logits = jax.vmap(lambda u, t: gen.apply(p, u, t))(x, targets)
        return losses.masked_cross_entropy(logits, targets, padding.valid_steps(4, length))

    def exact_match(p, k):
        x, targets, length = _digits_data(jnp.arange(1000))  # every integer 0..999
        tokens, n = jax.vmap(lambda u: gen.generate(p, u, max_length=4))(x)
        return jnp.mean(jnp.all(tokens == targets, 1) & (n == length))

    batch = lambda k: _digits_data(jax.random.randint(k, (128,), 0, 1000))
    acc = _train_and_eval(
        loss, exact_match, gen.init(KEY, 10), batch, 250, 2e-2, jax.random.PRNGKey(1)
    )
    _report("metric", acc)
    assert acc >= 0.95, acc


# ---------------------------------------------------------------------------- encoder-decoder


def test_encoder_decoder_ignores_source_padding_and_matches_loop():
    enc = rnnjax.bidirectional(rnnjax.gru(3))
    dec_cell = rnnjax.lstm(4)
    model = rnnjax.encoder_decoder(
        enc,
        dec_cell,
        6,
        start_token=1,
        end_token=2,
        source_vocab_size=5,
        embed_size=2,
        source_embed_size=3,
    )
    p = model.init(KEY)
    src = jnp.array([3, 4, 4, 1, 0, 0])
    targets = jnp.array([4, 3, 2])
    padded = src.at[3:].set(2)
    logits = model.apply(p, padded, targets, source_length=3)
    # reference: encode the unpadded source, flatten the final carry, loop the decoder
    final, _ = enc.apply(p["encoder"], np.asarray(p["source_embed"]["table"])[np.asarray(src[:3])])
    context = np.concatenate([np.ravel(a) for a in jax.tree.leaves(final)])
    expected = _loop_decoder_logits(dec_cell, p["decoder"], context, [1, 4, 3])
    np.testing.assert_allclose(logits, expected, rtol=1e-5, atol=1e-6)
    tokens, _ = model.generate(p, padded, max_length=4, source_length=3)
    tokens_unpadded, _ = model.generate(p, src[:3], max_length=4)
    np.testing.assert_array_equal(tokens, tokens_unpadded)


def test_encoder_decoder_vector_source():
    model = rnnjax.encoder_decoder(
        rnnjax.recurrent(rnnjax.elman(3)),
        rnnjax.gru(3),
        4,
        start_token=0,
        end_token=1,
        feed_context=False,
    )
    p = model.init(KEY, 2)
    assert p["decoder"]["cell"]["w_ih"].shape == (16, 9)  # embed_size only: no context fed
    assert model.apply(p, jnp.ones((5, 2)), jnp.array([2, 1])).shape == (2, 4)
    with pytest.raises(ValueError, match="input_size"):
        model.init(KEY)


def _reverse_data(k, batch, vocab=8, max_len=8):
    """Source: 5..8 tokens from 3..vocab-1, padded with 0; target: reversed, then end (2)."""
    ka, kb = jax.random.split(k)
    src = jax.random.randint(ka, (batch, max_len), 3, vocab)
    n = jax.random.randint(kb, (batch,), 5, max_len + 1)
    valid = jnp.arange(max_len)[None] < n[:, None]
    src = jnp.where(valid, src, 0)
    index = jnp.where(valid, n[:, None] - 1 - jnp.arange(max_len)[None], 0)
    rev = jnp.where(valid, jnp.take_along_axis(src, index, 1), 0)
    targets = (
        jnp.concatenate([rev, jnp.zeros((batch, 1), jnp.int32)], 1).at[jnp.arange(batch), n].set(2)
    )
    return src, n, targets, n + 1


@pytest.mark.slow
def test_encoder_decoder_learns_to_reverse_5_to_8_tokens():
    V, L = 8, 9
    model = rnnjax.encoder_decoder(
        rnnjax.bidirectional(rnnjax.gru(32)),
        rnnjax.gru(32),
        V,
        start_token=1,
        end_token=2,
        source_vocab_size=V,
        embed_size=8,
        source_embed_size=8,
    )

    def loss(p, b):
        src, n, targets, tn = b
        logits = jax.vmap(lambda s, m, t: model.apply(p, s, t, source_length=m))(src, n, targets)
        return losses.masked_cross_entropy(logits, targets, padding.valid_steps(L, tn))

    def exact_match(p, k):
        src, n, targets, tn = _reverse_data(k, 500)
        tokens, length = jax.vmap(lambda s, m: model.generate(p, s, max_length=L, source_length=m))(
            src, n
        )
        return jnp.mean(jnp.all(tokens == targets, 1) & (length == tn))

    batch = lambda k: _reverse_data(k, 64)
    acc = _train_and_eval(
        loss, exact_match, model.init(KEY), batch, 600, 2e-2, jax.random.PRNGKey(1)
    )
    _report("metric", acc)
    assert acc >= 0.95, acc


def test_errors_name_the_argument():
    with pytest.raises(ValueError, match="pool"):
        rnnjax.many_to_one(rnnjax.recurrent(rnnjax.gru(2)), readouts.linear(1), pool="median")
    with pytest.raises(ValueError, match="end_token"):
        rnnjax.one_to_many(rnnjax.gru(2), 4, start_token=0, end_token=4)
    with pytest.raises(ValueError, match="condition"):
        rnnjax.one_to_many(rnnjax.gru(2), 4, start_token=0, end_token=1, condition="nowhere")
    with pytest.raises(ValueError, match=r"readout.output_size"):
        rnnjax.one_to_many(rnnjax.gru(2), 4, start_token=0, end_token=1, readout=readouts.linear(3))
    gen = rnnjax.one_to_many(rnnjax.gru(2), 4, start_token=0, end_token=1)
    p = gen.init(KEY, 3)
    with pytest.raises(ValueError, match="max_length"):
        gen.generate(p, jnp.ones(3), max_length=0)
    with pytest.raises(ValueError, match="temperature"):
        gen.generate(p, jnp.ones(3), max_length=2, key=KEY, temperature=0.0)
    with pytest.raises(ValueError, match=r"x must have shape \(input_size,\)"):
        gen.apply(p, jnp.ones((2, 3)), jnp.array([1]))
    with pytest.raises(ValueError, match="targets"):
        gen.apply(p, jnp.ones(3), jnp.array([[1]]))
    one = rnnjax.one_to_one(readouts.linear(2))
    with pytest.raises(ValueError, match=r"jax.vmap"):
        one.apply(one.init(KEY, 3), jnp.ones((4, 3)))


def test_token_inputs_are_embedded_by_the_model():
    # Each kind with embedding= equals the same kind on the embedded vectors, built by hand.
    table = readouts.embedding(7, 3)
    tokens = jnp.array([4, 1, 6, 0, 2])
    cell = rnnjax.gru(5)
    kinds = {
        "many_to_one": lambda e: rnnjax.many_to_one(
            rnnjax.bidirectional(cell), readouts.linear(2), pool="mean", embedding=e
        ),
        "many_to_many": lambda e: rnnjax.many_to_many(
            rnnjax.recurrent(cell), readouts.linear(2), embedding=e
        ),
    }
    for name, build in kinds.items():
        with_tokens, on_vectors = build(table), build(None)
        params = with_tokens.init(jax.random.key(0))
        vectors = params["source_embed"]["table"][tokens]
        vector_params = {k: v for k, v in params.items() if k != "source_embed"}
        np.testing.assert_allclose(
            with_tokens.apply(params, tokens, length=3),
            on_vectors.apply(vector_params, vectors, length=3),
            rtol=1e-6,
            err_msg=name,
        )
        # the vector-input model keeps its initialisation
        for a, b in zip(
            jax.tree.leaves(vector_params),
            jax.tree.leaves(on_vectors.init(jax.random.key(0), 3)),
            strict=True,
        ):
            np.testing.assert_array_equal(a, b)
        with pytest.raises(
            ValueError, match=r"xs must be integer tokens of shape \(T,\).*got shape \(5, 3\)"
        ):
            with_tokens.apply(params, vectors)
        with pytest.raises(ValueError, match="input_size must be None for token inputs"):
            with_tokens.init(jax.random.key(0), 3)
    # one_to_many conditioned on one token (a class to describe)
    gen = rnnjax.one_to_many(cell, 6, start_token=1, end_token=2, embedding=table)
    params = gen.init(jax.random.key(0))
    vector_gen = rnnjax.one_to_many(cell, 6, start_token=1, end_token=2)
    vector_params = {k: v for k, v in params.items() if k != "source_embed"}
    x = params["source_embed"]["table"][4]
    targets = jnp.array([3, 5, 2])
    np.testing.assert_allclose(
        gen.apply(params, jnp.array(4), targets),
        vector_gen.apply(vector_params, x, targets),
        rtol=1e-6,
    )
    tokens_out, _ = gen.generate(params, jnp.array(4), max_length=4)
    np.testing.assert_array_equal(
        tokens_out, vector_gen.generate(vector_params, x, max_length=4)[0]
    )
    with pytest.raises(ValueError, match=r"x must be integer tokens of shape \(\) \(one token\)"):
        gen.apply(params, jnp.array([4]), targets)
    with pytest.raises(TypeError, match=r"embedding must be an rnnjax.readouts.embedding"):
        rnnjax.many_to_one(rnnjax.recurrent(cell), readouts.linear(2), embedding=7)


# ------------------------------------------------------------------ ids, labels and params

IDS_V, IDS_T = 5, 4
K = IDS_V - 1  # never drawn as a valid id: the reference reads it from a zeroed row


def _id_cases():
    """``{case: (fn(params, ids), params, argument name, table path, kind)}``.

    ``fn`` is one entry point reading ``ids: (IDS_T,)``; the table path says which
    embedding row ``K`` to zero for the reference; ``kind`` is "apply" (the result must
    equal the reference), "generate" (the prompt comes back verbatim, the rest in range)
    or "loss".
    """
    cell, V, T = rnnjax.gru(3), IDS_V, IDS_T
    embed = readouts.embedding(V, 2)
    key = jax.random.key(0)
    ids = jnp.arange(T) % (V - 1)
    m2o = rnnjax.many_to_one(rnnjax.recurrent(cell), readouts.linear(2), embedding=embed)
    m2m = rnnjax.many_to_many(rnnjax.recurrent(cell), readouts.linear(2), embedding=embed)
    o2m = rnnjax.one_to_many(cell, V, start_token=1, end_token=2, embed_size=2)
    e2d = rnnjax.encoder_decoder(
        rnnjax.recurrent(cell), cell, V, start_token=1, end_token=2, embed_size=2,
        source_vocab_size=V, source_embed_size=2, attention="luong",
    )  # fmt: skip
    lm = rnnjax.language_model(rnnjax.recurrent(cell), V, embed_size=2)
    x = jnp.array([0.3, -0.2])
    p_o2m, p_e2d, p_lm = o2m.init(key, 2), e2d.init(key), lm.init(key)
    logits = jax.random.normal(key, (T, V))
    return {
        "many_to_one": (lambda p, t: m2o.apply(p, t), m2o.init(key), "xs", ("source_embed",), "apply"),
        "many_to_many": (lambda p, t: m2m.apply(p, t), m2m.init(key), "xs", ("source_embed",), "apply"),
        "one_to_many": (lambda p, t: o2m.apply(p, x, t), p_o2m, "targets", ("embed",), "apply"),
        "encoder_decoder/source": (lambda p, t: e2d.apply(p, t, ids), p_e2d, "source", ("source_embed",), "apply"),
        "encoder_decoder/targets": (lambda p, t: e2d.apply(p, ids, t), p_e2d, "targets", ("decoder", "embed"), "apply"),
        "language_model": (lambda p, t: lm.apply(p, t)[1], p_lm, "tokens", ("embed",), "apply"),
        "language_model.generate": (lambda p, t: lm.generate(p, t, max_length=6), p_lm, "prompt", None, "generate"),
        "one_to_many.generate": (lambda p, t: o2m.generate(p, x, prompt=t, max_length=6), p_o2m, "prompt", None, "generate"),
        "encoder_decoder.generate": (lambda p, t: e2d.generate(p, ids, prompt=t, max_length=6, beam_size=2), p_e2d, "prompt", None, "generate"),
        "beam_search": (lambda p, t: decoding.beam_search(lambda c, u: lm.step(p, c, u), lm.initial_carry(p), t[1], beam_size=2, max_length=2), p_lm, "token", None, "generate"),
        "masked_cross_entropy": (lambda p, t: losses.masked_cross_entropy(logits, t), None, "labels", None, "loss"),
    }  # fmt: skip


ID_CASES = _id_cases()
_JITTED = {}


def _batched(case, checked):
    """``checked(jit(vmap(fn)))`` over a batch of ids, compiled once per case."""
    if (case, checked) not in _JITTED:
        fn, params = ID_CASES[case][:2]
        run = jax.jit(jax.vmap(lambda t: fn(params, t)))
        _JITTED[case, checked] = rnnjax.checked(run) if checked else run
    return _JITTED[case, checked]


@pytest.mark.parametrize("case", list(ID_CASES))
@settings(max_examples=3, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    bad=st.sampled_from([-1, -7, IDS_V, IDS_V + 3]),
    position=st.integers(0, IDS_T - 1),
    seed=st.integers(0, 99),
)
def test_an_out_of_range_id_is_an_error_naming_it_or_the_documented_finite_result(
    case, bad, position, seed
):
    fn, params, name, table, kind = ID_CASES[case]
    if name == "token":
        position = 1  # beam search reads one token: ids[1]
    ids = jnp.asarray(np.random.default_rng(seed).integers(0, K, IDS_T), jnp.int32)
    bad_ids = ids.at[position].set(bad)
    where = "" if name == "token" else f" at position {position}"
    # eager: ValueError naming the argument, the value and the position
    with pytest.raises(ValueError, match=rf"{name} must be in \[0, .*got {bad}{where}"):
        fn(params, bad_ids)
    # jit(vmap) under rnnjax.checked: the same, and the batch element
    batch = jnp.stack([ids, bad_ids])
    with pytest.raises(
        rnnjax.InvalidValueError, match=rf"{name} must be in .*got {bad}{where}.*batch element 1"
    ):
        _batched(case, True)(batch)
    # jit(vmap) without: the documented finite result
    out = _batched(case, False)(batch)
    assert all(np.all(np.isfinite(a)) for a in jax.tree.leaves(out))
    if kind == "apply":  # an id out of range embeds to zeros: as id K with row K zeroed
        zeroed = jax.tree.map(lambda a: a, params)
        holder = functools.reduce(lambda d, k: d[k], table, zeroed)
        holder["table"] = holder["table"].at[K].set(0.0)
        want = fn(zeroed, ids.at[position].set(K))
        for a, b in zip(jax.tree.leaves(out), jax.tree.leaves(want)):
            np.testing.assert_allclose(a[1], b, rtol=1e-5, atol=1e-6)
    elif kind == "loss":  # ignored, as a masked position is
        mask = jnp.arange(IDS_T) != position
        want = losses.masked_cross_entropy(
            jax.random.normal(jax.random.key(0), (IDS_T, IDS_V)), ids.at[position].set(0), mask
        )
        np.testing.assert_allclose(out[1], want, rtol=1e-6)
    else:  # generation: the prompt comes back as given; everything generated is a token
        tokens = np.asarray(out[0][1])
        if name == "prompt":
            np.testing.assert_array_equal(tokens[:IDS_T], bad_ids)
            tokens = tokens[IDS_T:]
        assert np.all((tokens >= 0) & (tokens < IDS_V))


def test_a_cell_where_a_layer_belongs_and_foreign_params_fail_early():
    with pytest.raises(
        TypeError, match=r"encoder must be an rnnjax.Layer.*rnnjax.recurrent\(cell\)"
    ):
        rnnjax.encoder_decoder(rnnjax.gru(16), rnnjax.gru(16), 5, start_token=1, end_token=2)
    with pytest.raises(TypeError, match=r"decoder_cell must be an rnnjax.Cell"):
        rnnjax.encoder_decoder(
            rnnjax.recurrent(rnnjax.gru(4)), rnnjax.recurrent(rnnjax.gru(4)), 5,
            start_token=1, end_token=2,
        )  # fmt: skip
    with pytest.raises(TypeError, match=r"layer must be an rnnjax.Layer"):
        rnnjax.many_to_one(rnnjax.gru(4), readouts.linear(2))
    with pytest.raises(TypeError, match=r"layer must be an rnnjax.Layer"):
        rnnjax.language_model(rnnjax.lstm(4), 5)
    with pytest.raises(TypeError, match=r"readout must be an rnnjax.readouts.Readout"):
        rnnjax.many_to_many(rnnjax.recurrent(rnnjax.gru(4)), 2)
    with pytest.raises(ValueError, match=r"pad_token must be an int in \[0, vocab_size=5\)"):
        rnnjax.one_to_many(rnnjax.gru(2), 5, start_token=0, end_token=1, pad_token=-5)
    # NumPy ints are ints
    rnnjax.one_to_many(rnnjax.gru(2), 5, start_token=np.int64(0), end_token=np.int32(1))
    # parameters of another size or model fail naming the path, under jit too
    small = rnnjax.many_to_one(rnnjax.stack(rnnjax.recurrent(rnnjax.gru(3))), readouts.linear(2))
    big = rnnjax.many_to_one(rnnjax.stack(rnnjax.recurrent(rnnjax.gru(4))), readouts.linear(2))
    xs = jnp.ones((3, 2))
    with pytest.raises(
        ValueError, match=r"params/readout/w must have shape \(3, 2\).*got \(4, 2\)"
    ):
        jax.jit(small.apply)(big.init(KEY, 2), xs)
    lstm_model = rnnjax.many_to_one(
        rnnjax.stack(rnnjax.recurrent(rnnjax.lstm(3))), readouts.linear(2)
    )
    with pytest.raises(ValueError, match=r"params/rnn/0/\w+ must have shape \((3, )?12,?\)"):
        lstm_model.apply(small.init(KEY, 2), xs)
    seq2seq = rnnjax.encoder_decoder(
        rnnjax.bidirectional(rnnjax.gru(3)), rnnjax.gru(3), 5, start_token=1, end_token=2
    )
    attending = rnnjax.encoder_decoder(
        rnnjax.bidirectional(rnnjax.gru(3)), rnnjax.gru(3), 5, start_token=1, end_token=2,
        attention="bahdanau",
    )  # fmt: skip
    with pytest.raises(ValueError, match=r"params does not have the structure.*decoder/attention"):
        seq2seq.apply(attending.init(KEY, 2), xs, jnp.array([3, 2]))
    # parameters in another float dtype are the same model
    p16 = jax.tree.map(lambda a: a.astype(jnp.bfloat16), small.init(KEY, 2))
    small.apply(p16, xs)


def test_losses_of_a_batch_of_0_are_0_not_nan():
    assert (
        float(losses.masked_cross_entropy(jnp.zeros((0, 4, 3)), jnp.zeros((0, 4), jnp.int32)))
        == 0.0
    )
    assert float(losses.masked_mse(jnp.zeros((0, 2)), jnp.zeros((0, 2)))) == 0.0
    grads = jax.grad(lambda z: losses.masked_cross_entropy(z, jnp.zeros((0,), jnp.int32)))(
        jnp.zeros((0, 3))
    )
    assert grads.shape == (0, 3)


def test_padded_ids_may_hold_anything():
    embed = readouts.embedding(5, 2)
    cell = rnnjax.gru(3)
    tagger = rnnjax.many_to_many(rnnjax.recurrent(cell), readouts.linear(2), embedding=embed)
    seq2seq = rnnjax.encoder_decoder(
        rnnjax.recurrent(cell), cell, 5, start_token=1, end_token=2, source_vocab_size=5
    )
    lm = rnnjax.language_model(rnnjax.recurrent(cell), 5)
    clean, padded = jnp.array([3, 1, 0, 0]), jnp.array([3, 1, -1, 9])
    p_tag, p_s2s, p_lm = tagger.init(KEY), seq2seq.init(KEY), lm.init(KEY)
    for run in (
        lambda t: tagger.apply(p_tag, t, length=2),
        lambda t: seq2seq.apply(p_s2s, t, jnp.array([3, 2]), source_length=2),
        lambda t: lm.apply(p_lm, t, length=2)[1],
    ):
        np.testing.assert_array_equal(run(padded), run(clean))
        np.testing.assert_array_equal(rnnjax.checked(jax.jit(run))(padded), run(clean))
