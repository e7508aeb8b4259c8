"""Prometheus metrics, one registry per app so that several apps can live in one process."""
from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "forumbridge_http_requests_total", "HTTP requests by route, method and status",
            ["route", "method", "status"], registry=self.registry,
        )
        self.latency = Histogram(
            "forumbridge_http_request_duration_seconds", "HTTP request latency by route",
            ["route", "method"], registry=self.registry,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
        )
        self.bookings = Counter(
            "forumbridge_bookings_total", "Room bookings by outcome (made or refused for a conflict)",
            ["outcome"], registry=self.registry,
        )

    def booking(self, outcome: str) -> None:
        self.bookings.labels(outcome).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)
