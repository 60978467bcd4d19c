"""The operator's page for one request: every round's summary and decision, the JSON one click
away. The dashboard lists requests; this is where one is read."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from service import requests
from service.gateway.routes import NotFound, gateway


async def request_page(request: Request) -> Response:
    gw = gateway(request)
    if not gw.api_allowed(request):
        return RedirectResponse("/login", status_code=303)
    found = await requests.view(gw.resonate, request.path_params["request_id"], gw.progress)
    if found is None:
        raise NotFound("no such request")
    return gw.render(request, "request.html", {"view": found})
