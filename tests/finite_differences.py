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
