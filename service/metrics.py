"""Prometheus metrics, one registry per process (never the library's global default).

Components get the ``Metrics`` object they record into; ``/metrics`` on the gateway renders
it. A worker or inbox process that serves no HTTP keeps its counters for logs only.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

__all__ = ["CONTENT_TYPE_LATEST", "Metrics"]


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "mailgate_requests",
            "Requests by what happened to them (submitted, and each way they end: approved, "
            "rejected, expired, cancelled, failed).",
            ["state"],
            registry=self.registry,
        )
        self.decisions = Counter(
            "mailgate_decisions",
            "Decisions recorded, by channel and verdict.",
            ["via", "verdict"],
            registry=self.registry,
        )
        self.emails = Counter(
            "mailgate_emails",
            "Approval requests handed to the notifier, by notifier and outcome.",
            ["notifier", "outcome"],
            registry=self.registry,
        )
        self.replies = Counter(
            "mailgate_inbound_replies",
            "Inbound replies by outcome (decided, unclear, ignored, refused).",
            ["outcome"],
            registry=self.registry,
        )
        self.reminders = Counter(
            "mailgate_reminders",
            "Reminders sent to approvers who had not answered.",
            registry=self.registry,
        )
        self.engine_requests = Counter(
            "mailgate_engine_requests",
            "Requests this process sent to the engine, by protocol kind; audit=1 for writes of "
            "audit events.",
            ["kind", "audit"],
            registry=self.registry,
        )
        self.step_seconds = Histogram(
            "mailgate_step_duration_seconds",
            "Duration of workflow steps.",
            ["step"],
            buckets=(0.05, 0.25, 1, 5, 15, 60, 180, 600, 1800),
            registry=self.registry,
        )

    def count_engine_request(self, kind: str, audit: bool) -> None:
        self.engine_requests.labels(kind, "1" if audit else "0").inc()

    def engine_calls(self, *, audit: bool = False) -> dict[str, int]:
        """Requests sent so far by kind, audit writes or the rest (for bench and tests)."""
        wanted = "1" if audit else "0"
        return {
            sample.labels["kind"]: int(sample.value)
            for metric in self.engine_requests.collect()
            for sample in metric.samples
            if sample.name.endswith("_total") and sample.labels["audit"] == wanted
        }

    def render(self) -> bytes:
        return generate_latest(self.registry)
