"""The summarize step against a real HTTP fake of Ollama (the real client, never mocked), and
the offline extractive peer with no NLTK data present."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from pathlib import Path

import nltk
import pytest

from service.domain import Summary
from service.errors import Permanent
from service.steps.summarize import (
    EMPTY_OUTPUT_ATTEMPTS,
    PAGE_END,
    PAGE_START,
    SYSTEM_PROMPT,
    EmptySummary,
    ExtractiveSummarizer,
    Feedback,
    OllamaSummarizer,
    Summarizer,
    build_messages,
    clip,
    context_tokens,
    ollama_available,
)
from service.testing import FakeOllama

PAGE = (
    "Tide pools are rocky hollows that keep sea water when the tide goes out. "
    "They shelter anemones, sea stars and small fish. "
    "The animals must survive heat, salt and waves every day. "
    "Visitors should step only on bare rock. "
    "Never lift animals out of the water, because they dry out quickly. "
    "Rangers lead free tide pool walks at low tide on weekends. "
    "Tickets for the walks are free but must be booked a week ahead."
)


class Sleeps:
    """An instant sleep that records the delays asked for and can act after the Nth one."""

    def __init__(self, after: int = 0, then: Callable[[], None] | None = None) -> None:
        self.delays: list[float] = []
        self._after = after
        self._then = then

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)
        if len(self.delays) == self._after and self._then is not None:
            self._then()


@pytest.fixture
def fake() -> Iterator[FakeOllama]:
    with FakeOllama() as server:
        yield server


def summarizer(fake: FakeOllama, **overrides: object) -> OllamaSummarizer:
    options: dict[str, object] = {
        "host": fake.url,
        "model": "llama3.1",
        "input_budget_chars": 2_000,
        "backoff_s": 1.0,
        "max_backoff_s": 4.0,
    }
    options.update(overrides)
    return OllamaSummarizer(**options)  # type: ignore[arg-type]


# --- the prompt (pure) ---


def test_first_round_prompt_holds_the_page_and_the_rules() -> None:
    system, user = build_messages(PAGE, (), budget=10_000)
    assert system == {"role": "system", "content": SYSTEM_PROMPT}
    assert "faithful" in SYSTEM_PROMPT
    assert "Never add" in SYSTEM_PROMPT
    assert user["role"] == "user"
    assert f"{PAGE_START}\n{PAGE}\n{PAGE_END}" in user["content"]
    assert "clipped" not in user["content"]
    assert "previous summary" not in user["content"].lower()


def test_reask_prompt_holds_previous_summary_and_reason() -> None:
    _, user = build_messages(
        PAGE, [Feedback("Rock pools exist.", "Mention the free walks.")], 10_000
    )
    content = user["content"]
    assert "Rock pools exist." in content
    assert "Mention the free walks." in content
    assert "revised summary" in content
    assert content.index(PAGE_END) < content.index("Rock pools exist.")


def test_every_earlier_reason_and_rejected_summary_reaches_the_prompt() -> None:
    history = [
        Feedback("Rock pools exist.", "Mention the free walks.", "alice@example.com"),
        Feedback("Rangers lead walks.", "Say that tickets must be booked.", "alice@example.com"),
    ]
    _, user = build_messages(PAGE, history, 10_000)
    content = user["content"]
    for text in ("Rock pools exist.", "Mention the free walks.", "Rangers lead walks."):
        assert text in content
    assert "Say that tickets must be booked." in content
    assert content.index("Mention the free walks.") < content.index("Say that tickets")
    assert "every reason above" in content


def test_many_rounds_shorten_old_summaries_not_the_reasons() -> None:
    history = [Feedback("word " * 2_000, f"reason number {n}") for n in range(12)]
    _, user = build_messages(PAGE, history, 10_000)
    content = user["content"]
    assert all(f"reason number {n}" in content for n in range(12))
    assert len(content) < 10_000 + 12_000


def test_reask_without_reason_still_asks_for_a_revision() -> None:
    _, user = build_messages(PAGE, [Feedback("Rock pools exist.", None)], 10_000)
    assert "Rock pools exist." in user["content"]
    assert "without giving a reason" in user["content"]


def test_long_page_is_clipped_at_a_sentence_and_says_so() -> None:
    budget = 200
    _, user = build_messages(PAGE, (), budget)
    page = user["content"].split(f"{PAGE_START}\n")[1].split(f"\n{PAGE_END}")[0]
    assert len(page) <= budget
    assert PAGE.startswith(page)
    assert page.endswith(".")
    assert f"first {len(page)} of {len(PAGE)} characters" in user["content"]


def test_clip_falls_back_to_a_space_then_to_a_hard_cut() -> None:
    words = "alpha beta gamma delta epsilon zeta eta theta"
    assert clip(words, 20) == "alpha beta gamma"
    assert clip("x" * 50, 20) == "x" * 20
    assert clip("short", 20) == "short"


def test_context_window_fits_the_largest_prompt() -> None:
    budget = 12_000
    history = [Feedback("p " * 1_000, "r " * 200) for _ in range(3)]
    system, user = build_messages("w " * budget, history, budget)
    prompt_chars = len(system["content"]) + len(user["content"])
    assert context_tokens(budget) * 3 >= prompt_chars
    assert context_tokens(budget) % 1024 == 0


# --- Ollama through the real client ---


async def test_summary_comes_from_ollama_and_records_the_model(fake: FakeOllama) -> None:
    ollama_summarizer = summarizer(fake)
    assert isinstance(ollama_summarizer, Summarizer)

    summary = await ollama_summarizer.summarize(PAGE)

    assert summary == Summary(
        "Tide pools are rocky hollows that keep sea water when the tide goes out.",
        "ollama",
        "llama3.1",
    )
    [call] = fake.chats
    assert call.model == "llama3.1"
    assert [m["role"] for m in call.messages] == ["system", "user"]
    assert PAGE in call.prompt
    assert call.options["num_ctx"] == context_tokens(2_000)


async def test_reask_sends_previous_summary_and_reason(fake: FakeOllama) -> None:
    summary = await summarizer(fake).summarize(
        PAGE, history=[Feedback("Rock pools exist.", "say when the walks are")]
    )
    assert summary.text.endswith("(revised: say when the walks are)")
    assert "Rock pools exist." in fake.chats[-1].prompt
    assert "say when the walks are" in fake.chats[-1].prompt


async def test_waits_for_ollama_to_come_up_with_capped_backoff(
    fake: FakeOllama, caplog: pytest.LogCaptureFixture
) -> None:
    fake.down()
    sleeps = Sleeps(after=5, then=fake.up)
    details: list[str] = []

    with caplog.at_level(logging.WARNING, logger="service.steps.summarize"):
        summary = await summarizer(fake, on_retry=details.append, sleep=sleeps).summarize(PAGE)

    assert summary.summarizer == "ollama"
    assert sleeps.delays == [1.0, 2.0, 4.0, 4.0, 4.0]
    assert len(details) == 5
    assert details[0] == (
        f"Ollama unreachable at {fake.url}, retrying (start it with `ollama serve`)"
    )
    assert len(fake.chats) == 1
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 5
    assert all("ollama serve" in w for w in warnings)


async def test_missing_model_waits_for_a_pull(fake: FakeOllama) -> None:
    fake.models = ()
    details: list[str] = []

    def pull() -> None:
        fake.models = ("llama3.1:latest",)

    sleeps = Sleeps(after=2, then=pull)
    summary = await summarizer(fake, on_retry=details.append, sleep=sleeps).summarize(PAGE)

    assert summary.model == "llama3.1"
    assert len(details) == 2
    assert "`ollama pull llama3.1`" in details[0]
    assert len(fake.chats) == 3


async def test_server_errors_are_retried(fake: FakeOllama) -> None:
    fake.fail_first = 2
    details: list[str] = []
    sleeps = Sleeps()

    summary = await summarizer(fake, on_retry=details.append, sleep=sleeps).summarize(PAGE)

    assert summary.text.startswith("Tide pools")
    assert sleeps.delays == [1.0, 2.0]
    assert all("HTTP 500" in d for d in details)
    assert len(fake.chats) == 3


async def test_empty_answers_fail_the_round_after_a_few_tries(fake: FakeOllama) -> None:
    fake.reply = lambda _messages: "   "

    with pytest.raises(EmptySummary, match=r"llama3\.1 returned an empty summary") as caught:
        await summarizer(fake, sleep=Sleeps()).summarize(PAGE)

    assert isinstance(caught.value, Permanent)
    assert len(fake.chats) == EMPTY_OUTPUT_ATTEMPTS


async def test_a_slow_model_is_waited_for_not_retried(fake: FakeOllama) -> None:
    fake.delay_s = 0.5
    sleeps = Sleeps()

    summary = await summarizer(fake, sleep=sleeps).summarize(PAGE)

    assert summary.text.startswith("Tide pools")
    assert sleeps.delays == []
    assert len(fake.chats) == 1


# --- is Ollama usable? ---


@pytest.mark.parametrize("model", ["llama3.1", "llama3.1:latest"])
async def test_available_when_the_model_is_pulled(fake: FakeOllama, model: str) -> None:
    assert await ollama_available(fake.url, model) is None


async def test_unavailable_model_says_how_to_pull_it(fake: FakeOllama) -> None:
    message = await ollama_available(fake.url, "llama3.1:70b")
    assert message == "model llama3.1:70b is not pulled: run `ollama pull llama3.1:70b`"


async def test_unreachable_ollama_says_how_to_start_it(fake: FakeOllama) -> None:
    fake.down()
    message = await ollama_available(fake.url, "llama3.1")
    assert message == f"Ollama is not reachable at {fake.url}: start it with `ollama serve`"


async def test_credentials_in_the_host_never_reach_messages(fake: FakeOllama) -> None:
    fake.down()
    host = fake.url.replace("http://", "http://user:s3cret@")
    message = await ollama_available(host, "llama3.1")
    assert message is not None
    assert "s3cret" not in message
    assert fake.url in message


# --- the offline extractive peer ---


@pytest.fixture
def no_nltk_data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """NLTK looks nowhere but an empty folder, as on a machine where nothing was downloaded."""
    monkeypatch.setattr(nltk.data, "path", [str(tmp_path)])
    with pytest.raises(LookupError):
        nltk.sent_tokenize("NLTK data is absent. This proves it.")


@pytest.mark.usefixtures("no_nltk_data")
async def test_extractive_summary_works_offline_and_is_deterministic() -> None:
    extractive = ExtractiveSummarizer(sentences=3, input_budget_chars=10_000)
    assert isinstance(extractive, Summarizer)

    first = await extractive.summarize(PAGE)
    second = await ExtractiveSummarizer(sentences=3, input_budget_chars=10_000).summarize(PAGE)

    assert first == second
    assert (first.summarizer, first.model) == ("extractive", "textrank")
    picked = [s for s in _page_sentences() if s in first.text]
    assert len(picked) == 3
    assert first.text == " ".join(picked)


@pytest.mark.usefixtures("no_nltk_data")
async def test_extractive_reask_favours_the_reason_and_never_repeats_itself() -> None:
    extractive = ExtractiveSummarizer(sentences=2, input_budget_chars=10_000)
    first = await extractive.summarize(PAGE)

    revised = await extractive.summarize(
        PAGE, history=[Feedback(first.text, "what about tickets and booking?")]
    )

    assert revised.text != first.text
    assert "Tickets for the walks are free but must be booked a week ahead." in revised.text


@pytest.mark.usefixtures("no_nltk_data")
async def test_extractive_reask_without_matching_reason_offers_more() -> None:
    extractive = ExtractiveSummarizer(sentences=2, input_budget_chars=10_000)
    first = await extractive.summarize(PAGE)

    revised = await extractive.summarize(PAGE, history=[Feedback(first.text, "zzz")])

    assert revised.text != first.text
    assert all(s in revised.text for s in _page_sentences() if s in first.text)


@pytest.mark.usefixtures("no_nltk_data")
async def test_extractive_third_round_honours_both_reasons_and_repeats_neither() -> None:
    extractive = ExtractiveSummarizer(sentences=2, input_budget_chars=10_000)
    first = await extractive.summarize(PAGE)
    second = await extractive.summarize(PAGE, history=[Feedback(first.text, "tickets booking")])
    third = await extractive.summarize(
        PAGE,
        history=[Feedback(first.text, "tickets booking"), Feedback(second.text, "rangers walks")],
    )
    assert third.text not in (first.text, second.text)
    assert "Tickets for the walks" in third.text
    assert "Rangers lead free tide pool walks" in third.text


@pytest.mark.usefixtures("no_nltk_data")
async def test_extractive_reads_only_the_budget() -> None:
    extractive = ExtractiveSummarizer(sentences=10, input_budget_chars=130)
    summary = await extractive.summarize(PAGE)
    assert summary.text == " ".join(_page_sentences()[:2])


async def test_extractive_refuses_a_page_without_sentences() -> None:
    extractive = ExtractiveSummarizer(input_budget_chars=10_000)
    with pytest.raises(EmptySummary, match="no sentences"):
        await extractive.summarize("   \n  ")


def _page_sentences() -> list[str]:
    return [s if s.endswith(".") else f"{s}." for s in PAGE.split(". ")]


async def test_extractive_keeps_headings_out_of_sentences():
    text = "How tide pools work\nHow tide pools work\nHome | About\n" + (
        "Tide pools are hollows in rocky shores that keep sea water. "
        "Visitors should never lift animals out of the water.\n"
    )
    summary = await ExtractiveSummarizer(input_budget_chars=5000).summarize(text)
    assert summary.text.startswith("Tide pools are hollows")
    assert "How tide pools work" not in summary.text and "Home" not in summary.text


@pytest.mark.usefixtures("no_nltk_data")
async def test_extractive_never_glues_a_heading_to_the_next_sentence():
    text = (
        "Why hedgehogs roll into balls\n"
        "When threatened, a hedgehog rolls into a tight ball of spines.\n"
        "Muscles along its back pull the spiny skin over the head and legs.\n"
        "How long can a hedgehog stay curled up\n"
        "A frightened hedgehog can stay curled up for hours until the danger passes.\n"
    )
    summary = await ExtractiveSummarizer(input_budget_chars=5000).summarize(text)
    assert summary.text.startswith("When threatened, a hedgehog rolls")
    assert "balls When" not in summary.text
    assert "Why hedgehogs" not in summary.text and "How long can" not in summary.text


@pytest.mark.usefixtures("no_nltk_data")
async def test_extractive_gives_lines_without_a_full_stop_a_line_each():
    lines = [
        "Roll into a ball of spines when threatened",
        "Stay curled up for hours until the danger passes",
        "Uncurl slowly and sniff the air before moving on",
    ]
    summary = await ExtractiveSummarizer(input_budget_chars=5000).summarize("\n".join(lines))
    assert summary.text.splitlines() == lines
