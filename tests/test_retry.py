"""The retry policy every step waits under: what is retried, the delays, the budget, the hook."""

from __future__ import annotations

from dataclasses import replace

import pytest
from support import Sleeps, jittered

from service import retry
from service.errors import Permanent, Transient
from service.retry import Policy, Retry


class Flaky:
    """Fails with ``errors`` in turn, then answers."""

    def __init__(self, *errors: Exception) -> None:
        self._errors = list(errors)
        self.calls = 0

    async def __call__(self) -> str:
        self.calls += 1
        if self._errors:
            raise self._errors.pop(0)
        return "done"


async def test_transient_failures_are_waited_out_with_doubling_capped_delays() -> None:
    work = Flaky(*(Transient(f"busy {n}") for n in range(6)))
    sleeps = Sleeps()
    heard: list[Retry] = []

    result = await Policy(first_s=1.0, max_s=8.0).run(work, sleep=sleeps, on_retry=heard.append)

    assert result == "done"
    assert sleeps == [1.0, 2.0, 4.0, 8.0, 8.0, 8.0]
    assert all(type(s) is float for s in sleeps)
    assert [(str(r.error), r.attempt, r.delay_s) for r in heard[:2]] == [
        ("busy 0", 1, 1.0),
        ("busy 1", 2, 2.0),
    ]
    assert work.calls == 7


async def test_without_a_budget_it_waits_as_long_as_it_takes() -> None:
    work = Flaky(*(Transient("down") for _ in range(200)))
    sleeps = Sleeps()

    assert await Policy(first_s=0.5, max_s=5.0).run(work, sleep=sleeps) == "done"

    assert len(sleeps) == 200
    assert sleeps[-1] == 5.0


async def test_anything_not_transient_escapes_at_once() -> None:
    for error in (Permanent("refused"), ValueError("a bug")):
        work = Flaky(error)
        sleeps = Sleeps()
        heard: list[Retry] = []

        with pytest.raises(type(error)):
            await Policy(first_s=1.0, max_s=8.0).run(work, sleep=sleeps, on_retry=heard.append)

        assert (work.calls, sleeps, heard) == (1, [], [])


async def test_the_last_transient_error_escapes_when_the_attempts_are_spent() -> None:
    work = Flaky(*(Transient(f"busy {n}") for n in range(5)))
    sleeps = Sleeps()

    with pytest.raises(Transient, match="busy 2"):
        await Policy(first_s=1.0, max_s=8.0, attempts=3).run(work, sleep=sleeps)

    assert work.calls == 3
    assert sleeps == [1.0, 2.0]


async def test_jitter_adds_up_to_the_first_delay_even_at_the_cap() -> None:
    """Rounds that failed together must not retry together, however long they wait."""
    sleeps = Sleeps()
    policy = Policy(first_s=1.0, max_s=4.0, jitter=True)

    await policy.run(Flaky(*(Transient("down") for _ in range(40))), sleep=sleeps)

    assert jittered(sleeps, [1.0, 2.0, 4.0] + [4.0] * 37, jitter_s=1.0)
    assert len(set(sleeps[2:])) > 30


async def test_other_errors_can_be_named_transient() -> None:
    work = Flaky(ConnectionRefusedError("no engine yet"))
    sleeps = Sleeps()

    assert await replace(retry.ENGINE, transient=(OSError,)).run(work, sleep=sleeps) == "done"

    assert sleeps == [retry.ENGINE.first_s]


def test_operator_fixable_trouble_is_waited_for_and_the_rest_is_bounded() -> None:
    """The budgets the steps rely on: a request waits for Ollama, the relay and the engine as
    long as it takes; pages and callbacks give up and say why."""
    assert (retry.OLLAMA.attempts, retry.SMTP.attempts, retry.ENGINE.attempts) == (None,) * 3
    assert retry.FETCH.attempts is not None
    assert retry.CALLBACK.attempts is not None
