"""Prometheus metrics of the webhook receiver, in its own registry, served at ``/metrics``.

Counts only: no email, group or token is ever a label. Course ids are labels, bounded by
the course files the receiver was started with.
"""

from __future__ import annotations

from collections.abc import Sequence

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

# What became of a delivery; every one ends as exactly one of these.
OUTCOMES = (
    "provisioned",
    "nothing_to_provision",
    "ignored",
    "admin_skipped",
    "bad_signature",
    "bad_payload",
    "refused",
    "openwebui_error",
    "failed",
    "deadline",
    "busy",
    "duplicate",
    "in_progress",
    "bad_request",
    "too_large",
    "stalled",
)

# Provisioning a user takes a few seconds (the settle pause alone is 2 s by default).
_SECONDS_BUCKETS = (0.1, 0.25, 0.5, 1, 2, 3, 5, 8, 12, 20, 30, 60)


class WebhookMetrics:
    """Everything the receiver counts. One instance per receiver, made in ``create_app``."""

    def __init__(self, course_ids: Sequence[str]) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.deliveries = Counter(
            "owui_provision_webhook_deliveries",
            "Webhook deliveries answered, by outcome.",
            ("outcome",),
            registry=self.registry,
        )
        self.modules = Counter(
            "owui_provision_webhook_modules",
            "Module threads settled by deliveries, by course and status (created or existing).",
            ("course", "status"),
            registry=self.registry,
        )
        self.seconds = Histogram(
            "owui_provision_webhook_provision_seconds",
            "Time spent provisioning one delivery's courses (deliveries that reached OpenWebUI).",
            registry=self.registry,
            buckets=_SECONDS_BUCKETS,
        )
        # Every series exists from the start, so a rate over a fresh receiver is 0, not absent.
        for outcome in OUTCOMES:
            self.deliveries.labels(outcome)
        for course_id in course_ids:
            for status in ("created", "existing"):
                self.modules.labels(course_id, status)

    def render(self) -> bytes:
        return generate_latest(self.registry)
