"""Gradients against central finite differences (run it in float64: ``jax.enable_x64``)."""

import jax
import jax.flatten_util
import numpy as np


def assert_gradient_matches(loss, params, *, eps=1e-6, rtol=1e-6, atol=1e-8):
    """Asserts ``jax.grad(loss)(params)`` equals central differences of ``loss``, entry by entry."""
    grads = jax.grad(loss)(params)
    flat, unravel = jax.flatten_util.ravel_pytree(params)
    fd = [
        (loss(unravel(flat + eps * e)) - loss(unravel(flat - eps * e))) / (2 * eps)
        for e in np.eye(flat.size)
    ]
    np.testing.assert_allclose(jax.flatten_util.ravel_pytree(grads)[0], fd, rtol=rtol, atol=atol)


def assert_layer_gradients_match(layer, input_size=2):
    """Asserts :func:`assert_gradient_matches` for a loss of ``layer``, in float64.

    A vmapped batch of two sequences of 5 steps with lengths 5 and 3, every parameter random
    (``random_params``); the loss reads every output and every leaf of the final carry.
    """
    import jax.numpy as jnp
    from random_params import random_params

    with jax.enable_x64(True):
        params = jax.tree.map(
            lambda a: a.astype(jnp.float64), random_params(layer, jax.random.key(0), input_size)
        )
        xs = jax.random.normal(jax.random.key(1), (2, 5, input_size), jnp.float64)
        lengths = jnp.array([5, 3])

        @jax.jit
        def loss(p):
            final, ys = jax.vmap(lambda x, n: layer.apply(p, x, length=n))(xs, lengths)
            return jnp.sum(jnp.sin(ys)) + sum(jnp.sum(f**2) for f in jax.tree.leaves(final))

        assert_gradient_matches(loss, params)
