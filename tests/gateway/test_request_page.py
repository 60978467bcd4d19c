"""The operator's page for one request: rounds, summaries and decisions readable in a browser,
the JSON one click away, and the audit timeline of the request's recorded events."""

from __future__ import annotations

from support import local, wait_for_state

from service.gateway.context import pages
from service.status import RequestView, RoundView

AT = 1_767_261_600_000  # 2026-01-01 10:00 UTC


async def test_the_page_shows_every_round_and_its_decision(start_mailgate, page_server):
    mailgate = await start_mailgate()
    body = {"url": page_server.base + "/article", "email": "ivy@example.com"}
    request_id = (await mailgate.client.post("/requests", json=body)).json()["id"]
    first = await mailgate.notifier.wait_for(1)
    await mailgate.client.post(
        local(first.decide_url), data={"verdict": "reject", "reason": "Mention the sea stars."}
    )
    await mailgate.notifier.wait_for(2)
    await wait_for_state(mailgate.client, request_id, "waiting")

    page = await mailgate.client.get(f"/dashboard/{request_id}")

    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    html = page.text
    assert f'href="/requests/{request_id}">JSON</a>' in html
    assert html.count('class="card round"') == 2
    assert "Round 1" in html and "Round 2" in html
    assert "Rejected by ivy@example.com via link" in html
    assert "Mention the sea stars." in html
    assert '<span class="state waiting">waiting</span>' in html
    assert "Tide pools" in html
    timeline = html.split('id="timeline"', 1)[1]
    for sentence in (
        "Submitted by local.",
        "Round 1 summarized (extractive, textrank).",
        "Round 1 sent to ivy@example.com by recording.",
        "Rejected round 1 by ivy@example.com via link — address 127.0.0.1.",
        "Round 2 sent to ivy@example.com",
    ):
        assert sentence in timeline
    dashboard = await mailgate.client.get("/")
    assert f'href="/dashboard/{request_id}"' in dashboard.text


async def test_unknown_requests_get_an_html_404(start_mailgate):
    mailgate = await start_mailgate()
    page = await mailgate.client.get("/dashboard/mg-00000000000000000000")
    assert page.status_code == 404
    assert page.headers["content-type"].startswith("text/html")
    assert "no such request" in page.text


async def test_the_page_needs_the_operator_signed_in(start_mailgate, page_server):
    mailgate = await start_mailgate(MAILGATE_API_TOKEN="sesame")
    page = await mailgate.client.get("/dashboard/mg-00000000000000000000")
    assert page.status_code == 303
    assert page.headers["location"] == "/login"


def _view() -> RequestView:
    return RequestView(
        id="mg-0123456789abcdef0123",
        state="approved",
        url="https://example.com/tide-pools",
        approver="ivy@example.com",
        detail="approved by ivy@example.com via reply",
        created_at=AT,
        rounds=[
            RoundView(
                number=1,
                summary="Tide pools keep sea water.",
                summarizer="extractive",
                model="textrank",
                decision="approve",
                by="ivy@example.com",
                via="reply",
                decided_at=AT + 60_000,
                asked_at=AT + 1_000,
            )
        ],
    )


def test_the_audit_timeline_renders_only_the_events_it_is_given():
    template = pages().get_template("request.html")
    without = template.render(view=_view())
    assert "Audit timeline" not in without and 'id="timeline"' not in without
    events = [
        {"at": AT, "what": "submitted by the operator"},
        {"at": AT + 60_000, "what": "round 1 approved by ivy@example.com <via reply>"},
    ]
    shown = template.render(view=_view(), events=events)
    timeline = shown.split('id="timeline"', 1)[1]
    assert "2026-01-01 10:00 UTC" in timeline and "submitted by the operator" in timeline
    assert "2026-01-01 10:01 UTC" in timeline and "&lt;via reply&gt;" in timeline
    assert "No events recorded" in template.render(view=_view(), events=[])
