"""Offline GraphQL explorer: strawberry's GraphiQL page with its CDN assets served by our app.

Strawberry's built-in GraphiQL page loads React, GraphiQL, the explorer plugin and js-cookie from
unpkg.com.  The exact same files (byte-identical, so the page's SRI ``integrity`` hashes still hold)
are vendored in ``brandvx/static/explorer/`` (see ``LICENSES.txt`` there); this module rewrites the
page to load them from ``static_prefix`` and provides the Starlette mount that serves them.
"""

from __future__ import annotations

import functools
import pathlib
import re
from typing import Final

from starlette.routing import Mount
from starlette.staticfiles import StaticFiles
from strawberry.http.ides import get_graphql_ide_html

__all__ = ["STATIC_DIR", "explorer_static_mount", "render_explorer_html"]

STATIC_DIR: Final[pathlib.Path] = pathlib.Path(__file__).resolve().parent / "static" / "explorer"

# CDN URL in strawberry's graphiql.html -> vendored file name in STATIC_DIR.
_CDN_ASSETS: Final[dict[str, str]] = {
    "https://unpkg.com/react@18.2.0/umd/react.production.min.js": "react.production.min.js",
    "https://unpkg.com/react-dom@18.2.0/umd/react-dom.production.min.js": "react-dom.production.min.js",
    "https://unpkg.com/js-cookie@3.0.5/dist/js.cookie.min.js": "js.cookie.min.js",
    "https://unpkg.com/graphiql@3.8.3/graphiql.min.css": "graphiql.min.css",
    "https://unpkg.com/graphiql@3.8.3/graphiql.min.js": "graphiql.min.js",
    "https://unpkg.com/@graphiql/plugin-explorer@1.0.2/dist/style.css": "plugin-explorer.css",
    "https://unpkg.com/@graphiql/plugin-explorer@1.0.2/dist/index.umd.js": "plugin-explorer.umd.js",
}

# Template variables strawberry's HTTP integrations fill in.  The 0.341 template has none (the ASGI
# view serves it verbatim and always passes ``subscriptionUrl``); older templates used this one.
_TEMPLATE_VARIABLES: Final[dict[str, str]] = {
    "{{ SUBSCRIPTION_ENABLED }}": "true",
}

_PLACEHOLDER_RE: Final[re.Pattern[str]] = re.compile(r"\{\{\s*[A-Z_][A-Z0-9_]*\s*\}\}")
_ABSOLUTE_ASSET_RE: Final[re.Pattern[str]] = re.compile(
    r"""\b(?:src|href)\s*=\s*["']?\s*(?!data:)(?:[a-z][a-z0-9+.-]*:|//)""", re.IGNORECASE
)
_SAFE_PREFIX_RE: Final[re.Pattern[str]] = re.compile(r"/[A-Za-z0-9._~/-]*")


@functools.cache
def render_explorer_html(*, static_prefix: str = "/static/explorer") -> str:
    """Return strawberry's GraphiQL page with every CDN asset pointed at ``static_prefix``.

    Raises ``RuntimeError`` if the installed strawberry template no longer matches the vendored
    assets (e.g. after a strawberry upgrade), so the explorer never silently goes back to a CDN.
    """
    if not _SAFE_PREFIX_RE.fullmatch(static_prefix):
        raise ValueError(f"static_prefix must be a same-origin absolute path, got {static_prefix!r}")
    prefix = static_prefix.rstrip("/")

    html = get_graphql_ide_html(graphql_ide="graphiql")

    for url, file_name in _CDN_ASSETS.items():
        if url not in html:
            raise RuntimeError(
                f"strawberry's graphiql template no longer references {url}; "
                f"re-vendor the explorer assets in {STATIC_DIR}"
            )
        if not (STATIC_DIR / file_name).is_file():
            raise RuntimeError(f"vendored explorer asset is missing: {STATIC_DIR / file_name}")
        html = html.replace(url, f"{prefix}/{file_name}")

    for placeholder, value in _TEMPLATE_VARIABLES.items():
        html = html.replace(placeholder, value)

    leftover = _PLACEHOLDER_RE.search(html)
    if leftover is not None:
        raise RuntimeError(f"strawberry's graphiql template has an unfilled placeholder {leftover.group()!r}")

    if "https://" in html or _ABSOLUTE_ASSET_RE.search(html) is not None:
        found = re.search(r"https://\S+", html) or _ABSOLUTE_ASSET_RE.search(html)
        detail = found.group() if found is not None else "?"
        raise RuntimeError(
            f"explorer page still loads an external asset ({detail}); "
            f"strawberry's graphiql template changed, re-vendor the assets in {STATIC_DIR}"
        )
    return html


def explorer_static_mount(*, path: str = "/static/explorer") -> Mount:
    """Starlette mount serving the vendored explorer assets from ``STATIC_DIR`` at ``path``."""
    return Mount(path, app=StaticFiles(directory=STATIC_DIR), name="explorer-static")
