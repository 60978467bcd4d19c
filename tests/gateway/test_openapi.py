"""The OpenAPI description stays true to the route table, and is what the gateway serves."""

from __future__ import annotations

import schemathesis
from starlette.routing import Route

from service.gateway.app import build_app
from service.gateway.openapi import document


def _routes() -> set[str]:
    app = build_app(gateway=None)  # type: ignore[arg-type]
    return {
        f"{method} {route.path}"
        for route in app.routes
        if isinstance(route, Route)
        for method in route.methods or ()
        if method != "HEAD"
    }


def _described() -> set[str]:
    return {
        f"{method.upper()} {path}"
        for path, operations in document("http://localhost:9000")["paths"].items()
        for method in operations
    }


def test_every_route_is_described_and_nothing_else():
    assert sorted(_routes() - _described()) == []
    assert sorted(_described() - _routes()) == []


def test_the_description_is_valid_openapi():
    schema = schemathesis.openapi.from_dict(document("http://localhost:9000"))
    schema.validate()
    assert {op.ok().label for op in schema.get_all_operations()} == _described()


async def test_the_gateway_serves_it_with_links_from_the_public_url(start_mailgate):
    mailgate = await start_mailgate(
        MAILGATE_API_TOKEN="t0ken", MAILGATE_PUBLIC_URL="https://x.test"
    )
    served = await mailgate.client.get("/openapi.json")
    assert served.status_code == 200
    assert served.json() == document("https://x.test")
    assert served.json()["servers"] == [{"url": "https://x.test"}]
