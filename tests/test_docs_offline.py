"""docs/check_offline.py (run by `make docs` on the built site) catches what would not load offline."""

from __future__ import annotations

import importlib.util
import pathlib

DOCS = pathlib.Path(__file__).resolve().parent.parent / "docs"


def load_check():
    spec = importlib.util.spec_from_file_location("check_offline", DOCS / "check_offline.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def page(scripts: str) -> str:
    return f"<html><head>{scripts}</head><body><span class='math'>\\(x\\)</span></body></html>"


def test_check_offline_flags_a_cdn_script_and_a_missing_local_file(tmp_path):
    check = load_check()
    (tmp_path / "_static" / "mathjax").mkdir(parents=True)
    (tmp_path / "_static" / "mathjax" / "tex-chtml.js").write_text("// MathJax")
    (tmp_path / "_static" / "theme.html").write_text(  # a theme template, not a page
        "<link rel='stylesheet' href=\"{{ pathto('x.css', 1) }}\">"
    )
    (tmp_path / "api").mkdir()
    (tmp_path / "index.html").write_text(
        page('<script defer src="_static/mathjax/tex-chtml.js"></script>')
    )
    (tmp_path / "api" / "nested.html").write_text(
        page(
            '<script src="../_static/mathjax/tex-chtml.js"></script>'
            '<img src="data:image/png;base64,AAAA">'
        )
    )
    assert check.problems(tmp_path) == []

    # What Sphinx writes without sphinx-mathjax-offline, and a local file that is not there.
    (tmp_path / "cdn.html").write_text(
        page(
            '<script defer src="https://cdn.jsdelivr.net/npm/mathjax@4/tex-mml-chtml.js">'
            '</script><link rel="stylesheet" href="//fonts.example.org/a.css">'
        )
    )
    (tmp_path / "api" / "missing.html").write_text(
        page('<script src="_static/mathjax/tex-chtml.js"></script>')  # wrong depth
    )
    assert check.problems(tmp_path) == [
        "api/missing.html: loads _static/mathjax/tex-chtml.js, which is not in the site",
        "cdn.html: loads https://cdn.jsdelivr.net/npm/mathjax@4/tex-mml-chtml.js from the network",
        "cdn.html: loads //fonts.example.org/a.css from the network",
    ]


def test_docs_configuration_ships_mathjax_with_the_site():
    # Without this extension Sphinx points every page with math at a CDN.
    assert '"sphinx-mathjax-offline"' in (DOCS / "conf.py").read_text()
    assert "sphinx-mathjax-offline" in (DOCS.parent / "pyproject.toml").read_text()
