"""The fake Ollama speaks the API the real ``ollama`` client expects, over real HTTP."""

from __future__ import annotations

import asyncio
import signal
import sys
import time
from collections.abc import Iterator

import httpx
import ollama
import pytest

from service.steps.summarize import Feedback, build_messages, ollama_available
from service.testing import FakeOllama, echo_summary

HELLO = [{"role": "user", "content": "Hello there. How are you?"}]


@pytest.fixture
def fake() -> Iterator[FakeOllama]:
    with FakeOllama() as server:
        yield server


async def test_chat_without_streaming(fake: FakeOllama) -> None:
    async with ollama.AsyncClient(host=fake.url) as client:
        response = await client.chat(model="llama3.1", messages=HELLO, options={"seed": 1})
    assert response.message.content == "Hello there."
    assert response.done is True
    [call] = fake.chats
    assert (call.model, call.messages, call.options, call.stream) == (
        "llama3.1",
        HELLO,
        {"seed": 1},
        False,
    )


async def test_chat_streams_ndjson(fake: FakeOllama) -> None:
    fake.reply = lambda _messages: "one two three"
    async with ollama.AsyncClient(host=fake.url) as client:
        parts = [part async for part in await client.chat("llama3.1", HELLO, stream=True)]
    assert "".join(p.message.content or "" for p in parts) == "one two three"
    assert [p.done for p in parts] == [False, False, False, True]
    assert fake.chats[0].stream is True


async def test_unknown_model_gets_ollamas_404(fake: FakeOllama) -> None:
    async with ollama.AsyncClient(host=fake.url) as client:
        with pytest.raises(ollama.ResponseError) as caught:
            await client.chat(model="mistral", messages=HELLO)
    assert caught.value.status_code == 404
    assert caught.value.error == 'model "mistral" not found, try pulling it first'
    assert len(fake.chats) == 1


async def test_tags_and_version_describe_the_pulled_models(fake: FakeOllama) -> None:
    fake.models = ("llama3.1", "qwen2.5:7b")
    async with ollama.AsyncClient(host=fake.url) as client:
        listing = await client.list()
    assert [m.model for m in listing.models] == ["llama3.1:latest", "qwen2.5:7b"]
    async with httpx.AsyncClient(base_url=fake.url) as http:
        assert (await http.get("/api/version")).json() == {"version": "0.0.0-fake"}
        assert (await http.get("/")).text == "Ollama is running"


async def test_first_failures_answer_500_then_recover(fake: FakeOllama) -> None:
    fake.fail_first = 1
    async with ollama.AsyncClient(host=fake.url) as client:
        with pytest.raises(ollama.ResponseError) as caught:
            await client.chat(model="llama3.1", messages=HELLO)
        assert caught.value.status_code == 500
        response = await client.chat(model="llama3.1", messages=HELLO)
    assert response.message.content == "Hello there."
    assert len(fake.chats) == 2


async def test_delay_holds_each_reply(fake: FakeOllama) -> None:
    fake.delay_s = 0.3
    started = time.monotonic()
    async with ollama.AsyncClient(host=fake.url) as client:
        await asyncio.gather(
            client.chat(model="llama3.1", messages=HELLO),
            client.chat(model="llama3.1", messages=HELLO),
        )
    elapsed = time.monotonic() - started
    assert 0.3 <= elapsed < 2.0
    assert len(await fake.wait_for_chats(2, timeout_s=1)) == 2


async def test_down_refuses_connections_and_up_serves_the_same_port(fake: FakeOllama) -> None:
    url = fake.url
    fake.down()
    async with ollama.AsyncClient(host=url) as client:
        with pytest.raises(ConnectionError):
            await client.chat(model="llama3.1", messages=HELLO)
    fake.up()
    assert fake.url == url
    async with ollama.AsyncClient(host=url) as client:
        response = await client.chat(model="llama3.1", messages=HELLO)
    assert response.message.content == "Hello there."


async def test_wait_for_chats_times_out_with_a_count(fake: FakeOllama) -> None:
    with pytest.raises(TimeoutError, match="saw 0 chat requests, expected 1"):
        await fake.wait_for_chats(1, timeout_s=0.1)


def test_echo_summary_marks_a_revision() -> None:
    first = build_messages("First fact here. Second fact.", (), 1_000)
    again = build_messages("First fact here. Second fact.", [Feedback("First.", "add more")], 1_000)
    third = build_messages(
        "First fact here. Second fact.",
        [Feedback("First.", "add more"), Feedback("Second.", "and dates")],
        1_000,
    )
    assert echo_summary(first) == "First fact here."
    assert echo_summary(again) == "First fact here. (revised: add more)"
    assert echo_summary(third) == "First fact here. (revised: add more; and dates)"


@pytest.mark.slow
async def test_fake_runs_as_a_subprocess() -> None:
    process = await asyncio.create_subprocess_exec(
        *[sys.executable, "-m", "service.testing", "fake-ollama", "--model", "phi3"],
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        assert process.stdout is not None
        line = await asyncio.wait_for(process.stdout.readline(), 20)
        url = line.decode().rsplit(" ", 1)[1].strip()
        assert await ollama_available(url, "phi3") is None
        assert await ollama_available(url, "llama3.1") == (
            "model llama3.1 is not pulled: run `ollama pull llama3.1`"
        )
    finally:
        process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(process.wait(), 10) == 0


async def test_down_cuts_off_a_slow_reply_at_once(fake: FakeOllama) -> None:
    fake.delay_s = 30
    async with ollama.AsyncClient(host=fake.url) as client:
        chat = asyncio.create_task(client.chat(model="llama3.1", messages=HELLO))
        await fake.wait_for_chats(1)
        started = time.monotonic()
        await asyncio.to_thread(fake.down)
        with pytest.raises(ollama.ResponseError):
            await chat
    assert time.monotonic() - started < 5
