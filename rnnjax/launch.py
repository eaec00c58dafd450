"""``python -m rnnjax.launch``: one script as several JAX processes, on this machine or a cluster.

Every process of a multi-controller JAX job runs the same script; this module starts them
(or joins the one it is), connects them with :func:`rnnjax.training.initialize_processes`
and runs the script as ``__main__``, so a script written for one process (for example one
that trains with :func:`rnnjax.training.fit`) runs unchanged on several::

    # N processes on this machine (127.0.0.1, a free port, CPU collectives over gloo)
    python -m rnnjax.launch --num-processes 2 experiments/vanishing_gradients.py --cells lstm

    # one process per task under a scheduler JAX recognises (Slurm, Open MPI, Cloud TPU, GKE)
    srun python -m rnnjax.launch experiments/vanishing_gradients.py --preset full

    # by hand on each of N hosts: process I, with process 0 listening on host0:1234
    python -m rnnjax.launch --coordinator host0:1234 --num-processes N --process-id I script.py

Locally, process 0 writes to this terminal and the others to ``--log-dir``; Ctrl-C is passed
on to every process (:func:`~rnnjax.training.fit` stops them all at the same step and saves
a checkpoint). If a process dies, the others stop with an error within the heartbeat timeout
(JAX's distributed runtime detects it), and running the same command again resumes from the
last complete checkpoint. The launcher reports how each process ended and exits with the
first failure's code.
"""

from __future__ import annotations

import argparse
import os
import runpy
import signal
import socket
import subprocess
import sys
import tempfile
import time
import traceback

from rnnjax import training
from rnnjax._src.training import processes

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m rnnjax.launch",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--num-processes",
        type=int,
        default=None,
        help="processes in the job; without --process-id, start them all here",
    )
    parser.add_argument(
        "--process-id",
        type=int,
        default=None,
        help="this process's index (0 .. N-1) in a job started by hand",
    )
    parser.add_argument(
        "--coordinator",
        default=None,
        help="host:port of process 0 (with --process-id; default for local runs: "
        "127.0.0.1 and a free port)",
    )
    parser.add_argument(
        "--cpu-devices",
        type=int,
        default=None,
        help="JAX CPU devices per process (default: JAX's, one)",
    )
    parser.add_argument(
        "--heartbeat-timeout",
        type=int,
        default=processes.HEARTBEAT_TIMEOUT,
        help="seconds without a heartbeat after which a process counts as dead "
        "and the others stop (default: %(default)s)",
    )
    parser.add_argument(
        "--shutdown-timeout",
        type=int,
        default=processes.SHUTDOWN_TIMEOUT,
        help="seconds a finished process waits for the others at exit (default: %(default)s)",
    )
    parser.add_argument(
        "--initialization-timeout",
        type=int,
        default=processes.INITIALIZATION_TIMEOUT,
        help="seconds to wait for all processes to connect (default: %(default)s)",
    )
    parser.add_argument(
        "--log-dir",
        default=None,
        help="local runs: where processes 1..N-1 write their output "
        "(default: a new temporary directory)",
    )
    parser.add_argument("script", help="the Python script every process runs")
    parser.add_argument("args", nargs=argparse.REMAINDER, help="the script's arguments")
    return parser


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ending(code: int) -> str:
    if code < 0:
        return f"killed by {signal.Signals(-code).name}"
    return f"exit code {code}"


def _tail(path: str, lines: int = 25) -> str:
    with open(path, errors="replace") as f:
        return "".join(f.readlines()[-lines:])


