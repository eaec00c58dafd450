"""Jitted ``init`` of every layer and model kind, called many times: the programs that deadlocked.

On JAX 0.10, XLA:CPU runs the batch of a batched LAPACK kernel on its intra-op thread pool,
and two such kernels running at once can starve each other of that pool forever (issue 26):
``jax.jit(init)`` of any model holding two or more cells hung on a 2-core machine when the
orthogonal initialiser called LAPACK's QR. tests/test_no_hang.py runs this file in child
processes with a timeout, under XLA's default flags, as a user's program runs.

    python tests/init_programs.py [--calls N] [NAME ...]

prints ``NAME ok SECONDS`` for each program after ``N`` calls with fresh keys.
"""

from __future__ import annotations

import argparse
import sys
import time

import jax
import jax.numpy as jnp

import rnnjax

H = 64  # the size of the report that found the hang


def _bidirectional_stack():
    return rnnjax.stack(rnnjax.bidirectional(rnnjax.lstm(H)), rnnjax.bidirectional(rnnjax.lstm(H)))


def stack_init():
    layer = _bidirectional_stack()
    return jax.jit(layer.init, static_argnums=1), lambda key: (key, 16)


def seeds_vmapped_init():
    layer = _bidirectional_stack()
    init = jax.jit(jax.vmap(layer.init, in_axes=(0, None)), static_argnums=1)
    return init, lambda key: (jax.random.split(key, 8), 16)


def _encoder_decoder_init(cell, attention):
    model = rnnjax.encoder_decoder(
        rnnjax.bidirectional(cell(H)),
        cell(H),
        40,
        start_token=1,
        end_token=2,
        pad_token=0,
        source_vocab_size=30,
        attention=attention,
    )
    return jax.jit(model.init), lambda key: (key,)


def translation_init():
    # The model of experiments/translation.py with Luong attention, where make apps hung.
    return _encoder_decoder_init(rnnjax.lstm, "luong")


def bahdanau_init():
    return _encoder_decoder_init(rnnjax.gru, "bahdanau")


def language_model_init():
    model = rnnjax.language_model(
        rnnjax.stack(rnnjax.recurrent(rnnjax.lstm(H)), rnnjax.recurrent(rnnjax.gru(H))), 50
    )
    return jax.jit(model.init), lambda key: (key,)


def one_to_many_init():
    model = rnnjax.one_to_many(rnnjax.lstm(H), 20, start_token=1, end_token=2)
    return jax.jit(model.init, static_argnums=1), lambda key: (key, 12)


def many_to_one_init():
    model = rnnjax.many_to_one(_bidirectional_stack(), rnnjax.readouts.linear(3))
    return jax.jit(model.init, static_argnums=1), lambda key: (key, 16)


PROGRAMS = {
    "stack": stack_init,
    "seeds_vmapped": seeds_vmapped_init,
    "translation": translation_init,
    "bahdanau": bahdanau_init,
    "language_model": language_model_init,
    "one_to_many": one_to_many_init,
    "many_to_one": many_to_one_init,
}


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=100)
    parser.add_argument("names", nargs="*", default=list(PROGRAMS))
    args = parser.parse_args(argv)
    for name in args.names:
        start = time.perf_counter()
        init, arguments = PROGRAMS[name]()
        for i in range(args.calls):
            jax.block_until_ready(init(*arguments(jax.random.key(i))))
        print(f"{name} ok {time.perf_counter() - start:.2f}", flush=True)
    # Read back one leaf so a program that returns garbage cannot pass silently.
    assert bool(jnp.isfinite(jax.tree.leaves(init(*arguments(jax.random.key(0))))[0]).all())


if __name__ == "__main__":
    main(sys.argv[1:])
