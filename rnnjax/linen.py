"""``flax.linen`` modules over the pure cells, layers, readouts and models.

Each module holds one rnnjax record (a :class:`rnnjax.Cell`, :class:`rnnjax.Layer`,
a readout of :mod:`rnnjax.readouts`, ...) and calls its pure functions; nothing is computed
twice. Parameters are the pure parameter tree itself: a module's ``variables["params"]``
IS the dict that the record's ``init`` returns (``{"w_ih", "w_hh", "b_ih", "b_hh"}`` for
a cell, ``{"forward", "backward"}`` for a bidirectional layer, ``{"rnn", "readout"}`` for
a model), so params move between the two styles unchanged. Flax parameters must be a dict
of names, so a record whose pure params are a list (``stack``, ``mlp``) keeps that list
under the one name ``"layers"``.

Unlike the pure records, which act on one example, the modules take any number of leading
batch axes (the Flax convention) and ``jax.vmap`` over them. Use them inside your own
``nn.Module`` like any Flax layer; :class:`RNNCell` also runs inside ``flax.linen.RNN``.
Dropout (``stack(..., dropout=p)``) draws from the ``"dropout"`` rng stream when
``train=True``.
"""

from rnnjax._src.linen import RNN, Model, RNNCell, from_pure, to_pure

__all__ = ["RNN", "Model", "RNNCell", "from_pure", "to_pure"]
