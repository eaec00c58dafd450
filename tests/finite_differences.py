"""Gradients of a layer against central finite differences, in float64."""

import jax
import jax.flatten_util
import jax.numpy as jnp
import numpy as np
from random_params import random_params


def assert_layer_gradients_match(layer, input_size=2, *, eps=1e-6):
    """Asserts that ``jax.grad`` of a loss of ``layer`` equals central finite differences.

    In float64, over a vmapped batch of two sequences of 5 steps with lengths 5 and 3, every
    parameter random (``random_params``); the loss reads every output and final carry leaf.
    """
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

        grads = jax.flatten_util.ravel_pytree(jax.grad(loss)(params))[0]
        flat, unravel = jax.flatten_util.ravel_pytree(params)
        fd = [
            (loss(unravel(flat + eps * e)) - loss(unravel(flat - eps * e))) / (2 * eps)
            for e in np.eye(flat.size)
        ]
        np.testing.assert_allclose(grads, fd, rtol=1e-6, atol=1e-8)
