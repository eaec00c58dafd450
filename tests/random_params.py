"""Random cell parameters for tests: every entry random, biases included."""

import jax


def random_params(cell, key, input_size, *, scale=0.5):
    """Returns ``cell``'s params with every entry random, so no term hides behind a zero."""
    params = cell.init(key, input_size)
    leaves, treedef = jax.tree.flatten(params)
    keys = jax.random.split(jax.random.fold_in(key, 7), len(leaves))
    return jax.tree.unflatten(
        treedef, [scale * jax.random.normal(k, a.shape) for k, a in zip(keys, leaves)]
    )
