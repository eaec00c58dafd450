"""Every path a cell's step can be run through, as a scalar loss over one padded batch.

``paths(cell)`` maps a name to ``(init, loss)``: ``init(key) -> params`` and
``loss(params, xs, lengths) -> scalar`` with ``xs: (B, T, I)`` and ``lengths: (B,)``. The loss
reads every output and final carry of the path (through ``sin``/``cos``, so that no term
hides behind a symmetry). Tests compare these losses and their gradients between the fast
path and the reference (``reference_only``), and between clean and dirty padding.
"""

import contextlib
import importlib

import jax
import jax.numpy as jnp

import rnnjax
from rnnjax import readouts, training

I = 3  # input features
VOCAB = 5


def _read(final, ys):
    # The carry of an LRU is complex: both parts are read (for a real carry, sin(0) = 0).
    return jnp.sum(jnp.sin(ys)) + sum(
        jnp.sum(jnp.cos(jnp.real(a)) + jnp.sin(jnp.imag(a))) for a in jax.tree.leaves(final)
    )


def _layer_path(layer):
    def loss(p, xs, lengths):
        return sum(jax.vmap(lambda x, n: _read(*layer.apply(p, x, length=n)))(xs, lengths))

    return (lambda k: layer.init(k, I)), loss


def _model_path(model):
    def loss(p, xs, lengths):
        return jnp.sum(jnp.sin(jax.vmap(lambda x, n: model.apply(p, x, length=n))(xs, lengths)))

    return (lambda k: model.init(k, I)), loss


def paths(cell, *, generators=True, flax_modules=True, impl="auto"):
    """Returns ``{name: (init, loss)}`` for every layer, model and module built on ``cell``.

    ``impl`` is every layer's (the decoders of the generators always run ``impl="auto"``).
    """
    recurrent = lambda reverse=False, **kw: rnnjax.recurrent(cell, reverse, impl=impl, **kw)
    bidirectional = lambda: rnnjax.bidirectional(cell, impl=impl)
    out = {
        "scan": (
            lambda k: cell.init(k, I),
            lambda p, xs, lengths: sum(
                jax.vmap(lambda x, n: _read(*rnnjax.scan(cell, p, x, length=n)))(xs, lengths)
            ),
        ),
        "recurrent": _layer_path(recurrent()),
        "recurrent-reverse-remat": _layer_path(recurrent(True, remat=2)),
        "bidirectional": _layer_path(bidirectional()),
        "stack": _layer_path(rnnjax.stack(recurrent(), bidirectional())),
        "many_to_one": _model_path(
            rnnjax.many_to_one(bidirectional(), readouts.linear(2), pool="mean")
        ),
        "many_to_many": _model_path(rnnjax.many_to_many(recurrent(), readouts.linear(2))),
    }
    if generators:
        targets = jnp.array([3, 1, 4, 2])
        gen = rnnjax.one_to_many(cell, VOCAB, start_token=1, end_token=2)
        out["one_to_many"] = (
            lambda k: gen.init(k, I),
            lambda p, xs, lengths: jnp.sum(
                jnp.sin(jax.vmap(lambda x: gen.apply(p, x[0], targets))(xs))
            ),
        )
        seq2seq = rnnjax.encoder_decoder(
            rnnjax.bidirectional(cell), cell, VOCAB, start_token=1, end_token=2
        )
        out["encoder_decoder"] = (
            lambda k: seq2seq.init(k, I),
            lambda p, xs, lengths: jnp.sum(
                jnp.sin(
                    jax.vmap(lambda x, n: seq2seq.apply(p, x, targets, source_length=n))(
                        xs, lengths
                    )
                )
            ),
        )
    if flax_modules:
        out["linen"] = _linen_path(cell, impl)
        out["nnx"] = _nnx_path(cell, impl)
    return out


def _linen_path(cell, impl):
    from rnnjax import linen

    layer = rnnjax.bidirectional(cell, impl=impl)
    module = linen.RNN(layer, return_carry=True)

    def loss(p, xs, lengths):
        final, ys = module.apply({"params": linen.from_pure(p)}, xs, seq_lengths=lengths)
        return _read(final, ys)

    return (lambda k: layer.init(k, I)), loss


def _nnx_path(cell, impl):
    from flax import nnx

    from rnnjax import nnx as rnx

    layer = rnnjax.stack(
        rnnjax.recurrent(cell, impl=impl), rnnjax.recurrent(cell, reverse=True, impl=impl)
    )

    def loss(p, xs, lengths):
        module = rnx.RNN(layer, I, rngs=nnx.Rngs(0), return_carry=True)
        module.load_pure(p)
        return _read(*module(xs, lengths))

    return (lambda k: layer.init(k, I)), loss


