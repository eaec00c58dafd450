"""Decoding (rnnjax.decoding) and the language model kind, against Python loops and brute force."""

import functools
import inspect
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import rnnjax
from rnnjax._src import decoding

V = 4
L = 10  # every generation is L tokens from a prompt array of 4: each jitted variant compiles once
LM = rnnjax.language_model(rnnjax.recurrent(rnnjax.gru(8)), V, embed_size=4)


def _params(seed, scale=3.0):
    """Random parameters; ``scale`` spreads the logits out."""
    params = LM.init(jax.random.PRNGKey(seed))
    params["readout"]["w"] = params["readout"]["w"] * scale
    return params


@functools.partial(
    jax.jit, static_argnames=("beam_size", "max_length", "end_token", "length_penalty")
)
def _beam(params, token, *, beam_size, max_length, end_token=None, length_penalty=None):
    return decoding.beam_search(
        lambda c, t: LM.step(params, c, t),
        LM.initial_carry(params),
        token,
        beam_size=beam_size,
        max_length=max_length,
        end_token=end_token,
        length_penalty=length_penalty,
    )


@functools.partial(jax.jit, static_argnames=("end_token", "top_k"))
def _generate(
    params,
    prompt,
    prompt_length,
    key=None,
    *,
    end_token=None,
    top_k=None,
    top_p=None,
    temperature=None,
):
    padded = jnp.zeros(4, jnp.int32).at[: len(prompt)].set(prompt)
    return LM.generate(
        params,
        padded,
        max_length=L,
        prompt_length=prompt_length,
        key=key,
        end_token=end_token,
        top_k=top_k,
        top_p=top_p,
        temperature=temperature,
    )


@jax.jit
def _padded_log_probs(params, tokens, length):
    return jax.nn.log_softmax(LM.apply(params, tokens, length=length)[1], axis=-1)


def _log_probs_of(params, tokens):
    """Returns (T-1,) log p(tokens[t+1] | tokens[:t+1]) by one teacher-forced apply (no step_fn)."""
    tokens = np.asarray(tokens)
    padded = np.zeros(16, np.int32)
    padded[: len(tokens) - 1] = tokens[:-1]
    log_probs = np.asarray(_padded_log_probs(params, jnp.asarray(padded), len(tokens) - 1))
    return log_probs[np.arange(len(tokens) - 1), tokens[1:]]


def _greedy_by_loop(params, prompt, max_length):
    """Greedy continuation by re-reading the whole prefix with apply at every step."""
    tokens = list(prompt)
    while len(tokens) < max_length:
        padded = np.zeros(16, np.int32)
        padded[: len(tokens)] = tokens
        log_probs = _padded_log_probs(params, jnp.asarray(padded), len(tokens))
        tokens.append(int(jnp.argmax(log_probs[len(tokens) - 1])))
    return tokens


def test_filter_logits_by_hand():
    logits = jnp.array([1.0, 3.0, 2.0, 0.0])
    np.testing.assert_array_equal(
        decoding.filter_logits(logits, top_k=2), [-np.inf, 3.0, 2.0, -np.inf]
    )
    np.testing.assert_array_equal(
        jax.jit(lambda k: decoding.filter_logits(logits, top_k=k))(2), [-np.inf, 3.0, 2.0, -np.inf]
    )  # a traced top_k
    np.testing.assert_allclose(decoding.filter_logits(logits, temperature=2.0), logits / 2)
    p = np.exp([3.0, 2.0, 1.0, 0.0]) / np.exp([3.0, 2.0, 1.0, 0.0]).sum()  # 0.644 0.237 0.087 0.032
    # top_p = 0.85: the two most probable sum to 0.881 >= 0.85, so the nucleus is {1, 2}
    assert p[0] < 0.85 <= p[0] + p[1]
    np.testing.assert_array_equal(
        decoding.filter_logits(logits, top_p=0.85), [-np.inf, 3.0, 2.0, -np.inf]
    )
    np.testing.assert_array_equal(
        decoding.filter_logits(logits, top_p=0.9), [1.0, 3.0, 2.0, -np.inf]
    )
    # rows of a batch are filtered independently
    both = decoding.filter_logits(jnp.stack([logits, logits[::-1]]), top_k=1)
    np.testing.assert_array_equal(
        both, [[-np.inf, 3, -np.inf, -np.inf], [-np.inf, -np.inf, 3, -np.inf]]
    )
    with pytest.raises(ValueError, match="top_k must be an int in"):
        decoding.filter_logits(logits, top_k=5)
    with pytest.raises(ValueError, match="temperature must be > 0"):
        decoding.filter_logits(logits, temperature=0.0)


