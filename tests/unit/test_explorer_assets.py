"""The GraphQL explorer page must load all of its JS/CSS from our own app (works with no internet)."""

from __future__ import annotations

import base64
import hashlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from html.parser import HTMLParser
from urllib.parse import urlsplit

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse
from starlette.routing import Route
from strawberry.http.ides import get_graphql_ide_html

from brandvx.explorer import STATIC_DIR, explorer_static_mount, render_explorer_html

BASE_URL = "http://testserver"


@dataclass(frozen=True)
class Asset:
    kind: str  # "script" | "stylesheet"
    url: str
    integrity: str | None


class _AssetCollector(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.assets: list[Asset] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attr = dict(attrs)
        if tag == "script" and attr.get("src"):
            self.assets.append(Asset("script", attr["src"] or "", attr.get("integrity")))
        elif tag == "link" and attr.get("href"):
            href = attr["href"] or ""
            if not href.lstrip().startswith("data:"):  # skip the inline favicon, it loads nothing
                self.assets.append(Asset("stylesheet", href, attr.get("integrity")))


def _page_assets(html: str) -> list[Asset]:
    parser = _AssetCollector()
    parser.feed(html)
    parser.close()
    return parser.assets


def _sri_sha384(body: bytes) -> str:
    return "sha384-" + base64.b64encode(hashlib.sha384(body).digest()).decode("ascii")


async def _graphql_page(request: Request) -> HTMLResponse:
    return HTMLResponse(render_explorer_html())


def _app() -> Starlette:
    return Starlette(routes=[Route("/graphql", _graphql_page, methods=["GET"]), explorer_static_mount()])


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=_app()), base_url=BASE_URL) as c:
        yield c


async def test_explorer_page_serves_without_auth(client: httpx.AsyncClient) -> None:
    response = await client.get("/graphql")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert "unpkg.com" not in response.text
    assert "https://" not in response.text
    # The Headers tab is where users paste `Authorization: Bearer ...`.
    assert "isHeadersEditorEnabled: true" in response.text


async def test_every_explorer_asset_is_local_and_matches_its_sri_hash(client: httpx.AsyncClient) -> None:
    page = await client.get("/graphql")
    assets = _page_assets(page.text)

    assert sorted(a.kind for a in assets) == ["script"] * 5 + ["stylesheet"] * 2

    for asset in assets:
        parts = urlsplit(asset.url)
        assert not parts.scheme, f"{asset.url} is loaded from another host"
        assert not parts.netloc, f"{asset.url} is loaded from another host"
        assert asset.url.startswith("/static/explorer/"), asset.url
        assert asset.integrity is not None, f"{asset.url} lost its SRI hash"
        assert asset.integrity.startswith("sha384-"), f"{asset.url} lost its SRI hash"

        response = await client.get(asset.url)
        assert response.status_code == 200, asset.url
        assert len(response.content) > 500, asset.url
        content_type = response.headers["content-type"]
        if asset.kind == "script":
            assert "javascript" in content_type, (asset.url, content_type)
        else:
            assert content_type.startswith("text/css"), (asset.url, content_type)
        assert _sri_sha384(response.content) == asset.integrity, f"{asset.url} does not match its SRI hash"


async def test_static_prefix_is_configurable() -> None:
    html = render_explorer_html(static_prefix="/assets/gql/")
    urls = [a.url for a in _page_assets(html)]
    assert len(urls) == 7
    assert all(u.startswith("/assets/gql/") and "//" not in u for u in urls)
    assert all((STATIC_DIR / u.rsplit("/", 1)[1]).is_file() for u in urls)


async def test_rejects_prefix_pointing_at_another_host() -> None:
    with pytest.raises(ValueError, match="same-origin"):
        render_explorer_html(static_prefix="https://cdn.example.com/x")


@pytest.mark.parametrize(
    ("old", "new"),
    [
        # strawberry upgrade bumps a CDN version -> vendored copy no longer matches
        ("graphiql@3.8.3/graphiql.min.js", "graphiql@4.0.0/graphiql.min.js"),
        # strawberry upgrade adds a new CDN asset
        ("</head>", '<script src="https://unpkg.com/new-thing@1.0.0/x.js"></script></head>'),
    ],
)
async def test_template_drift_raises(monkeypatch: pytest.MonkeyPatch, old: str, new: str) -> None:
    real_template = get_graphql_ide_html(graphql_ide="graphiql")
    assert old in real_template
    monkeypatch.setattr("brandvx.explorer.get_graphql_ide_html", lambda **_: real_template.replace(old, new))
    render_explorer_html.cache_clear()
    try:
        with pytest.raises(RuntimeError, match="re-vendor"):
            render_explorer_html()
    finally:
        render_explorer_html.cache_clear()
