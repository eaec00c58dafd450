"""Fails unless every page of the built site works without a network.

The site is read where there may be no internet (a cluster, a plane): a page may load no
script, stylesheet or font from another host, and every file it loads from the site must be
there. MathJax in particular is shipped in ``_static/mathjax`` by ``sphinx-mathjax-offline``;
loaded from a CDN, every formula of an offline page shows as raw TeX.

    python docs/check_offline.py [docs/_build/html]
"""

from __future__ import annotations

import html.parser
import pathlib
import sys
import urllib.parse


class _Loads(html.parser.HTMLParser):
    """Collects the URLs a page loads by itself: scripts, stylesheets, preloads, images."""

    def __init__(self):
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag in ("script", "img", "iframe") and a.get("src"):
            self.urls.append(a["src"])
        rel = (a.get("rel") or "").split()
        if tag == "link" and a.get("href") and {"stylesheet", "preload", "icon"} & set(rel):
            self.urls.append(a["href"])


def problems(site: pathlib.Path) -> list[str]:
    """Returns one line per remote or missing resource that a page of ``site`` loads."""
    found = []
    for page in sorted(site.rglob("*.html")):
        if page.relative_to(site).parts[0] == "_static":  # the theme's templates, not pages
            continue
        parser = _Loads()
        parser.feed(page.read_text(encoding="utf-8"))
        for url in parser.urls:
            parts = urllib.parse.urlsplit(url)
            where = page.relative_to(site)
            if parts.scheme or parts.netloc:  # http:, https:, data:, //host/...
                if parts.scheme != "data":
                    found.append(f"{where}: loads {url} from the network")
            elif not (page.parent / urllib.parse.unquote(parts.path)).is_file():
                found.append(f"{where}: loads {url}, which is not in the site")
    return found


def main() -> int:
    site = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else "docs/_build/html")
    if not (site / "index.html").is_file():
        print(f"no built site at {site} (no index.html)")
        return 1
    found = problems(site)
    if found:
        print(f"{len(found)} resources would not load offline:")
        print("\n".join(f"  {line}" for line in found))
        return 1
    mathjax = site / "_static" / "mathjax" / "tex-chtml.js"
    print(f"every page loads only files of the site (MathJax: {mathjax.is_file()})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