def launch_local(opts: argparse.Namespace) -> int:
    """Returns the job's exit code after running ``opts.num_processes`` processes here."""
    n = opts.num_processes
    coordinator = opts.coordinator or f"127.0.0.1:{_free_port()}"
    log_dir = opts.log_dir or tempfile.mkdtemp(prefix="rnnjax-launch-")
    os.makedirs(log_dir, exist_ok=True)
    common = [
        "--coordinator",
        coordinator,
        "--num-processes",
        str(n),
        "--heartbeat-timeout",
        str(opts.heartbeat_timeout),
        "--shutdown-timeout",
        str(opts.shutdown_timeout),
        "--initialization-timeout",
        str(opts.initialization_timeout),
    ]
    if opts.cpu_devices is not None:
        common += ["--cpu-devices", str(opts.cpu_devices)]
    print(
        f"rnnjax.launch: {n} processes, coordinator {coordinator}; output of processes "
        f"1..{n - 1} in {log_dir}",
        file=sys.stderr,
        flush=True,
    )
    procs, logs = [], []
    for i in range(n):
        cmd = [
            sys.executable,
            "-m",
            "rnnjax.launch",
            *common,
            "--process-id",
            str(i),
            opts.script,
            *opts.args,
        ]
        log = None if i == 0 else os.path.join(log_dir, f"process_{i}.log")
        # stays open while the child runs; closed when the launch ends
        out = None if log is None else open(log, "w")  # noqa: SIM115
        # Own session: a Ctrl-C in the terminal reaches the launcher alone, which passes it
        # on once (fit takes a second Ctrl-C as "stop at once").
        procs.append(
            subprocess.Popen(
                cmd,
                stdout=out,
                stderr=None if out is None else subprocess.STDOUT,
                start_new_session=True,
            )
        )
        logs.append(log)
        if out is not None:
            out.close()

    def forward(signum, frame):
        for p in procs:
            if p.poll() is None:
                p.send_signal(signum)

    previous = {s: signal.signal(s, forward) for s in (signal.SIGINT, signal.SIGTERM)}
    # A process that dies makes the others fail within the heartbeat timeout; the launcher
    # stops any still running after that (a stopped or hung process, say).
    grace = opts.heartbeat_timeout + 15
    ended: dict[int, tuple[int, float]] = {}
    first_failure = None
    terminated: set[int] = set()
    try:
        while len(ended) < n:
            time.sleep(0.1)
            now = time.monotonic()
            now_ended = [i for i, p in enumerate(procs) if i not in ended and p.poll() is not None]
            # Of processes that ended within one poll, one killed by a signal is the likelier
            # cause: the others' errors are then often their collectives failing with it.
            for i in sorted(now_ended, key=lambda i: procs[i].returncode >= 0):
                ended[i] = (procs[i].returncode, now)
                if procs[i].returncode != 0 and first_failure is None:
                    first_failure = (i, now)
            if first_failure is not None and now - first_failure[1] > grace:
                for i, p in enumerate(procs):
                    if i not in ended and i not in terminated:
                        p.terminate()
                        terminated.add(i)
                if now - first_failure[1] > grace + 5:
                    for i in terminated - set(ended):
                        procs[i].kill()
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    if first_failure is None:
        return 0
    first, t_fail = first_failure
    lines = [f"rnnjax.launch: process {first} failed ({_ending(ended[first][0])})."]
    for i in range(n):
        code, t = ended[i]
        how = "stopped by the launcher" if i in terminated else _ending(code)
        when = f"{t - t_fail:+.1f} s after process {first}" if i != first else "first"
        lines.append(f"  process {i}: {how} ({when})")
        if logs[i] is not None and code != 0 and os.path.exists(logs[i]):
            lines.append(f"  last lines of {logs[i]}:\n" + _tail(logs[i]))
    print("\n".join(lines), file=sys.stderr, flush=True)
    code = ended[first][0]
    return 128 - code if code < 0 else code


def run_script(script: str, args: list[str]) -> None:
    """Runs ``script`` as ``__main__`` with ``args``, as ``python script args`` would."""
    sys.argv = [script, *args]
    sys.path[0] = os.path.dirname(os.path.abspath(script))
    runpy.run_path(script, run_name="__main__")


def main(argv: list[str] | None = None) -> int:
    """Returns the exit code of ``python -m rnnjax.launch`` with ``argv``."""
    opts = _parser().parse_args(argv)
    if not os.path.isfile(opts.script):
        raise SystemExit(f"rnnjax.launch: script must be a Python file, got {opts.script!r}")
    if opts.num_processes is not None and opts.num_processes < 1:
        raise SystemExit(f"rnnjax.launch: --num-processes must be >= 1, got {opts.num_processes}")
    if opts.num_processes == 1 and opts.process_id is None:
        if opts.cpu_devices is not None:
            training.use_cpu_cores(opts.cpu_devices)
        run_script(opts.script, opts.args)
        return 0
    if opts.num_processes is not None and opts.process_id is None:
        return launch_local(opts)
    try:
        training.initialize_processes(
            opts.coordinator,
            opts.num_processes,
            opts.process_id,
            heartbeat_timeout=opts.heartbeat_timeout,
            shutdown_timeout=opts.shutdown_timeout,
            initialization_timeout=opts.initialization_timeout,
            cpu_devices=opts.cpu_devices,
        )
    except ValueError as err:
        if opts.num_processes is None:
            err.add_note(
                "rnnjax.launch: no cluster found in the environment; pass "
                "--num-processes N to start N processes on this machine"
            )
        raise
    try:
        run_script(opts.script, opts.args)
    except (Exception, KeyboardInterrupt) as err:
        # Exiting normally would wait at the runtime's shutdown barrier for processes that
        # may be dead, and then abort; the error is printed and this process ends here.
        traceback.print_exc()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(130 if isinstance(err, KeyboardInterrupt) else 1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