def fit_one_step(cell, params_key, xs, lengths, impl="auto"):
    """Returns the params after one ``rnnjax.fit`` step of SGD on a many-to-one classifier."""
    import optax

    model = rnnjax.many_to_one(
        rnnjax.stack(rnnjax.bidirectional(cell, impl=impl), rnnjax.recurrent(cell, impl=impl)),
        readouts.linear(2),
    )
    params = model.init(params_key, I)
    labels = jnp.arange(xs.shape[0]) % 2

    def loss_fn(p, batch, key):
        x, n, y = batch
        logits = jax.vmap(lambda a, m: model.apply(p, a, length=m))(x, n)
        return rnnjax.losses.masked_cross_entropy(logits, y), {}

    optimizer = optax.sgd(0.5)
    state = training.init_train_state(jax.random.key(0), params, optimizer)
    step = training.make_train_step(loss_fn, optimizer)
    result = training.fit(step, state, lambda key, s: (xs, lengths, labels), 1, progress=False)
    return result.state.params


def values_and_gradients(chosen, xs, lengths, params):
    """Returns ``{name: (loss, (d params, d xs))}`` of the chosen ``paths`` entries, in one jit."""

    def all_paths(params, xs):
        return {
            name: jax.value_and_grad(chosen[name][1], argnums=(0, 1))(params[name], xs, lengths)
            for name in chosen
        }

    return jax.jit(all_paths)(params, xs)


@contextlib.contextmanager
def reference_only():
    """Within it, every layer, model and module runs ``cell.step`` in ``lax.scan``, the loop
    of ``rnnjax.reference_scan`` (``impl="auto"``: neither the fast path nor the associative
    scan), by replacing the one function that picks the loop."""
    loop = importlib.import_module("rnnjax._src.scan")
    original = loop._path
    loop._path = lambda cell, impl: "reference"
    try:
        yield
    finally:
        loop._path = original


def assert_impl_equals_reference(cell, names, *, impl="parallel", batch=3, steps=6, fit=False):
    """Asserts that the paths ``names`` with layers on ``impl`` equal the reference, to 1e-5.

    On a vmapped batch with lengths ``steps``, 2 and 0 (then ``steps`` again) whose padding
    is NaN, values and gradients (params and inputs) of every loss of :func:`paths`; the
    reference is ``cell.step`` in ``lax.scan`` everywhere (:func:`reference_only`: the
    generators' decoders too) with zero padding. With ``fit``, also the params after one
    ``rnnjax.fit`` step (:func:`fit_one_step`).
    """
    import numpy as np

    if impl == "parallel":
        assert rnnjax.scan_path(cell, "parallel") == "parallel"
        assert rnnjax.scan_path(cell) == "reference"  # "auto": the scan was not measured faster
    chosen = {k: v for k, v in paths(cell, impl=impl).items() if k in names}
    reference = {k: v for k, v in paths(cell, impl="reference").items() if k in names}
    assert set(chosen) == set(names) - {"fit"}, "unknown path names"
    params = {
        k: jax.tree.map(
            lambda a: a + 0.2 * jax.random.normal(jax.random.key(4), a.shape),
            init(jax.random.key(3)),
        )  # nonzero biases
        for k, (init, _) in chosen.items()
    }
    xs = jax.random.normal(jax.random.key(5), (batch, steps, I))
    lengths = jnp.array([(steps, 2, 0)[i % 3] for i in range(batch)], jnp.int32)
    dirty = jnp.where(jnp.arange(steps)[None, :, None] < lengths[:, None, None], xs, jnp.nan)

    got = values_and_gradients(chosen, dirty, lengths, params)
    with reference_only():
        clean = jnp.where(jnp.isnan(dirty), 0.0, dirty)
        want = values_and_gradients(reference, clean, lengths, params)
    for path in chosen:
        for a, b in zip(jax.tree.leaves(got[path]), jax.tree.leaves(want[path]), strict=True):
            assert np.all(np.isfinite(a)), path
            np.testing.assert_allclose(
                np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-5, err_msg=path
            )
    if not fit:
        return
    got = fit_one_step(cell, jax.random.key(6), xs, lengths, impl=impl)
    with reference_only():
        want = fit_one_step(cell, jax.random.key(6), xs, lengths, impl="auto")
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-5)


def assert_both_loops_give(cell, params, xs, carry, want, *, atol):
    """Asserts that ``rnnjax.scan`` of one sequence gives ``want = (final, ys)`` (rtol 1e-5,
    ``atol``) on the reference loop and on the associative scan, both jitted."""
    import numpy as np

    for impl in ("reference", "parallel"):
        run = jax.jit(lambda p, x, c: rnnjax.scan(cell, p, x, carry=c, impl=impl))
        final, ys = run(params, xs, jnp.asarray(carry))
        np.testing.assert_allclose(final, want[0], rtol=1e-5, atol=atol, err_msg=impl)
        np.testing.assert_allclose(ys, want[1], rtol=1e-5, atol=atol, err_msg=impl)