def test_sampled_tokens_stay_in_the_nucleus_and_follow_the_distribution():
    logits = jnp.array([1.0, 3.0, 2.0, 0.0])
    keys = jax.random.split(jax.random.PRNGKey(0), 4000)
    draws = np.asarray(
        jax.jit(jax.vmap(lambda k: decoding.sample_token(logits, k, top_p=0.85)))(keys)
    )
    assert set(draws) == {1, 2}
    # renormalised on the nucleus: p(1) = e^3 / (e^3 + e^2) = 0.731
    assert np.mean(draws == 1) == pytest.approx(np.e / (np.e + 1), abs=0.03)


def test_greedy_generation_from_a_prompt_equals_a_python_loop_over_prefixes():
    params = _params(0)
    prompt = jnp.array([1, 3, 2, 0], jnp.int32)  # the prompt is the first 3
    tokens, length = _generate(params, prompt, 3)
    assert tokens.tolist() == _greedy_by_loop(params, [1, 3, 2], L)
    assert int(length) == L


@pytest.mark.parametrize("option", ["top_k=1", "top_p->0", "temperature->0"])
def test_sampling_limits_equal_greedy(option):
    params = _params(1)
    prompt = jnp.array([2, 0, 0, 0], jnp.int32)
    greedy, _ = _generate(params, prompt, 1)
    kwargs = {
        "top_k=1": dict(top_k=1),
        "top_p->0": dict(top_p=1e-6),
        "temperature->0": dict(temperature=1e-6),
    }[option]
    keys = jax.random.split(jax.random.PRNGKey(3), 6)
    for k in keys:
        np.testing.assert_array_equal(_generate(params, prompt, 1, k, **kwargs)[0], greedy)
    # and at temperature 1 the samples do differ from greedy (the test can fail)
    hot = [_generate(params, prompt, 1, k)[0] for k in keys]
    assert not all(np.array_equal(h, greedy) for h in hot)


def test_prompt_is_reproduced_verbatim_and_end_token_stops():
    params = _params(2)
    prompt = jnp.array([3, 0, 3, 1], jnp.int32)
    for seed in range(4):
        tokens, _ = _generate(params, prompt, 4, jax.random.PRNGKey(seed), temperature=2.0)
        assert tokens[:4].tolist() == [3, 0, 3, 1]
    greedy, _ = _generate(params, prompt, 4)
    assert greedy.tolist() == _greedy_by_loop(params, [3, 0, 3, 1], L)
    # an end token inside the prompt does not stop it; the first generated one does
    end = int(greedy[5])
    tokens, length = _generate(params, prompt, 4, end_token=end)
    first = 4 + [int(t) for t in greedy[4:]].index(end)
    assert int(length) == first + 1
    assert tokens[: first + 1].tolist() == greedy[: first + 1].tolist()
    assert np.all(np.asarray(tokens[first + 1 :]) == 0)


def test_beam_of_one_is_greedy_exactly():
    for seed in range(3):
        params = _params(seed, scale=1.0)  # close logits: ties broken alike, too
        greedy, _ = _generate(params, jnp.array([1, 0, 0, 0]), 1)
        tokens, scores, lengths = _beam(params, 1, beam_size=1, max_length=L - 1)
        np.testing.assert_array_equal(tokens[0], greedy[1:])
        assert float(scores[0]) == pytest.approx(
            _log_probs_of(params, np.asarray(greedy)).sum(), abs=1e-4
        )
        assert int(lengths[0]) == L - 1
        assert float(
            decoding.sequence_log_prob(
                lambda c, t, p=params: LM.step(p, c, t), LM.initial_carry(params), 1, tokens[0]
            )
        ) == pytest.approx(float(scores[0]), abs=1e-4)


def test_exhaustive_beam_finds_the_brute_force_best_sequence():
    params = _params(5, scale=1.0)
    length = 3
    # beam 16 = 4**2 keeps every prefix until the last step: the search is exhaustive
    tokens, scores, _ = _beam(params, 0, beam_size=16, max_length=length)
    brute = {
        seq: _log_probs_of(params, (0,) + seq).sum()
        for seq in itertools.product(range(V), repeat=length)
    }
    ranked = sorted(brute, key=brute.get, reverse=True)
    assert tuple(np.asarray(tokens[0]).tolist()) == ranked[0]
    np.testing.assert_allclose(np.asarray(scores), [brute[s] for s in ranked[:16]], atol=1e-4)
    for row, score in zip(np.asarray(tokens), np.asarray(scores)):
        assert brute[tuple(row.tolist())] == pytest.approx(score, abs=1e-4)


