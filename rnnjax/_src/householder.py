"""QR decomposition by Householder reflections, written in ``jax.numpy``: no LAPACK call.

Why the library has its own: since JAX 0.10, XLA:CPU runs the batch of a batched LAPACK
kernel (``geqrf``/``orgqr`` behind ``jnp.linalg.qr``) on the intra-op thread pool, and two
such kernels running at the same time can each wait for work queued behind the other, on a
pool they both occupy: the program deadlocks (on a 2-core machine within a few calls). The
orthogonal initialiser of every gate of every cell is such a kernel under ``vmap``, so the
jitted ``init`` of a bidirectional layer, a stack or an encoder-decoder could hang. This QR
is made of matrix products and element-wise operations only, which XLA schedules safely, and
costs nothing at the sizes of recurrent weight matrices (n steps of O(mn) work).

Golub & Van Loan, *Matrix Computations* (4th ed.), Algorithm 5.2.1, with the sign of each
Householder vector chosen against cancellation and R's diagonal made positive at the end, so
Q is the unique factor that ``jnp.linalg.qr`` followed by the same sign fix gives.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import Array

__all__ = ["qr", "random_orthogonal"]

# Full float32 products on every backend: TPUs and GPUs otherwise round float32 matmuls
# through bfloat16/TF32, and Q would be orthogonal only to about 1e-3.
_HIGHEST = jax.lax.Precision.HIGHEST


def qr(a: Array) -> tuple[Array, Array]:
    """Returns ``(q, r)``, the reduced QR decomposition of ``a`` with ``diag(r) >= 0``.

    Args:
      a: ``(..., m, n)`` with ``m >= n``; leading axes are batch axes.

    Returns:
      ``q``: ``(..., m, n)`` with orthonormal columns; ``r``: ``(..., n, n)`` upper
      triangular with a non-negative diagonal; ``q @ r == a``.
    """
    m, n = a.shape[-2:]
    if m < n:
        raise ValueError(f"qr needs a (..., m, n) array with m >= n, got shape {a.shape}")
    if a.ndim > 2:
        flat = a.reshape((-1, m, n))
        q, r = jax.vmap(qr)(flat)
        return q.reshape(a.shape), r.reshape((*a.shape[:-2], n, n))
    rows = jnp.arange(m)

    def reflect(k, state):
        # H_k = I - 2 v v^T maps column k of the rows k.. onto alpha e_k; it leaves rows < k
        # (and so the columns already reduced) alone.
        r, vs = state
        x = jnp.where(rows >= k, r[:, k], 0.0)
        alpha = -jnp.where(x[k] >= 0, 1.0, -1.0) * jnp.linalg.norm(x)
        v = x.at[k].add(-alpha)
        norm = jnp.linalg.norm(v)
        v = jnp.where(norm > 0, v / jnp.where(norm > 0, norm, 1.0), 0.0)
        r = r - 2.0 * jnp.outer(v, jnp.matmul(v, r, precision=_HIGHEST))
        return r, vs.at[k].set(v)

    def accumulate(i, q):
        # Q = H_0 H_1 ... H_{n-1} [I_n; 0], applied right to left.
        v = vs[n - 1 - i]
        return q - 2.0 * jnp.outer(v, jnp.matmul(v, q, precision=_HIGHEST))

    r, vs = jax.lax.fori_loop(0, n, reflect, (a, jnp.zeros((n, m), a.dtype)))
    q = jax.lax.fori_loop(0, n, accumulate, jnp.eye(m, n, dtype=a.dtype))
    r = jnp.triu(r[:n])
    sign = jnp.where(jnp.diagonal(r) < 0, -1.0, 1.0).astype(a.dtype)
    return q * sign, r * sign[:, None]


def random_orthogonal(key: Array, n: int, m: int, dtype=jnp.float32) -> Array:
    """Returns an ``(n, m)`` matrix drawn from the Haar measure: orthonormal columns (n >= m) or rows.

    Mezzadri (2007), "How to generate random matrices from the classical compact groups":
    the Q factor of a Gaussian matrix, with R's diagonal made positive, is Haar distributed.
    Same normal draw and the same Q as ``jax.random.orthogonal(key, n, (), dtype, m)``.
    """
    z = jax.random.normal(key, (max(n, m), min(n, m)), dtype)
    q, _ = qr(z)
    return q.T if n < m else q
