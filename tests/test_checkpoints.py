"""rnnjax.checkpoints: parameters alone round-trip bitwise; a mismatched template names what differs."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import rnnjax
from rnnjax import training
from rnnjax._src import checkpoints


def assert_bitwise_equal(restored, original):
    """Same tree structure, and each leaf the same dtype, shape and bytes."""
    assert jax.tree.structure(restored) == jax.tree.structure(original)
    for got, want in zip(jax.tree.leaves(restored), jax.tree.leaves(original), strict=True):
        got, want = np.asarray(got), np.asarray(want)
        assert (got.dtype, got.shape) == (want.dtype, want.shape)
        assert got.tobytes() == want.tobytes()


def params_of_every_kind():
    rng = np.random.default_rng(0)
    return {
        "rnn": rnnjax.lstm(4).init(jax.random.key(0), 3),
        "bf16": jnp.asarray(rng.normal(size=5), jnp.bfloat16),
        "int8": np.arange(-3, 3, dtype=np.int8),
        "uint32": jnp.arange(4, dtype=jnp.uint32),
        "bool": jnp.array([True, False]),
        "special": jnp.array([np.nan, -np.inf, np.inf, -0.0]),
        "tuple": (jnp.ones(1), jnp.full((1, 2), 3.0)),
    }


def test_params_round_trip_bitwise(tmp_path):
    params = params_of_every_kind()
    path = checkpoints.save_params(tmp_path / "p", params)
    assert path == str(tmp_path / "p")
    # With a template: its structure (the tuple stays a tuple); without: dicts and lists.
    assert_bitwise_equal(checkpoints.load_params(path, like=params), params)
    untyped = checkpoints.load_params(path)
    assert isinstance(untyped["tuple"], list)
    assert_bitwise_equal(untyped, {**params, "tuple": list(params["tuple"])})
    # A template of shapes and dtypes alone is enough.
    abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(np.shape(x), x.dtype), params)
    assert_bitwise_equal(checkpoints.load_params(path, like=abstract), params)


def test_params_round_trip_float64(tmp_path):
    with jax.enable_x64(True):
        params = {"w": jnp.asarray(np.random.default_rng(1).normal(size=(3, 3)))}
        assert params["w"].dtype == jnp.float64
        checkpoints.save_params(tmp_path / "p", params)
        assert_bitwise_equal(checkpoints.load_params(tmp_path / "p", like=params), params)
        assert_bitwise_equal(checkpoints.load_params(tmp_path / "p"), params)


def test_save_params_never_overwrites_unless_asked_and_load_names_the_path(tmp_path):
    checkpoints.save_params(tmp_path / "p", {"w": jnp.zeros(2)})
    with pytest.raises(FileExistsError, match=f"{tmp_path / 'p'} already exists.*overwrite=True"):
        checkpoints.save_params(tmp_path / "p", {"w": jnp.ones(2)})
    assert_bitwise_equal(checkpoints.load_params(tmp_path / "p"), {"w": jnp.zeros(2)})
    checkpoints.save_params(tmp_path / "p", {"w": jnp.ones(2)}, overwrite=True)
    assert_bitwise_equal(checkpoints.load_params(tmp_path / "p"), {"w": jnp.ones(2)})
    with pytest.raises(checkpoints.CheckpointNotFoundError, match=str(tmp_path / "nowhere")):
        checkpoints.load_params(tmp_path / "nowhere")
    with pytest.raises(
        checkpoints.CheckpointError,
        match=r"1 path differs:\n  w: shape \(2,\) float32 in the checkpoint, shape \(2,\) int32 in the template$",
    ):
        checkpoints.load_params(tmp_path / "p", like={"w": jnp.ones(2, jnp.int32)})


def state_of(hidden, optimizer):
    params = {"w": jnp.ones((3, hidden)), "b": jnp.zeros(hidden)}
    return training.init_train_state(jax.random.key(0), params, optimizer)


def test_mismatched_template_names_the_paths_and_reads_nothing(tmp_path):
    saved = state_of(4, optax.adam(1e-3))
    path = checkpoints.save_checkpoint(tmp_path, saved)
    with pytest.raises(checkpoints.CheckpointError) as another_size:
        checkpoints.restore_checkpoint(tmp_path, state_of(5, optax.adam(1e-3)))
    message = str(another_size.value)
    assert f"checkpoint {path} does not match the template" in message
    assert "params/w: shape (3, 4) float32 in the checkpoint, shape (3, 5) float32" in message
    assert "opt_state/0/mu/b: shape (4,) float32 in the checkpoint, shape (5,)" in message
    assert "6 paths differ" in message
    with pytest.raises(checkpoints.CheckpointError) as another_optimizer:
        checkpoints.restore_checkpoint(tmp_path, state_of(4, optax.sgd(1e-3, momentum=0.9)))
    message = str(another_optimizer.value)
    assert (
        "opt_state/0/mu/w: shape (3, 4) float32 in the checkpoint, absent in the template"
        in message
    )
    assert "opt_state/0/trace/w: absent in the checkpoint, shape (3, 4) float32" in message
    for error in (another_size, another_optimizer):
        assert "Delete" not in str(error.value) and "corrupted" not in str(error.value)
    # The checkpoint it refused is intact.
    assert_bitwise_equal(checkpoints.restore_checkpoint(tmp_path, saved), saved)


# fit resumes from a run directory whose checkpoint is of another size: the error names the
# paths, and orbax's concurrent reads are never started, so nothing prints at exit (when
# they were, each unfinished read printed "RuntimeError: Event loop is closed").
MISMATCH_SCRIPT = textwrap.dedent("""
    import sys
    import jax, jax.numpy as jnp, optax
    from rnnjax import training
    from rnnjax._src import checkpoints

    def state_of(hidden):
        params = {"w": jnp.ones((3, hidden)), "b": jnp.zeros(hidden)}
        return training.init_train_state(jax.random.key(0), params, optax.adam(1e-3))

    def loss(params, batch, key):
        return jnp.sum(params["w"] ** 2) + jnp.sum(params["b"] ** 2), {}

    checkpoints.save_checkpoint(sys.argv[1] + "/checkpoints", state_of(4))
    step = training.make_train_step(loss, optax.adam(1e-3))
    for _ in range(5):
        try:
            training.fit(step, state_of(5), lambda k, s: None, 10, run_dir=sys.argv[1], progress=False)
        except checkpoints.CheckpointError as e:
            print("ERROR", str(e).splitlines()[-1], flush=True)
""")


def test_fit_with_a_mismatched_state_says_what_differs_and_prints_no_traceback(tmp_path):
    out = subprocess.run(
        [sys.executable, "-c", MISMATCH_SCRIPT, str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    lines = out.stdout.splitlines()
    assert (
        lines
        == [
            "ERROR   params/w: shape (3, 4) float32 in the checkpoint, shape (3, 5) float32 in the template"
        ]
        * 5
    )
    assert "Traceback" not in out.stderr and "Exception ignored" not in out.stderr, out.stderr[
        -3000:
    ]