def test_exhaustive_beam_with_length_penalty_finds_the_brute_force_best_hypothesis():
    params, end, alpha, length = _params(7, scale=1.0), 0, 2.0, 3
    # 64 beams keep every hypothesis (40 of them: ended after 1, 2 or 3 tokens, or not)
    tokens, scores, lengths = _beam(
        params, 1, beam_size=64, max_length=length, end_token=end, length_penalty=alpha
    )
    brute = {}
    for seq in itertools.product(range(V), repeat=length):
        hypothesis = seq[: seq.index(end) + 1] if end in seq else seq
        lp = ((5 + len(hypothesis)) / 6) ** alpha  # Wu et al. 2016, eq. 14
        brute[hypothesis] = _log_probs_of(params, (1,) + hypothesis).sum() / lp
    ranked = sorted(brute, key=brute.get, reverse=True)
    np.testing.assert_allclose(np.asarray(scores[:40]), [brute[h] for h in ranked], atol=1e-4)
    best = tuple(np.asarray(tokens[0, : int(lengths[0])]).tolist())
    assert best == ranked[0]
    # without the penalty the same search ranks by log-probability alone, here differently
    plain = sorted(brute, key=lambda h: brute[h] * ((5 + len(h)) / 6) ** alpha, reverse=True)
    assert plain[0] != ranked[0]
    tokens, _, lengths = _beam(params, 1, beam_size=64, max_length=length, end_token=end)
    assert tuple(np.asarray(tokens[0, : int(lengths[0])]).tolist()) == plain[0]


def test_beam_search_scores_at_least_greedy_and_finishes_beams():
    end = 0
    for seed in range(4):
        params = _params(10 + seed, scale=1.0)
        greedy, n = _generate(params, jnp.array([1, 0, 0, 0]), 1, end_token=end)
        greedy_score = _log_probs_of(params, np.asarray(greedy[: int(n)])).sum()
        tokens, scores, lengths = _beam(params, 1, beam_size=3, max_length=L - 1, end_token=end)
        assert np.all(np.diff(np.asarray(scores)) <= 1e-6)  # best first
        assert float(scores[0]) >= greedy_score - 1e-5
        for row, score, m in zip(np.asarray(tokens), np.asarray(scores), np.asarray(lengths)):
            # the score is the sum over the tokens up to the end token; then padding
            assert _log_probs_of(params, [1] + row[:m].tolist()).sum() == pytest.approx(
                score, abs=1e-4
            )
            if m < L - 1:
                assert row[m - 1] == end and np.all(row[m:] == 0)


def test_language_model_step_and_carry_agree_with_apply():
    lm = rnnjax.language_model(
        rnnjax.stack(rnnjax.recurrent(rnnjax.lstm(6)), rnnjax.recurrent(rnnjax.gru(5))),
        V,
        embed_size=3,
    )
    params = lm.init(jax.random.PRNGKey(0))
    tokens = jnp.array([1, 3, 0, 2, 3, 3], jnp.int32)

    @jax.jit
    def run(params):
        whole = lm.apply(params, tokens)
        stepped = jax.lax.scan(lambda c, t: lm.step(params, c, t), lm.initial_carry(params), tokens)
        mid, first = lm.apply(params, tokens[:4])
        second = lm.apply(params, tokens[4:], carry=mid)[1]
        padded = lm.apply(params, jnp.concatenate([tokens, jnp.array([0, 0])]), length=6)
        return whole, stepped, jnp.concatenate([first, second]), padded

    (final, logits), (carry, step_logits), pieces, (padded_final, padded) = run(params)
    close = lambda a, b: np.testing.assert_allclose(a, b, atol=1e-5)
    close(step_logits, logits)
    jax.tree.map(close, carry, final)
    # reading in two pieces with the carry passed on is reading at once; padding is inert
    close(pieces, logits)
    close(padded[:6], logits)
    assert np.all(np.asarray(padded[6:]) == 0)
    jax.tree.map(close, padded_final, final)
    with pytest.raises(ValueError, match=r"tokens must have shape \(T,\)"):
        lm.apply(params, tokens[None])


# ------------------------------------------------------------------------------------ CTC


def _collapse(path, blank=0):
    out, previous = [], None
    for k in path:
        if k != previous and k != blank:
            out.append(k)
        previous = k
    return tuple(out)


