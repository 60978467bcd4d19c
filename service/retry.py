"""How Mailgate waits out trouble: one retry policy for every step that talks to the world.

A step raises ``errors.Transient`` for trouble that waiting can fix and anything else
(``errors.Permanent`` above all) for trouble it cannot; ``Policy.run`` tries the step again after
each transient failure and lets everything else through at once. The policies below are the
whole of it, one per step:

- Each delay doubles from ``first_s`` up to ``max_s``.
- With ``jitter``, up to ``first_s`` more is added *after* the cap. Steps that failed together
  (a worker restart replays every waiting request at once; a site, the mail relay or a callback
  receiver comes back for all of them) spread out and stay spread at the cap, instead of
  knocking on one server in lockstep. Ollama (local, one queue) and the engine wait (one caller
  per process) keep exact delays.
- ``attempts`` bounds a step whose failure the request can report and survive (a page that
  will not load fails the request with the cause; a callback receiver that stays down is
  recorded as such, and the decision stands). ``None`` waits as long as it takes, for trouble
  an operator fixes (Ollama stopped or its model not pulled, the mail relay down, the engine not
  up yet): giving up there would fail requests that are fine.

Nothing here sleeps or logs by itself: each caller passes its ``sleep`` (tests record the
delays instead of waiting) and an ``on_retry`` hook that logs and writes the note the status
page shows (``workflow.current_request`` routes it to the request).

Built on tenacity rather than stamina. stamina is tenacity with good defaults, but its test mode
(``stamina.set_testing``) and its retry hooks (``set_on_retry_hooks``) are process-wide, while
each Mailgate step takes its own sleep and routes its notes to the request it works for;
tenacity takes both per call.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception_type,
    stop_after_attempt,
    stop_never,
    wait_exponential,
    wait_random,
)
from tenacity.wait import wait_base

from service.errors import Transient

Sleep = Callable[[float], Awaitable[object]]


@dataclass(frozen=True)
class Retry:
    """A failed try about to be waited out, as a step's ``on_retry`` hook hears it."""

    error: BaseException
    attempt: int
    """Tries made so far (the one that just failed included)."""
    delay_s: float


def _quiet(_retry: Retry) -> None:
    """For steps with nothing to report while they wait."""


@dataclass(frozen=True)
class Policy:
    """What a step tries again after, how long it waits in between, and for how many tries."""

    first_s: float
    max_s: float
    jitter: bool = False
    attempts: int | None = None
    """None: until it works."""
    transient: tuple[type[BaseException], ...] = (Transient,)

    def delays(self) -> wait_base:
        capped = wait_exponential(multiplier=self.first_s, max=self.max_s)
        return capped + wait_random(0, self.first_s) if self.jitter else capped

    async def run[T](
        self,
        work: Callable[[], Awaitable[T]],
        *,
        sleep: Sleep = asyncio.sleep,
        on_retry: Callable[[Retry], None] = _quiet,
    ) -> T:
        """``work()``'s result; a non-transient error escapes at once, and the last transient
        one escapes when the attempts are spent."""

        async def attempt() -> T:
            return await work()  # a coroutine function, so tenacity awaits it

        async def wait(seconds: float) -> None:
            await sleep(float(seconds))  # tenacity hands over a float subclass

        def heard(state: RetryCallState) -> None:
            assert state.outcome is not None and state.next_action is not None
            error = state.outcome.exception()
            assert error is not None
            on_retry(Retry(error, state.attempt_number, state.next_action.sleep))

        retrying = AsyncRetrying(
            retry=retry_if_exception_type(self.transient),
            wait=self.delays(),
            stop=stop_never if self.attempts is None else stop_after_attempt(self.attempts),
            sleep=wait,
            before_sleep=heard,
            reraise=True,
        )
        return await retrying(attempt)


FETCH = Policy(first_s=1.0, max_s=60.0, jitter=True, attempts=4)
"""``MAILGATE_FETCH_ATTEMPTS`` (default 4) sets the attempts; the last cause fails the request."""
SMTP = Policy(first_s=1.0, max_s=60.0, jitter=True)
"""The round waits for the relay; a 5xx rejection is ``Permanent`` and is not retried."""
OLLAMA = Policy(first_s=2.0, max_s=60.0)
"""Ollama stopped, the model not pulled, a 5xx or 429: waited for with a note saying the fix."""
CALLBACK = Policy(first_s=1.0, max_s=300.0, jitter=True, attempts=8)
"""Eight tries over about two minutes, then the callback is recorded as not delivered."""
ENGINE = Policy(first_s=0.5, max_s=5.0)
"""A split role that starts before its engine; ``service.app`` names the SDK's errors to wait
out, so that nothing else here knows Resonate."""
