"""The run directory: the files a training run leaves behind, written so that none is ever torn.

``config.json`` (and ``config.yaml``) say what the run is; ``metrics.jsonl`` holds one JSON
row per step; ``summary.json`` says how it ended; ``checkpoints/<step>`` hold the state
(:mod:`rnnjax.checkpoints`). Every file is replaced atomically (written aside, fsynced,
renamed), so a crash or Ctrl-C leaves the previous version whole.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping
from typing import Any

import numpy as np


def _config_dict(config: Any) -> dict:
    if dataclasses.is_dataclass(config) and not isinstance(config, type):
        return dataclasses.asdict(config)
    if isinstance(config, Mapping):
        return dict(config)
    raise TypeError(f"config must be a dataclass instance or a dict, got {type(config).__name__}")


def save_config(run_dir: str | os.PathLike, config: Any) -> str:
    """Returns the path of ``config.json`` written (with ``config.yaml``) into ``run_dir``."""
    import yaml

    d = _config_dict(config)
    os.makedirs(run_dir, exist_ok=True)
    path = os.path.join(run_dir, "config.json")
    write_atomic(path, json.dumps(d, indent=2, sort_keys=True) + "\n")
    write_atomic(os.path.join(run_dir, "config.yaml"), yaml.safe_dump(d, sort_keys=True))
    return path


def load_config(path: str | os.PathLike, cls: type | None = None) -> Any:
    """Returns the config in ``path`` (a run dir, ``.json`` or ``.yaml``), as ``cls(**d)`` if given."""
    path = os.fspath(path)
    if os.path.isdir(path):
        path = os.path.join(path, "config.json")
    if not os.path.exists(path):
        raise FileNotFoundError(f"no config file at {path}")
    with open(path) as f:
        if path.endswith((".yaml", ".yml")):
            import yaml

            d = yaml.safe_load(f)
        else:
            d = json.load(f)
    return cls(**d) if cls is not None else d


def read_metrics(run_dir: str | os.PathLike) -> list[dict]:
    """Returns the rows of ``run_dir/metrics.jsonl``, one dict per step, in step order."""
    path = os.path.join(run_dir, "metrics.jsonl")
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def write_atomic(path: str, text: str) -> None:
    """Writes ``text`` to ``path`` atomically: aside, fsynced, then renamed over it."""
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def to_python(x: Any) -> Any:
    """Returns ``x`` (an array) as a Python float/int, or a nested list of them."""
    a = np.asarray(x)
    if a.ndim == 0:
        return a.item()
    return a.tolist()


def check_or_save_config(run_dir: str, config: Any, write: bool) -> None:
    """Saves ``config`` into ``run_dir`` (if ``write``), or checks it equals the saved one.

    Raises ValueError naming the keys that differ: a run directory holds one run.
    """
    if config is None:
        return
    path = os.path.join(run_dir, "config.json")
    new = json.loads(json.dumps(_config_dict(config)))
    if os.path.exists(path):
        old = load_config(path)
        if old != new:
            changed = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
            raise ValueError(
                f"config differs from the one saved in {path} (keys {changed}); a run dir "
                f"holds one run — use a new run_dir"
            )
    elif write:
        save_config(run_dir, config)


def write_metrics(run_dir: str, rows: list[dict]) -> None:
    """Replaces ``run_dir/metrics.jsonl`` by ``rows``, atomically."""
    write_atomic(
        os.path.join(run_dir, "metrics.jsonl"), "".join(json.dumps(r) + "\n" for r in rows)
    )


def append_metrics(run_dir: str, rows: list[dict]) -> None:
    """Appends ``rows`` to ``run_dir/metrics.jsonl``, one JSON object per line."""
    with open(os.path.join(run_dir, "metrics.jsonl"), "a") as f:
        f.write("".join(json.dumps(r) + "\n" for r in rows))


def write_summary(run_dir: str, summary: Mapping[str, Any]) -> None:
    """Replaces ``run_dir/summary.json`` by ``summary``, atomically."""
    write_atomic(os.path.join(run_dir, "summary.json"), json.dumps(summary, indent=2) + "\n")