def test_ctc_greedy_equals_the_brute_force_best_path():
    rng = np.random.default_rng(0)
    run = jax.jit(jax.vmap(lambda x, n: decoding.ctc_greedy(x, n)))
    for T, K in ((4, 3), (5, 3), (3, 4)):
        logits = rng.normal(size=(6, T, K)).astype(np.float32) * 2
        lengths = np.array([T, T, T - 1, T - 1, 1, T])
        labels, counts = run(jnp.asarray(logits), jnp.asarray(lengths))
        for x, n, lab, c in zip(logits, lengths, np.asarray(labels), np.asarray(counts)):
            log_p = x[:n] - np.log(np.exp(x[:n]).sum(-1, keepdims=True))
            best = max(
                itertools.product(range(K), repeat=int(n)),
                key=lambda path: sum(log_p[t, k] for t, k in enumerate(path)),
            )
            assert tuple(lab[:c].tolist()) == _collapse(best)
            assert np.all(lab[c:] == 0)


def test_ctc_prefix_beam_search_is_exact_with_a_full_beam():
    rng = np.random.default_rng(1)
    T, K = 4, 3
    for _ in range(3):
        logits = rng.normal(size=(T, K)) * 1.5
        log_p = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
        by_labels: dict = {}
        for path in itertools.product(range(K), repeat=T):
            labels = _collapse(path)
            by_labels[labels] = np.logaddexp(
                by_labels.get(labels, -np.inf), sum(log_p[t, k] for t, k in enumerate(path))
            )
        found = decoding.ctc_prefix_beam_search(log_p, beam_size=K**T)
        best = max(by_labels, key=by_labels.get)
        assert found[0][0] == best
        for labels, score in found:
            assert score == pytest.approx(by_labels[labels], abs=1e-9)
        # and optax's CTC loss of the best labelling is minus its log-probability
        lab = np.zeros((1, T), np.int32)
        lab[0, : len(best)] = best
        pad = (np.arange(T) >= len(best)).astype(np.float32)[None]
        loss = optax.ctc_loss(
            jnp.asarray(logits, jnp.float32)[None],
            jnp.zeros((1, T)),
            jnp.asarray(lab),
            jnp.asarray(pad),
        )
        assert float(loss[0]) == pytest.approx(-found[0][1], abs=1e-4)


# ------------------------------------------------------------------ one way to generate

GEN_V, GEN_L = 7, 6
COMMON = {
    "max_length", "prompt", "prompt_length", "key", "temperature", "top_k", "top_p",
    "beam_size", "length_penalty", "end_token", "pad_token",
}  # fmt: skip


def _kind(name):
    """Returns ``(generate(**kw) -> (tokens, length), its signature's keywords)`` of a random model."""
    gru = rnnjax.gru(5)
    if name == "language_model":
        model = rnnjax.language_model(rnnjax.recurrent(gru), GEN_V, embed_size=4)
        params = model.init(jax.random.key(0))
        fn = functools.partial(model.generate, prompt=jnp.array([1]))  # the start, as a prompt

        def generate(params, prompt=None, prompt_length=None, **kw):
            # a start token 1 first, so that all kinds answer alike
            prompt = jnp.array([1]) if prompt is None else jnp.concatenate([jnp.array([1]), prompt])
            kw["max_length"] += 1
            if prompt_length is not None:
                kw["prompt_length"] = prompt_length + 1
            tokens, n = model.generate(params, prompt, **kw)
            return tokens[1:], n - 1
    elif name == "one_to_many":
        model = rnnjax.one_to_many(gru, GEN_V, start_token=1, end_token=2, embed_size=4)
        params = model.init(jax.random.key(0), 3)
        fn = model.generate
        generate = lambda p, **kw: model.generate(p, jnp.array([0.5, -1.0, 2.0]), **kw)
    else:
        attention = name.split("/")[1] if "/" in name else None
        model = rnnjax.encoder_decoder(
            rnnjax.recurrent(rnnjax.gru(4)), gru, GEN_V, start_token=1, end_token=2,
            embed_size=4, source_vocab_size=GEN_V, source_embed_size=3, attention=attention,
        )  # fmt: skip
        params = model.init(jax.random.key(0))
        fn = model.generate
        generate = lambda p, **kw: model.generate(p, jnp.array([3, 4, 5, 0]), source_length=3, **kw)
    params = jax.tree.map(lambda a: 3 * a, params)  # logits spread out: samples differ
    keywords = set(inspect.signature(fn).parameters)
    return functools.partial(generate, params), keywords


