"""Every ```python block of README.md runs on its own, in a fresh namespace.

A block preceded by the line ``<!-- not-run: reason -->`` is not run (none is today); the
reason stays in the README beside the block.
"""

import pathlib
import re

import pytest

README = pathlib.Path(__file__).resolve().parent.parent / "README.md"
_BLOCK = re.compile(r"(?:<!-- not-run: (?P<reason>.+?) -->\s*\n)?```python\n(?P<code>.*?)```", re.S)


def readme_blocks() -> list[tuple[int, str, str | None]]:
    """Returns ``(line, code, not_run_reason)`` for each python block of README.md."""
    text = README.read_text()
    return [
        (text.count("\n", 0, m.start("code")) + 1, m["code"], m["reason"])
        for m in _BLOCK.finditer(text)
    ]


BLOCKS = readme_blocks()


def test_the_readme_has_python_blocks():
    assert len(BLOCKS) >= 5  # the extraction itself did not silently find nothing


@pytest.mark.parametrize("line,code,reason", BLOCKS, ids=[f"line{b[0]}" for b in BLOCKS])
def test_readme_block_runs_alone(line, code, reason):
    if reason is not None:
        pytest.skip(f"README.md line {line}: not run: {reason}")
    exec(compile(code, f"README.md:{line}", "exec"), {"__name__": f"readme_line_{line}"})
