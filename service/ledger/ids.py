"""Promise ids below a request, for code that must name one without the engine's help.

The SDK forms them (``resonate.ids.join_id``: ``<request id>:<n>`` for the request's n-th
durable call, a round's promise among them) and reads them back with ``origin_of``; only the
ledger and the engine import those helpers, so steps that know nothing of Resonate (the
``mailgate mail-test`` sample) and the reply-address codec ask here instead of joining or
splitting on ``:`` by hand.
"""

from __future__ import annotations

from resonate.ids import join_id


def call_id(request_id: str, seq: int) -> str:
    """The id the SDK gives the ``seq``-th durable call of ``request_id``'s workflow."""
    return join_id(request_id, str(seq))
