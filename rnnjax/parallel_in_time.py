"""Parallel evaluation over time: linear recurrences by associative scan, any cell by Newton.

1. **Linear recurrences.** ``h_t = a_t h_{t-1} + b_t`` composes as the maps ``h -> a h + b``
   do: applying ``(a1, b1)`` then ``(a2, b2)`` is ``(a2 a1, a2 b1 + b2)``, an associative
   operator, so ``jax.lax.associative_scan`` computes every ``h_t`` in O(log T) depth
   (Blelloch 1990; Martin & Cundy 2018). This is the whole forward pass of the cells linear
   in their state (:func:`rnnjax.lru`, :func:`rnnjax.mingru`, :func:`rnnjax.minlstm`,
   :func:`rnnjax.rg_lru`, :func:`rnnjax.selective_ssm`, and the :func:`rnnjax.mlstm`, whose
   exponential gates are scanned in a stabilised form), and the inner solve of:
2. **Newton's method over the whole trajectory** (DEER: Lim et al. 2024, "Parallelizing
   non-linear sequential models over the sequence length"). The states ``s_1..s_T`` of ANY
   cell solve the T equations ``s_t = f(s_{t-1}, x_t)``. Linearising ``f`` around a guess
   ``s^k`` gives ``s_t = J_t s_{t-1} + f(s^k_{t-1}, x_t) - J_t s^k_{t-1}``, a linear
   recurrence solved by (1); iterating is Newton's method, which makes at least one more
   step exact per iteration. Variants, as in Gonzalez et al. 2024 ("Towards scalable and
   stable parallelization of nonlinear RNNs"):

   * ``"deer"``: the dense Jacobian ``J_t`` (memory O(T n²), work O(T n³));
   * ``"quasi-deer"``: its diagonal only (memory O(T n)); the iteration converges to the
     same trajectory, in more iterations;
   * ``"elk"``: quasi-DEER with Levenberg–Marquardt damping, computed as a Kalman filter
     whose observations are the previous iterate (their quasi-ELK; ``damping`` is their λ).
     With ``damping >= 1/4`` the damped recurrence has coefficients of modulus <= 1, so it
     cannot overflow where undamped Newton, on a chaotic cell, does.

   Convergence is measured on the trajectory returned: the residual
   ``max_t |s_t - f(s_{t-1}, x_t)| / (1 + |f(s_{t-1}, x_t)|)`` must be ``<= tol``. A run that
   does not get there says so (the report of :func:`evaluate`) and, by the user's choice,
   raises or falls back to the sequential scan: never a silently wrong answer. Gradients are exact: the
   backward pass of the fixed point is the linear recurrence
   ``λ_t = ∂L/∂s_t + J_{t+1}^T λ_{t+1}``, solved by the same scan (a custom VJP).

Every function here acts on ONE sequence; batch with ``jax.vmap``. Padding is
:mod:`rnnjax.padding`'s: a padded step is the identity map (``a = 1, b = 0``), so the final
carry is the carry after the last valid step.
"""

from rnnjax._src.parallel_in_time import METHODS, Newton, evaluate

__all__ = ["METHODS", "Newton", "evaluate"]
