"""The package as a user installs it: version in one place, the wheel, a fresh environment.

The slow test builds the wheel and the sdist (``python -m build``), installs the wheel into a
new virtual environment (no system site-packages, nothing of this checkout importable), and
runs ``import rnnjax`` and the README's first example there: the check that the package
metadata lists every dependency and that the wheel holds every module. `make wheel-check`
runs this file.
"""

import importlib.metadata
import pathlib
import subprocess
import sys
import tarfile
import tomllib
import zipfile

import pytest
from test_readme import readme_blocks

import rnnjax

ROOT = pathlib.Path(__file__).resolve().parent.parent


def test_version_is_written_once_and_the_changelog_names_it():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert "version" not in project and "version" in project["dynamic"]
    assert importlib.metadata.version("rnnjax") == rnnjax.__version__
    changelog = (ROOT / "CHANGELOG.md").read_text()
    assert f"## {rnnjax.__version__}" in changelog, (
        f"CHANGELOG.md has no section '## {rnnjax.__version__}' for rnnjax.__version__"
    )


def _run(args, cwd, timeout=900):
    proc = subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{' '.join(map(str, args))} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


@pytest.mark.slow
def test_wheel_installs_into_a_fresh_venv_and_runs_the_first_example(tmp_path):
    dist = tmp_path / "dist"
    _run([sys.executable, "-m", "build", "--outdir", str(dist), str(ROOT)], cwd=tmp_path)
    (wheel,) = dist.glob("rnnjax-*.whl")
    (sdist,) = dist.glob("rnnjax-*.tar.gz")
    assert wheel.name.startswith(f"rnnjax-{rnnjax.__version__}-")

    # Every module of the source tree, and py.typed, is inside the wheel.
    sources = {p.relative_to(ROOT).as_posix() for p in (ROOT / "rnnjax").rglob("*.py")}
    in_wheel = set(zipfile.ZipFile(wheel).namelist())
    assert sources - in_wheel == set(), f"modules missing from the wheel: {sources - in_wheel}"
    assert "rnnjax/py.typed" in in_wheel
    with tarfile.open(sdist) as tar:
        in_sdist = {n.split("/", 1)[1] for n in tar.getnames() if "/" in n}
    assert {"pyproject.toml", "README.md", "rnnjax/__init__.py"} <= in_sdist

    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", str(venv)], cwd=tmp_path)
    python = venv / "bin" / "python"
    _run([python, "-m", "pip", "install", "--quiet", str(wheel)], cwd=tmp_path)

    (line, first_example, _), *_ = readme_blocks()
    script = (
        "import pathlib, rnnjax\n"
        "print(rnnjax.__version__, pathlib.Path(rnnjax.__file__).resolve())\n"
        + first_example
        + "print(tuple(ys.shape))\n"
    )
    out = _run([python, "-c", script], cwd=tmp_path)
    version, location = out.splitlines()[0].split(" ", 1)
    assert version == rnnjax.__version__
    assert pathlib.Path(location).is_relative_to(venv.resolve()), (
        f"rnnjax was imported from {location}, not from the fresh venv {venv}"
    )
    # The README's first example ends with a bidirectional GRU (2 x 16) under an LSTM(16),
    # vmapped over a batch of 4 sequences of 50 steps.
    assert out.splitlines()[-1] == "(4, 50, 16)", (out, f"README.md:{line}")
