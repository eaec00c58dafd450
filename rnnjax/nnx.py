"""``flax.nnx`` modules over the pure cells, layers, readouts and models.

Each module holds one rnnjax record (static) and its pure parameter tree in
``module.params``, the same tree the record's ``init`` returns with every array wrapped
in ``nnx.Param``; :meth:`pure_params` unwraps it and :meth:`load_pure` writes a pure tree
back, so params move between the two styles unchanged (``nnx.state`` shows a list as a
dict with int keys, as it shows any list). Calls take any number of leading batch axes and
``jax.vmap`` the pure functions over them. Randomness is explicit: dropout takes a
``key`` argument.
"""

from rnnjax._src.nnx import RNN, Model

__all__ = ["RNN", "Model"]
