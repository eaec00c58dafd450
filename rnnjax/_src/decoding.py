"""The implementation of :mod:`rnnjax.decoding` (its docstring describes it)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from rnnjax._src import checks, padding
from rnnjax._src import inputs as _inputs

Array = jax.Array
StepFn = Callable[[Any, Array], tuple[Any, Array]]


# ------------------------------------------------------------------------------ one token


def filter_logits(
    logits: Array, *, temperature: Any = 1.0, top_k: int | None = None, top_p: Any = None
) -> Array:
    """Returns ``logits / temperature`` with every token outside the top-k and the nucleus at -inf.

    Args:
      logits: ``(..., V)``.
      temperature: > 0 (a float or traced scalar); below 1 sharpens the distribution.
      top_k: keep the ``top_k`` largest logits (an int in ``[1, V]``, or a traced int,
        clipped to it; ties with the k-th are kept), None for all. ``top_k=1`` is greedy.
      top_p: keep the smallest set of most probable tokens whose probability sums to at least
        ``top_p`` (Holtzman et al. 2020, "The Curious Case of Neural Text Degeneration",
        sec. 3.1), the most probable token always; a float or traced scalar in ``(0, 1]``,
        None for all. Applied after temperature and top-k, as in their order here.
    """
    if isinstance(temperature, (int, float)) and not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    logits = jnp.asarray(logits) / temperature
    num_tokens = logits.shape[-1]
    if top_k is not None:
        if isinstance(top_k, bool) or (
            isinstance(top_k, (int, float))
            and not (isinstance(top_k, int) and 1 <= top_k <= num_tokens)
        ):
            raise ValueError(f"top_k must be an int in [1, V={num_tokens}] or None, got {top_k!r}")
        # A traced top_k is clipped to [1, V]; sorting (not lax.top_k) lets it vary under jit.
        k = jnp.clip(top_k, 1, num_tokens)
        kth = jnp.take(jnp.sort(logits, axis=-1), num_tokens - k, axis=-1)[..., None]
        logits = jnp.where(logits < kth, -jnp.inf, logits)
    if top_p is not None:
        if isinstance(top_p, (int, float)) and not 0 < top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {top_p}")
        order = jnp.argsort(-logits, axis=-1)
        probs = jax.nn.softmax(jnp.take_along_axis(logits, order, axis=-1), axis=-1)
        # A token is in the nucleus when the tokens more probable than it sum to < top_p.
        before = jnp.cumsum(probs, axis=-1) - probs
        keep_sorted = (before < top_p).at[..., 0].set(True)
        keep = jnp.take_along_axis(keep_sorted, jnp.argsort(order, axis=-1), axis=-1)
        logits = jnp.where(keep, logits, -jnp.inf)
    return logits


def sample_token(
    logits: Array,
    key: Array | None = None,
    *,
    temperature: Any = 1.0,
    top_k: int | None = None,
    top_p: Any = None,
) -> Array:
    """Returns one int32 token drawn from ``softmax(filter_logits(logits))``; argmax when ``key`` is None.

    ``logits: (V,)`` (or ``(..., V)``: one token per row). Greedy (``key=None``) ignores
    the filters, which never remove the most probable token.
    """
    if key is None:
        return jnp.argmax(logits, axis=-1).astype(jnp.int32)
    filtered = filter_logits(logits, temperature=temperature, top_k=top_k, top_p=top_p)
    return jax.random.categorical(key, filtered, axis=-1).astype(jnp.int32)


# ------------------------------------------------------------------------------ generation


def _check_sampling(key: Any, temperature: Any, top_k: Any, top_p: Any, beam_size: Any) -> None:
    sampling = [
        n
        for n, v in (("temperature", temperature), ("top_k", top_k), ("top_p", top_p))
        if v is not None
    ]
    if beam_size is not None:
        if key is not None or sampling:
            raise ValueError(
                "beam search is deterministic: pass key=None with beam_size, and no "
                f"temperature, top_k or top_p; got key={'None' if key is None else 'a key'}, "
                f"sampling options {sampling or 'none'}"
            )
    elif key is None and sampling:
        raise ValueError(
            f"{', '.join(sampling)} sample from the model: pass a key (key=None decodes "
            "greedily and takes no sampling option)"
        )


def _num_tokens(step_fn: StepFn, carry: Any, token: Any) -> int:
    return jax.eval_shape(step_fn, carry, jnp.asarray(token, jnp.int32))[1].shape[-1]


def generate(
    step_fn: StepFn,
    carry: Any,
    prompt: Array,
    *,
    max_length: int,
    prompt_length: Any = None,
    key: Array | None = None,
    temperature: Any = None,
    top_k: int | None = None,
    top_p: Any = None,
    beam_size: int | None = None,
    length_penalty: float | None = None,
    end_token: int | None = None,
    pad_token: int = 0,
) -> tuple[Array, Array]:
    """Returns ``(tokens: (max_length,) int32, length: () int32)``: the prompt, then its continuation.

    The one generation loop of rnnjax: every model's ``generate`` calls it.
    ``tokens[:prompt_length]`` is the prompt verbatim; the model reads each token in turn
    (``carry, logits = step_fn(carry, tokens[t])``) and, past the prompt, the next token is
    picked from ``logits``: the argmax (greedy) when ``key`` is None, else
    :func:`sample_token`; with ``beam_size``, the best of :func:`beam_search` from the
    prompt's last token. After a generated ``end_token`` the carry is frozen and the tokens
    are ``pad_token``; ``length`` counts the tokens up to and including it (``max_length``
    if none). An end token inside the prompt does not stop it.

    Args:
      step_fn: ``step_fn(carry, token: () int32) -> (carry, logits: (V,))``.
      carry: the carry before the first prompt token.
      prompt: ``(P,)`` int in ``[0, V)``, ``1 <= P <= max_length``; its first
        ``prompt_length`` tokens are the prompt (default all; a traced ``prompt_length`` is
        clipped to ``[1, P]``; with ``beam_size`` it must be a concrete int or None).
      max_length: number of tokens returned (static).
      key: None for greedy decoding or beam search; a key to sample (one key per step is
        split from it).
      temperature, top_k, top_p: sampling options, see :func:`filter_logits` (default:
        none, temperature 1). Passing one without a ``key`` is a ValueError: there is no
        silent greedy fallback.
      beam_size: an int runs :func:`beam_search` (``key`` must then be None); ``beam_size=1``
        is greedy decoding, exactly.
      length_penalty: Wu et al. 2016's ``alpha`` (with ``beam_size`` only), see
        :func:`beam_search`.
      end_token, pad_token: concrete ints in ``[0, V)``.

    A concrete prompt token outside ``[0, V)`` raises ValueError naming its position; a
    traced one is passed to ``step_fn`` as it is (a model's embedding reads it as zeros)
    and copied to ``tokens``, or raises under :func:`rnnjax.checked`.
    """
    checks.positive_int("max_length", max_length)
    _check_sampling(key, temperature, top_k, top_p, beam_size)
    if length_penalty is not None and beam_size is None:
        raise ValueError("length_penalty ranks beams: it needs beam_size, got beam_size=None")
    prompt = jnp.asarray(prompt)
    if prompt.ndim != 1 or not 1 <= prompt.shape[0] <= max_length:
        raise ValueError(
            f"prompt must have shape (P,) with 1 <= P <= max_length={max_length}, "
            f"got {prompt.shape}"
        )
    if not jnp.issubdtype(prompt.dtype, jnp.integer):
        raise TypeError(f"prompt must be integer tokens, got dtype {prompt.dtype}")
    num_tokens = _num_tokens(step_fn, carry, prompt[0])
    end_token = _inputs.optional_token("end_token", end_token, num_tokens)
    pad_token = _inputs.special_token("pad_token", pad_token, num_tokens)
    num_prompt = prompt.shape[0]
    if beam_size is not None:
        if prompt_length is not None:
            if _inputs.is_traced(prompt_length):
                raise TypeError(
                    "prompt_length must be a concrete int with beam_size, got a traced value"
                )
            if (
                not isinstance(prompt_length, (int, np.integer))
                or not 1 <= prompt_length <= num_prompt
            ):
                raise ValueError(
                    f"prompt_length must be an int in [1, P={num_prompt}], got {prompt_length!r}"
                )
            prompt, num_prompt = prompt[:prompt_length], int(prompt_length)
        _inputs.check_ids(prompt, num_tokens, "prompt")
        return _beam_continuation(
            step_fn, carry, prompt, max_length, beam_size, length_penalty, end_token, pad_token
        )
    valid = None if prompt_length is None else jnp.arange(num_prompt) < prompt_length
    _inputs.check_ids(prompt, num_tokens, "prompt", valid=valid)
    prompt_length = jnp.clip(num_prompt if prompt_length is None else prompt_length, 1, num_prompt)
    forced = jnp.zeros(max_length, jnp.int32).at[:num_prompt].set(prompt.astype(jnp.int32))
    num_steps = max_length - 1
    keys = (
        jnp.zeros((num_steps, 2), jnp.uint32)
        if key is None
        else jax.random.split(key, max(num_steps, 1))[:num_steps]
    )
    temperature = 1.0 if temperature is None else temperature

    def body(state, inputs):
        carry, token, done = state
        t, k = inputs
        new_carry, logits = step_fn(carry, token)
        picked = sample_token(
            logits, None if key is None else k, temperature=temperature, top_k=top_k, top_p=top_p
        )
        in_prompt = t + 1 < prompt_length
        next_token = jnp.where(done, pad_token, jnp.where(in_prompt, forced[t + 1], picked))
        new_carry = jax.tree.map(lambda n, o: n.astype(o.dtype), new_carry, carry)
        carry = padding.keep_carry(~done, new_carry, carry)
        emitted = ~done
        if end_token is not None:
            done = done | (~in_prompt & (next_token == end_token))
        return (carry, next_token.astype(jnp.int32), done), (next_token, emitted)

    first = forced[0]
    state = (carry, first, jnp.array(False))
    _, (tokens, emitted) = jax.lax.scan(body, state, (jnp.arange(num_steps), keys))
    tokens = jnp.concatenate([first[None], tokens.astype(jnp.int32)])
    return tokens, (1 + jnp.sum(emitted)).astype(jnp.int32)


def _beam_continuation(
    step_fn, carry, prompt, max_length, beam_size, length_penalty, end_token, pad_token
) -> tuple[Array, Array]:
    """Returns ``(tokens, length)``: the prompt, then the best beam from its last token."""
    prompt = prompt.astype(jnp.int32)
    num_prompt = prompt.shape[0]
    if num_prompt > 1:  # read all but the last prompt token, which the beams continue
        carry = jax.lax.scan(lambda c, t: (step_fn(c, t)[0], None), carry, prompt[:-1])[0]
    if num_prompt == max_length:
        return prompt, jnp.array(num_prompt, jnp.int32)
    history, _, lengths = beam_search(
        step_fn,
        carry,
        prompt[-1],
        beam_size=beam_size,
        max_length=max_length - num_prompt,
        length_penalty=length_penalty,
        end_token=end_token,
        pad_token=pad_token,
    )
    return jnp.concatenate([prompt, history[0]]), (num_prompt + lengths[0]).astype(jnp.int32)


def beam_search(
    step_fn: StepFn,
    carry: Any,
    token: Any,
    *,
    beam_size: int,
    max_length: int,
    length_penalty: float | None = None,
    end_token: int | None = None,
    pad_token: int = 0,
) -> tuple[Array, Array, Array]:
    """Returns ``(tokens: (beam_size, max_length), scores: (beam_size,), lengths: (beam_size,))``, best first.

    Beam search over continuations of ``token``: at each of ``max_length`` steps every beam
    is extended by every token, and the ``beam_size`` extensions with the highest score are
    kept (``jax.lax.top_k`` over ``beam_size * V`` candidates; one ``vmap`` of ``step_fn``
    over the beams). The score is ``log P(Y) = sum_t log p(y_t | y_<t)``, or with a
    ``length_penalty`` ``alpha`` that divided by Wu et al. 2016's ("Google's Neural Machine
    Translation System", eq. 14) ``lp(Y) = (5 + |Y|)^alpha / (5 + 1)^alpha``, ``|Y|`` the
    candidate's length: ``alpha = 0`` is no penalty, larger ``alpha`` favours longer
    sequences. A beam that emitted ``end_token`` is finished: its only extension is
    ``pad_token`` at no cost, so its score stays, and its carry is frozen. ``lengths`` count
    the tokens up to and including the end token; ``scores`` are the ranking scores.

    With ``beam_size=1`` this is greedy decoding: the kept extension is the argmax of the
    last logits (the order of ``log_softmax(logits) + score`` is that of ``logits``, every
    candidate has the same length, and ``top_k`` breaks ties toward the lower token as
    ``argmax`` does). With a larger beam the best score is usually, not provably, at least
    greedy's.

    Args:
      step_fn: ``step_fn(carry, token: () int32) -> (carry, logits: (V,))``.
      carry: the carry before ``token`` is read.
      token: the last given token (a start token, or a prompt's last token with ``carry``
        after the rest of the prompt), in ``[0, V)``: a concrete one outside raises
        ValueError; a traced one is passed to ``step_fn`` as it is (or raises under
        :func:`rnnjax.checked`).
      beam_size, max_length: static ints.
      length_penalty: ``alpha >= 0``, a float, or None for none.
      end_token, pad_token: concrete ints in ``[0, V)``.
    """
    checks.positive_int("beam_size", beam_size)
    checks.positive_int("max_length", max_length)
    if length_penalty is not None and (
        not isinstance(length_penalty, (int, float, np.floating, np.integer))
        or isinstance(length_penalty, bool)
        or not length_penalty >= 0
    ):
        raise ValueError(f"length_penalty must be a float >= 0 or None, got {length_penalty!r}")
    if jnp.ndim(token) != 0 or not jnp.issubdtype(jnp.result_type(token), jnp.integer):
        raise ValueError(
            f"token must be one integer token of shape (), got {jnp.result_type(token)} of "
            f"shape {jnp.shape(token)}"
        )
    num_tokens = _num_tokens(step_fn, carry, token)
    _inputs.check_ids(token, num_tokens, "token")
    end_token = _inputs.optional_token("end_token", end_token, num_tokens)
    pad_token = _inputs.special_token("pad_token", pad_token, num_tokens)
    token = jnp.asarray(token, jnp.int32)
    beams = lambda tree: jax.tree.map(
        lambda a: jnp.broadcast_to(a, (beam_size,) + jnp.shape(a)), tree
    )
    # Only beam 0 is alive at first, so the first step does not keep beam_size copies of one.
    scores = jnp.full(beam_size, -jnp.inf).at[0].set(0.0)
    pad_only = jnp.where(jnp.arange(num_tokens) == pad_token, 0.0, -jnp.inf)

    def penalty(length):
        return ((5.0 + length) / 6.0) ** length_penalty

    def body(state, t):
        carries, last, scores, done, history, lengths = state
        new_carries, logits = jax.vmap(step_fn)(carries, last)
        log_probs = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
        log_probs = jnp.where(done[:, None], pad_only, log_probs)
        total = (scores[:, None] + log_probs).reshape(-1)
        if length_penalty is None:
            scores, index = jax.lax.top_k(total, beam_size)
        else:  # rank by log P / lp(|Y|); a finished beam keeps its length
            candidate_length = jnp.repeat(lengths + (~done).astype(jnp.int32), num_tokens)
            _, index = jax.lax.top_k(total / penalty(candidate_length), beam_size)
            scores = total[index]
        parent, next_token = index // num_tokens, (index % num_tokens).astype(jnp.int32)
        was_done = done[parent]
        new_carries = jax.tree.map(lambda n, o: n.astype(o.dtype), new_carries, carries)
        carries = jax.tree.map(
            lambda n, o: jnp.where(
                was_done.reshape((-1,) + (1,) * (n.ndim - 1)), o[parent], n[parent]
            ),
            new_carries,
            carries,
        )
        history = history[parent].at[:, t].set(next_token)
        lengths = lengths[parent] + (~was_done).astype(jnp.int32)
        done = was_done if end_token is None else was_done | (next_token == end_token)
        return (carries, next_token, scores, done, history, lengths), None

    state = (
        beams(carry),
        beams(token),
        scores,
        jnp.zeros(beam_size, bool),
        jnp.full((beam_size, max_length), pad_token, jnp.int32),
        jnp.zeros(beam_size, jnp.int32),
    )
    (_, _, scores, _, history, lengths), _ = jax.lax.scan(body, state, jnp.arange(max_length))
    if length_penalty is not None:
        scores = scores / penalty(lengths)
    return history, scores, lengths


def sequence_log_prob(
    step_fn: StepFn, carry: Any, token: Any, continuation: Array, length: Any = None
) -> Array:
    """Returns ``sum_t log p(continuation[t] | token, continuation[:t])`` over ``t < length``, a scalar.

    The score :func:`beam_search` ranks by without a length penalty, computed by teacher
    forcing (one scan over ``continuation: (T,)``). Ids are checked as :func:`beam_search`
    checks ``token`` (``continuation`` at its valid steps only).
    """
    num_tokens = _num_tokens(step_fn, carry, token)
    _inputs.check_ids(token, num_tokens, "token")
    valid = None if length is None else padding.valid_steps(jnp.shape(continuation)[0], length)
    _inputs.check_ids(continuation, num_tokens, "continuation", valid=valid)
    continuation = jnp.asarray(continuation, jnp.int32)
    previous = jnp.concatenate([jnp.asarray(token, jnp.int32)[None], continuation[:-1]])

    def body(carry, inputs):
        carry, logits = step_fn(carry, inputs[0])
        return carry, jax.nn.log_softmax(logits.astype(jnp.float32))[inputs[1]]

    _, log_probs = jax.lax.scan(body, carry, (previous, continuation))
    if length is None:
        return jnp.sum(log_probs)
    return jnp.sum(jnp.where(padding.valid_steps(continuation.shape[0], length), log_probs, 0.0))


# ------------------------------------------------------------------------------------ CTC


def ctc_greedy(logits: Array, length: Any = None, *, blank: int = 0) -> tuple[Array, Array]:
    """Returns ``(labels: (T,) int32, num_labels: () int32)``: CTC best-path decoding.

    The most probable path (the argmax at every frame ``t < length``) with repeats merged
    and blanks removed (Graves et al. 2006, "Connectionist Temporal Classification", sec.
    3.2, best path decoding); ``labels[num_labels:]`` hold ``blank``. ``logits: (T, K)``.
    Runs under ``jit``/``vmap``.
    """
    logits = jnp.asarray(logits)
    num_frames = logits.shape[0]
    path = jnp.argmax(logits, axis=-1).astype(jnp.int32)
    valid = (
        jnp.ones(num_frames, bool) if length is None else padding.valid_steps(num_frames, length)
    )
    previous = jnp.concatenate([jnp.full((1,), blank, jnp.int32), path[:-1]])
    keep = valid & (path != blank) & ((path != previous) | (jnp.arange(num_frames) == 0))
    position = jnp.where(keep, jnp.cumsum(keep) - 1, num_frames)  # past the end: dropped
    labels = jnp.full(num_frames, blank, jnp.int32).at[position].set(path, mode="drop")
    return labels, jnp.sum(keep).astype(jnp.int32)


def ctc_prefix_beam_search(
    log_probs: np.ndarray, *, beam_size: int, blank: int = 0
) -> list[tuple[tuple[int, ...], float]]:
    """Returns the ``beam_size`` most probable labellings found, ``[(labels, log_prob), ...]``, best first.

    CTC prefix beam search (Graves 2012, "Supervised Sequence Labelling with Recurrent Neural
    Networks", sec. 7.5; Hannun et al. 2014): each prefix keeps the probability of all paths
    collapsing to it that end in a blank and that end in its last label, summed over paths,
    so unlike best-path decoding it ranks labellings, not paths. Runs on the host in NumPy
    (the set of prefixes changes size); ``log_probs: (T, K)`` are per-frame log-probabilities
    of one sequence's valid frames. With a beam at least ``K ** T`` it is exact.
    """
    checks.positive_int("beam_size", beam_size)
    log_probs = np.asarray(log_probs, np.float64)
    # prefix -> (log P(paths ending in blank), log P(paths ending in the prefix's last label))
    beams: dict[tuple[int, ...], tuple[float, float]] = {(): (0.0, -np.inf)}
    for frame in log_probs:
        new: dict[tuple[int, ...], tuple[float, float]] = {}

        def add(prefix, blank_end, label_end, new=new):
            b, nb = new.get(prefix, (-np.inf, -np.inf))
            new[prefix] = (np.logaddexp(b, blank_end), np.logaddexp(nb, label_end))

        for prefix, (b, nb) in beams.items():
            total = np.logaddexp(b, nb)
            add(prefix, total + frame[blank], -np.inf)
            for k in range(len(frame)):
                if k == blank:
                    continue
                if prefix and prefix[-1] == k:
                    add(prefix, -np.inf, nb + frame[k])  # a repeat merges unless a blank split it
                    add(prefix + (k,), -np.inf, b + frame[k])
                else:
                    add(prefix + (k,), -np.inf, total + frame[k])
        ranked = sorted(
            ((p, v) for p, v in new.items() if np.logaddexp(*v) > -np.inf),
            key=lambda kv: -np.logaddexp(*kv[1]),
        )
        beams = dict(ranked[:beam_size])
    return [
        (prefix, float(np.logaddexp(b, nb)))
        for prefix, (b, nb) in sorted(beams.items(), key=lambda kv: -np.logaddexp(*kv[1]))
    ]


__all__ = [
    "beam_search",
    "ctc_greedy",
    "ctc_prefix_beam_search",
    "filter_logits",
    "generate",
    "sample_token",
    "sequence_log_prob",
]
