"""A tiny LSTM trained with rnnjax.training.fit, for tests/test_processes.py.

``python -m rnnjax.launch --num-processes N process_worker.py --out DIR --launch L`` runs it in
N processes (``--num-processes 1 --cpu-devices 2``: one process on two devices), and
:func:`train` runs it in the test's own process. ``--launch one`` is one training run; the
two-process story of the test is ``first`` then ``second`` (:func:`first_launch`,
:func:`second_launch`), several runs in each process so that they share its compiled programs.

Each run writes, per process ``i``, into its directory:

* ``p<i>_start.txt``: the step of the first hook call, i.e. where the run started or resumed;
* ``p<i>_step<s>.npz``: the whole TrainState when a hook first sees a step in ``record``;
* ``p<i>_final.npz``: the final TrainState, the training losses, the device count and whether
  Ctrl-C interrupted the run.

Faults: ``pause_at=S`` makes every process write ``p<i>_paused.txt`` (its pid) at step S and
wait in a hook until ``go.txt`` appears, so that the test can send SIGINT to one process only;
:func:`die_in_save` makes process 1 kill itself in the middle of a collective checkpoint save;
:func:`hang` makes process 1 stop (SIGSTOP: a hung host, whose connections stay open) while
process 0 waits for it in a collective.
"""

import argparse
import os
import resource
import signal
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

import rnnjax
from rnnjax import training
from rnnjax._src import checkpoints
from rnnjax._src.training import processes

T, I, H, B = 4, 2, 4, 4  # sequence length, inputs, hidden units, global batch size
NUM_STEPS = 12
SCHEDULE = training.Schedule(chunk_size=2, checkpoint_every=4)
CELL = rnnjax.lstm(H)
OPTIMIZER = optax.adam(1e-2)


def loss_fn(params, batch, key):
    del key
    (h, _), _ = jax.vmap(lambda xs: rnnjax.scan(CELL, params["rnn"], xs))(batch["x"])
    err = h @ params["w"] - batch["y"]
    return jnp.mean(err**2), {}


TRAIN_STEP = training.make_train_step(loss_fn, OPTIMIZER)


def batch_fn(key, step):
    """The task: the mean of the first input channel; a function of (seed, step) alone."""
    del step
    x = jax.random.normal(key, (B, T, I))
    return {"x": x, "y": x[:, :, 0].mean(axis=1)}


def initial_state(seed):
    """Returns the TrainState at step 0; its parameters are drawn with NumPy (compiling
    jax.random's initialisers costs seconds of CPU in every process)."""
    rng = np.random.default_rng(seed)
    shapes = jax.eval_shape(lambda key: CELL.init(key, I), jax.random.key(0))
    params = {
        "rnn": jax.tree.map(lambda s: (0.5 * rng.standard_normal(s.shape)).astype(s.dtype), shapes),
        "w": np.full((H,), 0.1, np.float32),
    }
    return training.init_train_state(jax.random.key(seed), params, OPTIMIZER)


def die_in_save(step, marker):
    """Makes this process SIGKILL itself in the checkpoint save of ``step``, once it has
    written its part and waits for the others (orbax's "Checkpointer:save" barrier): the
    checkpoint is then on disk but never committed (renamed into place) by process 0."""
    from orbax.checkpoint._src.multihost import multihost as orbax_multihost

    real_save, real_sync = checkpoints.save, orbax_multihost.sync_global_processes
    saving = []

    def save(manager, state):
        saving[:] = [checkpoints.checkpoint_step(state)]
        return real_save(manager, state)

    def sync(name, *args, **kwargs):
        if saving == [step] and "Checkpointer:save" in name and "save_start" not in name:
            with open(marker, "w") as f:
                f.write(repr(time.time()))
            os.kill(os.getpid(), signal.SIGKILL)
        return real_sync(name, *args, **kwargs)

    checkpoints.save = save  # fit calls checkpoints.save(manager, state)
    orbax_multihost.sync_global_processes = sync


def train(out, *, run_dir=None, record=(), pause_at=None, seed=0, mesh=None):
    """Returns fit's result after training the LSTM for NUM_STEPS; writes ``out``'s files."""
    os.makedirs(out, exist_ok=True)
    me = jax.process_index()

    def path(name):
        return os.path.join(out, f"p{me}_{name}")

    def dump(state):
        step = int(state.step)
        if not os.path.exists(path("start.txt")):
            with open(path("start.txt"), "w") as f:
                f.write(str(step))
        if step in record:
            np.savez(path(f"step{step}.npz"), *map(np.asarray, jax.tree.leaves(state)))
        if step == pause_at:
            with open(path("paused.txt"), "w") as f:
                f.write(str(os.getpid()))
            while not os.path.exists(os.path.join(out, "go.txt")):
                time.sleep(0.05)
        return {}

    result = training.fit(
        TRAIN_STEP,
        initial_state(seed),
        batch_fn,
        NUM_STEPS,
        run_dir=run_dir,
        hooks=[dump],
        progress=False,
        schedule=SCHEDULE,
        mesh=mesh,
        exit_on_interrupt=False,
    )
    losses = [r["loss"] for r in result.history if "loss" in r]
    np.savez(
        path("final.npz"),
        *map(np.asarray, jax.tree.leaves(result.state)),
        losses=np.asarray(losses),
        devices=len(result.state.step.sharding.device_set),
        interrupted=result.interrupted,
    )
    return result


def first_launch(out):
    """An uninterrupted run; a run Ctrl-C'd at step 6; its resumption, killed saving step 8."""
    train(os.path.join(out, "uninterrupted"))  # no run_dir: nothing saved, nothing restored
    run_dir = os.path.join(out, "run")
    train(os.path.join(out, "ctrl_c"), run_dir=run_dir, pause_at=6, record=(6,))
    if jax.process_index() == 1:
        die_in_save(8, os.path.join(out, "killed.txt"))
    train(os.path.join(out, "killed"), run_dir=run_dir, record=(6,))


def second_launch(out):
    """A mistake (a different initial state in each process), then the relaunch that finishes."""
    try:
        train(os.path.join(out, "mistake"), seed=jax.process_index())
    except ValueError as err:
        with open(os.path.join(out, f"p{jax.process_index()}_mistake.txt"), "w") as f:
            f.write(str(err))
    train(os.path.join(out, "resumed"), run_dir=os.path.join(out, "run"))
    hang(out)


def hang(out):
    """Process 1 stops itself; process 0 then waits for it in a collective until JAX's runtime,
    missing process 1's heartbeats, ends process 0. Each writes its pid and the time first."""
    processes.any_process(False)  # both are here
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))  # the runtime ends process 0 by abort()
    me = jax.process_index()
    with open(os.path.join(out, f"p{me}_hang.txt"), "w") as f:
        f.write(f"{os.getpid()} {time.time()!r}")
    if me == 1:
        os.kill(os.getpid(), signal.SIGSTOP)
    else:
        processes.any_process(False)
        with open(os.path.join(out, "p0_returned.txt"), "w") as f:  # must not happen
            f.write(repr(time.time()))


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", required=True)
    parser.add_argument(
        "--launch",
        choices=("one", "first", "second"),
        default="one",
        help="one: a single training run into --out; first, second: the stories "
        "of first_launch and second_launch",
    )
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)
    {"one": train, "first": first_launch, "second": second_launch}[args.launch](args.out)


if __name__ == "__main__":
    main()
