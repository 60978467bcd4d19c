"""The audit chain on its own (pure): what counts as intact, tampered or unverifiable."""

from __future__ import annotations

from dataclasses import replace

from service.domain import Seal
from service.ledger.audit import Event, key_id, signed, verify

OLD, NEW = "old-secret-0123456789", "new-secret-0123456789"
REQUEST = "mg-0123456789abcdef0123"


def chain(count: int, secrets: tuple[str, ...] = (NEW,)) -> list[Event]:
    events: list[Event] = []
    for seq in range(1, count + 1):
        event = Event(
            request_id=REQUEST,
            seq=seq,
            at=1_000 * seq,
            kind="note",
            data={"n": seq, "text": f"fact {seq}"},
            key=None,
            state="waiting",
            row={"id": REQUEST},
            prev=events[-1].hash if events else "",
        )
        events.append(signed(event, secrets))
    return events


def resign(events: list[Event], secrets: tuple[str, ...]) -> list[Event]:
    """What a forger who knew the secret would do: relink and re-MAC everything."""
    out: list[Event] = []
    for event in events:
        out.append(signed(replace(event, prev=out[-1].hash if out else ""), secrets))
    return out


def test_an_untouched_chain_is_intact():
    events = chain(5)
    result = verify(REQUEST, events, (NEW,), [("final outcome", events[-1].seal())])
    assert (result.verdict, result.events, result.problems) == ("intact", 5, [])


def test_an_edited_event_is_tampered():
    events = chain(5)
    events[2] = replace(events[2], data={"n": 3, "text": "approved by mallory"})
    result = verify(REQUEST, events, (NEW,))
    assert result.verdict == "tampered"
    assert [(p.seq, p.what) for p in result.problems][:2] == [
        (3, "MAC does not match its content"),
        (4, "does not follow the event before it"),
    ]


def test_a_dropped_event_is_tampered():
    events = chain(5)
    del events[1]
    result = verify(REQUEST, events, (NEW,))
    assert result.verdict == "tampered"
    assert any("should be" in p.what for p in result.problems)


def test_reordered_events_are_tampered():
    events = chain(4)
    events[1], events[2] = events[2], events[1]
    assert verify(REQUEST, events, (NEW,)).verdict == "tampered"


def test_an_inserted_event_without_the_secret_is_tampered():
    events = chain(3)
    forged = replace(events[1], seq=2, data={"n": 2, "text": "inserted"}, mac="00" * 32)
    events = [events[0], forged, *[replace(e, seq=e.seq + 1) for e in events[1:]]]
    assert verify(REQUEST, events, (NEW,)).verdict == "tampered"


def test_an_event_moved_to_another_request_is_tampered():
    events = chain(2)
    other = [replace(events[0], request_id="mg-ffffffffffffffffffff")]
    assert verify("mg-ffffffffffffffffffff", other, (NEW,)).verdict == "tampered"


def test_dropping_the_newest_events_is_caught_by_a_seal():
    events = chain(6)
    sealed_by_decision = events[4].seal()
    kept = events[:3]
    result = verify(REQUEST, kept, (NEW,), [("round mg-…:2", sealed_by_decision)])
    assert result.verdict == "tampered"
    assert result.problems[0].what == "round mg-…:2 seals event 5: missing"
    rewritten = resign(
        [*chain(5)[:3], replace(events[3], data={"n": 4, "text": "swapped"})], (NEW,)
    )
    assert verify(REQUEST, rewritten, (NEW,), [("outcome", events[3].seal())]).verdict == (
        "tampered"
    )


def test_after_rotation_old_events_verify_with_the_old_key_still_listed():
    old = chain(3, (OLD,))
    assert old[0].kid == key_id(OLD) != key_id(NEW)
    assert verify(REQUEST, old, (OLD, NEW)).verdict == "intact"


def test_a_retired_key_makes_events_unverifiable_not_tampered():
    old = chain(3, (OLD,))
    result = verify(REQUEST, old, (NEW,))
    assert result.verdict == "unverifiable"
    assert {p.seq for p in result.problems} == {1, 2, 3}
    assert "not configured" in result.problems[0].what


def test_tampering_is_reported_even_beside_unverifiable_events():
    old = chain(3, (OLD,))
    old[1] = replace(old[1], prev="f" * 64)
    assert verify(REQUEST, old, (NEW,)).verdict == "tampered"


def test_a_seal_on_a_different_event_is_tampered():
    events = chain(3)
    assert verify(REQUEST, events, (NEW,), [("x", Seal(2, "0" * 64))]).verdict == "tampered"


def test_events_round_trip_through_their_stored_value():
    event = chain(1)[0]
    assert Event.from_value(event.to_value()) == event
    assert Event.from_value(event.to_value()).hash == event.hash