@pytest.mark.parametrize(
    "name",
    [
        "language_model",
        "one_to_many",
        "encoder_decoder",
        "encoder_decoder/luong",
        pytest.param("encoder_decoder/bahdanau", marks=pytest.mark.slow),
    ],
)
def test_every_generator_takes_the_same_keywords_and_beam_1_and_top_k_1_are_greedy(name):
    generate, keywords = _kind(name)
    assert keywords >= COMMON, COMMON - keywords
    greedy, n = generate(max_length=GEN_L)
    if "/" in name:  # attention: its weights, one row per generated token
        tokens, m, weights = generate(max_length=GEN_L, return_attention=True)
        np.testing.assert_array_equal(tokens, greedy)
        assert weights.shape == (GEN_L, 4) and np.all(np.asarray(weights[int(m) :]) == 0)
    elif name.startswith("encoder_decoder"):
        with pytest.raises(ValueError, match="return_attention=True needs a model with attention"):
            generate(max_length=GEN_L, return_attention=True)
    keys = jax.random.split(jax.random.key(1), 3)
    for k in keys:  # top-k 1 is greedy, whatever the other options
        tokens, m = generate(max_length=GEN_L, key=k, top_k=1, temperature=2.0, top_p=0.9)
        np.testing.assert_array_equal(tokens, greedy)
        assert int(m) == int(n)
    sampled = [generate(max_length=GEN_L, key=k)[0] for k in keys]
    assert not all(np.array_equal(s, greedy) for s in sampled)  # sampling samples
    for penalty in (None, 0.6):  # beam 1 is greedy, with or without a length penalty
        tokens, m = generate(max_length=GEN_L, beam_size=1, length_penalty=penalty)
        np.testing.assert_array_equal(tokens, greedy)
        assert int(m) == int(n)
    prompt = jnp.array([6, 2, 5])  # an end token in the prompt does not stop it
    for kw in ({}, {"key": keys[0]}, {"beam_size": 2}):
        tokens, m = generate(max_length=GEN_L, prompt=prompt, **kw)
        assert tokens[:3].tolist() == [6, 2, 5] and int(m) >= 3
    tokens, _ = generate(max_length=GEN_L, prompt=jnp.array([6, 2, 0]), prompt_length=2)
    assert tokens[:2].tolist() == [6, 2]
    # end and pad tokens: after the first generated end token, only pads
    free, _ = generate(max_length=GEN_L, end_token=None)
    end = int(free[1])
    stop = free.tolist().index(end) + 1
    tokens, m = generate(max_length=GEN_L, end_token=end, pad_token=4)
    assert int(m) == stop and tokens[:stop].tolist() == free[:stop].tolist()
    assert tokens[stop:].tolist() == [4] * (GEN_L - stop)
    for option in ({"temperature": 0.5}, {"top_k": 2}, {"top_p": 0.5}):
        with pytest.raises(ValueError, match="pass a key"):
            generate(max_length=GEN_L, **option)
    with pytest.raises(ValueError, match="key=None with beam_size"):
        generate(max_length=GEN_L, beam_size=2, key=keys[0])
    with pytest.raises(ValueError, match="end_token must be an int in"):
        generate(max_length=GEN_L, end_token=GEN_V)
    with pytest.raises(ValueError, match="pad_token must be an int in"):
        generate(max_length=GEN_L, pad_token=-5)
    with pytest.raises(ValueError, match=r"prompt must be in .* got 9 at position"):
        generate(max_length=GEN_L, prompt=jnp.array([3, 9]))


def test_beam_search_checks_its_tokens_against_the_vocabulary():
    params = _params(0)
    step = lambda c, t: LM.step(params, c, t)
    carry = LM.initial_carry(params)
    with pytest.raises(ValueError, match=r"token must be in \[0, vocab_size=4\), got 15"):
        decoding.beam_search(step, carry, 15, beam_size=2, max_length=3)
    with pytest.raises(ValueError, match=r"end_token must be an int in \[0, vocab_size=4\)"):
        decoding.beam_search(step, carry, 1, beam_size=2, max_length=3, end_token=99)
    with pytest.raises(ValueError, match=r"pad_token must be an int in \[0, vocab_size=4\)"):
        decoding.beam_search(step, carry, 1, beam_size=2, max_length=3, pad_token=-5)
    with pytest.raises(ValueError, match=r"length_penalty must be a float >= 0"):
        decoding.beam_search(step, carry, 1, beam_size=2, max_length=3, length_penalty=-1.0)
    with pytest.raises(ValueError, match=r"continuation must be in .* got 7 at position 1"):
        decoding.sequence_log_prob(step, carry, 1, jnp.array([0, 7, 2]))
    # padding after the length may hold anything
    decoding.sequence_log_prob(step, carry, 1, jnp.array([0, 3, -1]), 2)
