"""Sphinx configuration of the rnnjax documentation site (`make docs`).

Sphinx + MyST-NB, as JAX, Flax and Optax build theirs: the library's docstrings are written
with Sphinx roles (:func:, :class:, :mod:), which autodoc renders as links and `nitpicky`
checks; the Markdown pages in docs/ are read by MyST; the notebooks are rendered with the
outputs stored in them (never executed here). Nothing is fetched from the network: no
intersphinx, so references to other libraries (jax, numpy, optax...) are not checked; and
the site itself works offline, MathJax included.
"""

import os
import re
import sys

sys.path.insert(0, os.path.abspath(".."))
import rnnjax

project = "rnnjax"
author = "rnnjax developers"
copyright = "2026, rnnjax developers"
release = rnnjax.__version__
version = release

extensions = [
    "myst_nb",  # Markdown pages (MyST) and notebooks
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",  # the docstrings' "Args:" / "Returns:" sections
    "sphinx.ext.viewcode",
    "sphinx.ext.mathjax",
    # MathJax 3 copied into the site (_static/mathjax) instead of fetched from a CDN, so the
    # equations render offline (a cluster, a plane); docs/check_offline.py checks that no
    # page loads a remote script. It sets mathjax_path: do not set it here.
    "sphinx-mathjax-offline",
]

# Markdown pages and notebooks; the notebooks' jupytext .py twins are not pages.
source_suffix = {".md": "myst-nb", ".ipynb": "myst-nb"}
exclude_patterns = ["_build", "notebooks/*.py", "notebooks/.ipynb_checkpoints"]
root_doc = "index"

# Notebooks are shown as stored, with their outputs: executing them is `make notebooks`.
nb_execution_mode = "off"
nb_merge_streams = True
myst_enable_extensions = ["dollarmath", "colon_fence"]
myst_heading_anchors = 3

# Strict references: every :func:/:class:/:mod: to rnnjax must resolve. References to other
# libraries cannot (no intersphinx offline), nor can the type hints' typing names.
nitpicky = True
nitpick_ignore_regex = [
    # private records in signatures (what a public function returns is described in its docstring)
    (r"py:.*", r"rnnjax\._src\..*"),
    (r"py:.*", r"(?!rnnjax\b).*"),
    (r"py:.*", r"rnnjax\..*\._\w+"),  # private names in type hints have no page by design
]

autodoc_default_options = {"members": True, "member-order": "bysource"}
autodoc_typehints = "signature"
autodoc_preserve_defaults = True  # `init=initializers.lecun_normal()`, not a function repr
autodoc_member_order = "bysource"
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_ivar = True  # a NamedTuple's "Attributes:" as fields, not a second entry

html_theme = "sphinx_book_theme"
html_title = f"rnnjax {release}"
html_theme_options = {
    "show_toc_level": 2,
    "use_download_button": False,
}
html_static_path: list[str] = []


# The docstrings write equations as in the papers, one per line, either as a paragraph of
# their own (``h' = (1 - z) ⊙ n + z ⊙ h``) or as a block indented under a sentence.
# reStructuredText would join those lines into one, or read the block as a quotation, and
# take ``|λ|`` for a substitution; shown as literal blocks they read as written. This runs
# before napoleon (priority 500), and leaves its sections ("Args:") alone.
_SECTION = re.compile(r"[A-Z][A-Za-z ]*:")
_LITERAL = re.compile(r"``.*?``")


def _indent(line):
    return len(line) - len(line.lstrip())


def _is_equation(line):
    text = _LITERAL.sub("", line)
    return " = " in text and not text.rstrip().endswith((".", ":"))


def _equations_as_literal_blocks(app, what, name, obj, options, lines):
    out, i = [], 0
    while i < len(lines):
        line, blank_before = lines[i], i == 0 or not lines[i - 1].strip()
        prev = next((p for p in reversed(out) if p.strip()), None)
        indented_block = (
            prev is not None
            and _indent(line) > _indent(prev)
            and not prev.rstrip().endswith("::")
            and not _SECTION.fullmatch(prev.strip())
        )
        # a paragraph whose lines (not counting their indented continuations) are equations
        j, equations = i, True
        while j < len(lines) and lines[j].strip():
            if _indent(lines[j]) <= _indent(line) and not _is_equation(lines[j]):
                equations = False
            j += 1
        if line.strip() and blank_before and i > 0 and (indented_block or equations):
            if indented_block:  # up to the next line as little indented as `prev`
                out += ["::", ""]
                while i < len(lines) and (
                    not lines[i].strip() or _indent(lines[i]) > _indent(prev)
                ):
                    out.append(lines[i])
                    i += 1
            else:  # the paragraph, indented under `::`
                out += [" " * _indent(line) + "::", ""] + ["    " + x for x in lines[i:j]]
                i = j
            continue
        out.append(line)
        i += 1
    lines[:] = out


# A line inside "Args:" that names no argument ("Other arguments as in :func:`elman`.")
# would become a malformed parameter; it is moved to a paragraph after the section.
_ARG = re.compile(r"\*{0,2}\w+(, \*{0,2}\w+)*( \(.*\))?:")  # "x:", "x (int):", "a, b:"


def _loose_lines_after_args(app, what, name, obj, options, lines):
    out, i = [], 0
    while i < len(lines):
        out.append(lines[i])
        if lines[i].strip() in ("Args:", "Arguments:"):
            head, loose, i = _indent(lines[i]), [], i + 1
            item = None
            while i < len(lines) and (not lines[i].strip() or _indent(lines[i]) > head):
                if lines[i].strip() and item is None:
                    item = _indent(lines[i])
                if (
                    lines[i].strip()
                    and _indent(lines[i]) == item
                    and not _ARG.match(lines[i].strip())
                ):
                    loose.append(" " * head + lines[i].strip())
                else:
                    out.append(lines[i])
                i += 1
            if loose:
                out += ["", *loose, ""]
            continue
        i += 1
    lines[:] = out


def setup(app):
    app.connect("autodoc-process-docstring", _loose_lines_after_args, priority=390)
    app.connect("autodoc-process-docstring", _equations_as_literal_blocks, priority=400)
