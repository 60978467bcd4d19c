"""What the hostile-SMTP tests share: a request waiting for a reply, replies built from its
email, a byte-exact SMTP client for what well-behaved libraries refuse to send, and the
request's state and audit trail to assert that nothing was decided that must not be."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import make_msgid
from typing import Any

from smtp_sink import Sink
from support import Running, wait_for_state

ALICE = "alice@example.com"


@dataclass
class Waiting:
    """A request waiting for alice's answer, and the email that asked her."""

    mailgate: Running
    sink: Sink
    request_id: str
    ask: EmailMessage

    @property
    def port(self) -> int:
        assert self.mailgate.app.inbox is not None
        return self.mailgate.app.inbox.port

    @property
    def reply_to(self) -> str:
        return str(self.ask["Reply-To"])

    def reply(self, body: str, *, sender: str = f"Alice <{ALICE}>", **headers: str) -> bytes:
        """A reply as alice's client would write it, as CRLF bytes."""
        message = EmailMessage()
        message["From"] = sender
        message["To"] = self.reply_to
        message["Subject"] = "Re: " + str(self.ask["Subject"])
        message["Message-ID"] = make_msgid(domain="example.com")
        message["In-Reply-To"] = str(self.ask["Message-ID"])
        for name, value in headers.items():
            message[name.replace("_", "-")] = value
        message.set_content(body)
        return message.as_bytes(policy=message.policy.clone(linesep="\r\n"))

    async def asked(self, count: int) -> EmailMessage:
        """The ``count``-th email Mailgate sent (a reject asks again in a new round)."""
        async with asyncio.timeout(20):
            while len(self.sink.received) < count:
                await asyncio.sleep(0.02)
        return self.sink.received[count - 1].message

    async def state(self) -> str:
        return (await self.mailgate.client.get(f"/requests/{self.request_id}")).json()["state"]

    async def events(self) -> list[dict[str, Any]]:
        answer = await self.mailgate.client.get(f"/requests/{self.request_id}/events")
        body = answer.json()
        assert body["verification"]["verdict"] == "intact"
        return list(body["events"])

    async def decisions(self) -> list[dict[str, Any]]:
        return [e["data"] for e in await self.events() if e["kind"] == "decided"]

    async def refusals(self) -> list[str]:
        return [e["data"]["why"] for e in await self.events() if e["kind"] == "refused"]


async def waiting_for_alice(
    start_listener: Any, page_server: Any, submit: dict[str, str] | None = None, **overrides: str
) -> Waiting:
    """A listener started with ``overrides`` (env values), and a request (with the fields in
    ``submit`` too) waiting for alice."""
    mailgate, sink = await start_listener(**overrides)
    body = {"url": page_server.base + "/article", "email": ALICE, **(submit or {})}
    request_id = (await mailgate.client.post("/requests", json=body)).json()["id"]
    waiting = Waiting(mailgate, sink, request_id, EmailMessage())
    waiting.ask = await waiting.asked(1)
    await wait_for_state(mailgate.client, request_id, "waiting")
    return waiting


class Wire:
    """One SMTP session spoken byte by byte: what is written is exactly what is sent."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def open(cls, port: int, *, source: str | None = None) -> Wire:
        local = (source, 0) if source else None
        reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=local)
        return cls(reader, writer)

    async def reply(self, timeout: float = 20) -> tuple[int, str]:
        """The server's next reply (all lines of a multi-line one); (0, "") once it hung up."""
        lines: list[str] = []
        async with asyncio.timeout(timeout):
            while True:
                line = await self.reader.readline()
                if not line:
                    return 0, "\n".join(lines)
                text = line.decode("utf-8", "replace").rstrip("\r\n")
                lines.append(text[4:])
                if text[3:4] != "-":
                    return int(text[:3]), "\n".join(lines)

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def command(self, line: str) -> tuple[int, str]:
        await self.send(line.encode() + b"\r\n")
        return await self.reply()

    async def hello(self) -> None:
        assert (await self.reply())[0] == 220
        assert (await self.command("EHLO client.example"))[0] == 250

    async def deliver(self, sender: str, recipient: str, data: bytes) -> tuple[int, str]:
        """MAIL, RCPT, DATA and the data as given: the caller writes the end-of-data."""
        assert (await self.command(f"MAIL FROM:<{sender}>"))[0] == 250
        assert (await self.command(f"RCPT TO:<{recipient}>"))[0] == 250
        assert (await self.command("DATA"))[0] == 354
        await self.send(data)
        return await self.reply()

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(ConnectionError):
            await self.writer.wait_closed()
