"""A ceiling on request bodies, before any route reads one.

uvicorn reads whatever body a client sends, and a route that calls ``request.json()`` or
``request.form()`` holds all of it in memory; nothing Mailgate takes is larger than a URL and a
reason. A declared ``Content-Length`` over the limit is refused before a byte of the body is
read; a body sent without one (chunked) is counted as it arrives and refused once it passes
the limit, from inside the route that reads it, so the error map answers it like any other.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.errors import MailgateError

HTTP_MAX_BYTES_DEFAULT = 64 * 1024

Refuse = Callable[[Request, Exception], Awaitable[Response]]


class BodyTooLarge(MailgateError):
    def __init__(self, max_bytes: int) -> None:
        super().__init__(f"the body is larger than {max_bytes} bytes (MAILGATE_HTTP_MAX_BYTES)")
        self.max_bytes = max_bytes


class BodyLimit:
    def __init__(self, app: ASGIApp, *, max_bytes: int, refuse: Refuse) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.refuse = refuse

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None and declared > self.max_bytes:
            response = await self.refuse(Request(scope), BodyTooLarge(self.max_bytes))
            await response(scope, receive, send)
            return
        seen = 0

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise BodyTooLarge(self.max_bytes)
            return message

        await self.app(scope, counted, send)


def _content_length(scope: Scope) -> int | None:
    for name, value in scope["headers"]:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None
