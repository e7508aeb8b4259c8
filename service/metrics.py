"""Prometheus metrics, one registry per app so that several apps can live in one process."""
from __future__ import annotations

import os
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector


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

        # The children of a route, method and status, looked up once: `labels()` validates and
        # joins its arguments on every call, about 1.5 us each on the request path.
        self._request_children: dict[tuple[str, str, int], tuple[Any, Any]] = {}

    def request(self, route: str, method: str, status: int, seconds: float) -> None:
        """Count one answered request and observe its latency."""
        children = self._request_children.get((route, method, status))
        if children is None:
            children = (self.requests.labels(route, method, str(status)), self.latency.labels(route, method))
            self._request_children[(route, method, status)] = children
        children[0].inc()
        children[1].observe(seconds)

    def booking(self, outcome: str) -> None:
        self.bookings.labels(outcome).inc()

    def render(self) -> bytes:
        """The text format. Under `serve --workers N` every process writes its values to files in
        PROMETHEUS_MULTIPROC_DIR, and whichever process is scraped sums them all."""
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            registry = CollectorRegistry()
            MultiProcessCollector(registry)
            return generate_latest(registry)
        return generate_latest(self.registry)
