"""One error vocabulary, split by who raises it.

Errors carry the evidence a caller needs to explain the failure (the host that did not
resolve, when a token was signed) but no status codes: each transport maps them itself.
``Permanent`` marks failures that retrying cannot fix, so the workflow fails at once with the
error's message as its status; ``Transient`` marks the ones that waiting may fix, which a
step's retry policy (``service.retry``) waits out and never lets reach the workflow.
"""

from __future__ import annotations


class MailgateError(Exception):
    """Root of every error Mailgate raises on purpose."""


class Permanent(MailgateError):
    """Retrying will not help: the request fails with this message."""


class Transient(MailgateError):
    """Not this time; trying again later may succeed. The message says what went wrong (and
    what would fix it, where an operator can), for logs and the request's status."""


class HostNotFound(Permanent):
    """``args`` holds only the host, so the error survives the SDK's pickling intact."""

    def __init__(self, host: str) -> None:
        self.host = host
        super().__init__(host)

    def __str__(self) -> str:
        return f"cannot resolve host {self.host}"


class BlockedUrl(Permanent):
    """The URL (or a redirect) leads somewhere Mailgate must not fetch (SSRF guard)."""


class UnusablePage(Permanent):
    """The page was fetched but cannot be summarized (not HTML, empty, too large)."""


class FetchFailed(Permanent):
    """Transient fetch errors outlasted the retry budget."""


class DeliveryRejected(Permanent):
    """The mail server permanently refused the message (5xx)."""


class BadToken(MailgateError):
    """A decision token was forged, altered, or minted for another purpose."""


class ExpiredToken(BadToken):
    def __init__(self, signed_at: int) -> None:
        self.signed_at = signed_at
        super().__init__(signed_at)

    def __str__(self) -> str:
        return "this decision link has expired"


class ConfigError(MailgateError):
    """A setting is missing or malformed; the message names the variable."""
