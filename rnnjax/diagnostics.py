"""Gradient-flow diagnostics: backpropagation through time made measurable.

One API for a model and for a cell. Each function takes a scalar loss of one example and
its arguments, ``fn, *args`` (any rnnjax layer, model or Flax module inside; batch with
``jax.vmap``), and reports every recurrent loop inside it, labelled by where it sits
(``"rnn/0/forward"``, ``"decoder/cell/h"``); the functions of loops also take one cell,
``cell, params, xs``, and report its one loop:

* :func:`gradient_flow`: dL/d(state_t) of every loop; :func:`gradient_flow_hook` records it
  during :func:`rnnjax.fit`;
* :func:`gradient_by_lag`: the parameter gradient decomposed by time lag (Pascanu, Mikolov &
  Bengio 2013, eqs. 3-5), its norms; :func:`lag_gradients` (one cell): the components;
* :func:`jacobian_norms`: ||d state_last / d state_t||; :func:`lyapunov_spectrum`: the
  Lyapunov exponents of the input-driven loop;
* :func:`state_gradients` (and its norms, :func:`state_gradient_norms`): dL/d(state_t) of one
  cell for a loss of its final carry and outputs; :func:`step_jacobians`: d(state_t)/d(state_{t-1}), and
  :func:`final_state_jacobians`: their products d(state_last)/d(state_t);
* :func:`singular_values`, :func:`spectral_radius` and :func:`pascanu_bound` of matrices and
  Elman weights.

The *state* of a cell is its whole carry flattened with ``jax.flatten_util.ravel_pytree``
(for an LSTM: ``h`` then ``c``), a vector of size ``n``; :func:`gradient_flow` reports
a carry of several leaves leaf by leaf (``.../h``, ``.../c``). ``state_t`` is the carry that
step ``t`` hands to step ``t + 1`` (0-based: ``state_0`` is the carry after reading
``xs[0]``, ``state_{T-1}`` is the final carry). Every function acts on ONE sequence
``xs: (T, input_size)``, works for any :class:`rnnjax.Cell` (including ones written by
users), under ``jax.jit``, and batches with ``jax.vmap`` (a per-example ``length``
included). Padding follows :func:`rnnjax.scan`: steps ``t >= length`` leave the carry
unchanged, so they carry no gradient and their step Jacobian is the identity.
"""

from rnnjax._src.diagnostics import (
    gradient_flow,
    gradient_flow_hook,
    state_gradient_norms,
    state_gradients,
)
from rnnjax._src.lags import gradient_by_lag, lag_gradients
from rnnjax._src.spectra import (
    final_state_jacobians,
    jacobian_norms,
    lyapunov_spectrum,
    pascanu_bound,
    singular_values,
    spectral_radius,
    step_jacobians,
)

__all__ = [
    "final_state_jacobians",
    "gradient_by_lag",
    "gradient_flow",
    "gradient_flow_hook",
    "jacobian_norms",
    "lag_gradients",
    "lyapunov_spectrum",
    "pascanu_bound",
    "singular_values",
    "spectral_radius",
    "state_gradient_norms",
    "state_gradients",
    "step_jacobians",
]
