"""Prometheus metrics of a running `Lap`: what its reconciler and egress gateway decided (prometheus-client).

The server adds these to its `/metrics`; `lap worker --metrics-port` serves them on their own.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from collections.abc import Iterator

    from prometheus_client.metrics_core import Metric

    from lap_core._runtime import Lap

__all__ = ["DecisionCollector"]


class DecisionCollector(Collector):
    """The decisions of this process: `lap_reconciler_decisions_total` (by action and reason) and
    `lap_egress_decisions_total` (its egress gateway's, by decision and team)."""

    def __init__(self, lap: Lap) -> None:
        self._lap = lap

    def collect(self) -> Iterator[Metric]:
        """Yield the counter family, read from `lap.decisions` at scrape time."""
        family = CounterMetricFamily(
            "lap_reconciler_decisions",
            "What the reconciler of this process's worker decided, by action and reason.",
            labels=["action", "reason"],
        )
        for (action, reason), count in sorted(self._lap.decisions.counts.items()):
            family.add_metric([action, reason], count)
        yield family
        egress = CounterMetricFamily(
            "lap_egress_decisions",
            "What this process's egress gateway decided on sandboxes' connections, by decision and team.",
            labels=["decision", "team"],
        )
        gateway = getattr(self._lap, "egress", None)
        for (decision, team), count in sorted(gateway.decisions.items() if gateway is not None else ()):
            egress.add_metric([decision, team], count)
        yield egress
