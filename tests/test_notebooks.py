"""The research notebooks run top to bottom (with RNNJAX_QUICK=1 shrinking their sizes)."""

import pathlib

import pytest

jupytext = pytest.importorskip("jupytext")
nbclient = pytest.importorskip("nbclient")

NOTEBOOKS = sorted((pathlib.Path(__file__).parent.parent / "notebooks").glob("[0-9]*.py"))


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs(path, monkeypatch):
    monkeypatch.setenv("RNNJAX_QUICK", "1")
    monkeypatch.setenv("MPLBACKEND", "Agg")
    notebook = jupytext.read(path)
    client = nbclient.NotebookClient(
        notebook,
        timeout=240,
        kernel_name="python3",
        resources={"metadata": {"path": str(path.parent)}},
    )
    try:
        client.execute()
    except nbclient.exceptions.CellTimeoutError as error:
        # nbclient's message shows the cell's source; add which cell of which notebook
        started = [i for i, c in enumerate(notebook.cells) if c.get("execution_count")]
        pytest.fail(f"{path.name}: cell {started[-1] if started else '?'} timed out: {error}")
    errors = [
        o
        for c in notebook.cells
        if c.cell_type == "code"
        for o in c.get("outputs", [])
        if o.get("output_type") == "error"
    ]
    assert not errors


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_stored_notebook_matches_its_text_form(path):
    """The .ipynb beside each .py holds the same code (regenerate with `make notebooks`)."""
    ipynb = path.with_suffix(".ipynb")
    if not ipynb.exists():
        pytest.skip(f"{ipynb.name} not generated")
    source = lambda nb: [c.source for c in nb.cells if c.cell_type == "code"]
    stored = jupytext.read(ipynb)
    assert source(stored) == source(jupytext.read(path))
    # executed with its outputs: every cell that shows a figure holds it (a kernel run with
    # MPLBACKEND=Agg, say, stores none)
    for cell in stored.cells:
        if cell.cell_type == "code" and "plt.show()" in cell.source:
            assert any("image/png" in o.get("data", {}) for o in cell.get("outputs", [])), (
                f"{ipynb.name}: a cell that shows a figure has none stored:\n{cell.source[:200]}"
            )
