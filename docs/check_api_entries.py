"""Fails unless the documented API is exactly the public names of rnnjax.

Public: every name in ``rnnjax.__all__``, and in each public module every name of its
``__all__``. A public module without ``__all__`` is listed (every module should draw its
surface), and until it has one every function and class it defines whose name does not
start with an underscore counts as public. An entry is the name in the site's inventory
(``objects.inv``), under the name a user types or where the object is defined. autodoc
leaves out a function without a docstring, so an undocumented public function fails here
too; and a module-level entry of a module with ``__all__`` that its ``__all__`` does not
list (an internal documented as API) fails.

    python docs/check_api_entries.py [docs/_build/html]
"""

from __future__ import annotations

import importlib
import inspect
import pathlib
import sys
import types

from sphinx.util.inventory import InventoryFile

import rnnjax

# Public modules that `import rnnjax` does not import, or not under rnnjax.__all__.
EXPLICIT = [
    "rnnjax.linen",
    "rnnjax.nnx",
    "rnnjax.launch",
    "rnnjax.study",
]


def public_modules() -> list[types.ModuleType]:
    """Returns the modules whose names the documentation must hold."""
    names = [f"rnnjax.{n}" for n in rnnjax.__all__ if inspect.ismodule(getattr(rnnjax, n))]
    return [importlib.import_module(n) for n in dict.fromkeys(names + EXPLICIT)]


def public_names(module: types.ModuleType) -> dict[str, object]:
    """Returns ``{name: object}``: what ``module`` offers its users."""
    if hasattr(module, "__all__"):
        return {n: getattr(module, n) for n in module.__all__}
    return {
        n: v
        for n, v in vars(module).items()
        if not n.startswith("_")
        and (inspect.isfunction(v) or inspect.isclass(v))
        and v.__module__ == module.__name__
    }


def without_all() -> list[str]:
    """Returns the public modules that have no ``__all__``."""
    return [m.__name__ for m in public_modules() if not hasattr(m, "__all__")]


def documented_outside_all(entries: set[str]) -> list[str]:
    """Returns the entries ``module.name`` of a module with ``__all__`` that do not list ``name``."""
    modules = {m.__name__: m for m in [rnnjax, *public_modules()] if hasattr(m, "__all__")}
    extra = []
    for entry in sorted(entries):
        module_name, _, name = entry.rpartition(".")
        module = modules.get(module_name)
        if entry in sys.modules:  # a module's own entry
            continue
        if module is not None and name not in module.__all__ and not name.startswith("_"):
            extra.append(entry)
    return extra


def documented(inventory_path: pathlib.Path) -> set[str]:
    """Returns every Python object name in a Sphinx inventory."""
    with inventory_path.open("rb") as f:
        inventory = InventoryFile.load(f, "", lambda base, uri: uri)
    entries = inventory.data if hasattr(inventory, "data") else inventory
    return {name for kind, objs in entries.items() if kind.startswith("py:") for name in objs}


def missing_entries(entries: set[str]) -> list[str]:
    """Returns the public names (``module.name``) without an entry in ``entries``."""
    missing = []
    for module in [rnnjax, *public_modules()]:
        if module.__name__ not in entries:
            missing.append(module.__name__)
        for name, obj in public_names(module).items():
            where = f"{module.__name__}.{name}"
            canonical = f"{getattr(obj, '__module__', '')}.{getattr(obj, '__qualname__', '')}"
            if where not in entries and canonical not in entries:
                missing.append(where)
    return missing


def main() -> int:
    build = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else "docs/_build/html")
    entries = documented(build / "objects.inv")
    missing = missing_entries(entries)
    extra = documented_outside_all(entries)
    modules = public_modules()
    total = sum(len(public_names(m)) for m in [rnnjax, *modules])
    lacking = without_all()
    if lacking:
        print(f"{len(lacking)} public modules have no __all__ (all their names count as API):")
        print("\n".join(f"  {name}" for name in lacking))
    if missing:
        print(
            f"{len(missing)} public names have no entry in the documentation "
            f"(a docstring, or a line in docs/api/*.md):"
        )
        print("\n".join(f"  {name}" for name in missing))
    if extra:
        print(f"{len(extra)} entries document names their module's __all__ does not list:")
        print("\n".join(f"  {name}" for name in extra))
    if missing or extra:
        return 1
    print(f"every public name has an entry: {total} names in {len(modules) + 1} modules")
    return 0


if __name__ == "__main__":
    sys.exit(main())
