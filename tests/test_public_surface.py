"""The public surface: `rnnjax` and its public modules export exactly their `__all__`, every
name resolves to a documented object, and user-facing code imports nothing private."""

import importlib
import inspect
import pathlib
import re
import types

import pytest

import rnnjax

ROOT = pathlib.Path(__file__).parent.parent
EXPLICIT = ["rnnjax.linen", "rnnjax.nnx", "rnnjax.study", "rnnjax.launch"]
MODULES = [rnnjax] + [
    importlib.import_module(name)
    for name in [f"rnnjax.{n}" for n in rnnjax.__all__ if inspect.ismodule(getattr(rnnjax, n))]
    + EXPLICIT
]


@pytest.mark.parametrize("module", MODULES, ids=lambda m: m.__name__)
def test_every_public_name_resolves_and_has_a_docstring(module):
    assert module.__doc__ and len(module.__doc__.strip()) > 40, module.__name__
    assert len(set(module.__all__)) == len(module.__all__), "a name listed twice"
    for name in module.__all__:
        assert not name.startswith("_"), f"{module.__name__}.{name}"
        obj = getattr(module, name)
        if isinstance(obj, types.ModuleType):
            assert not obj.__name__.startswith("rnnjax._src"), obj.__name__
        elif callable(obj):
            assert inspect.getdoc(obj), f"{module.__name__}.{name} has no docstring"


def test_the_public_modules_are_thin_and_the_implementation_is_private():
    # Every public module defines nothing itself: what it exports lives under rnnjax._src.
    for module in MODULES:
        if module.__name__ == "rnnjax.launch":  # a command: `python -m rnnjax.launch`
            continue
        for name in module.__all__:
            obj = getattr(module, name)
            home = getattr(obj, "__module__", None) or ""
            if not isinstance(obj, types.ModuleType) and callable(obj):
                assert home.startswith("rnnjax._src."), f"{module.__name__}.{name}: {home}"
    public_files = {p.stem for p in (ROOT / "rnnjax").glob("*.py")} - {"__init__"}
    assert public_files == {m.__name__.split(".")[1] for m in MODULES[1:]} - {"study", "training"}


def test_readme_docs_and_notebooks_import_only_the_api():
    private_import = re.compile(r"^\s*(from rnnjax\._src|import rnnjax\._src)", re.M)
    places = [ROOT / "README.md", *ROOT.glob("docs/*.md"), *ROOT.glob("notebooks/*.py")]
    offenders = [str(p.relative_to(ROOT)) for p in places if private_import.search(p.read_text())]
    assert offenders == []
