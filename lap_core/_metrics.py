"""Prometheus metrics of a running `Lap`: what its reconciler and egress gateway decided, what its LLM
proxy metered (prometheus-client).

The server adds these to its `/metrics`; `lap worker --metrics-port` serves them on their own.
Each process counts what it did itself: sum them over the processes (PromQL `sum by (team)`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from collections.abc import Iterator

    from prometheus_client.metrics_core import Metric

    from lap_core._runtime import Lap

__all__ = ["DecisionCollector", "UsageCollector"]


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


class UsageCollector(Collector):
    """The model calls this process's LLM proxy metered, per team (`lap_core._vault.metering`).

    `lap_llm_tokens_total{team, kind}` (kind: input, output, cached), `lap_llm_cost_usd_total{team}`
    and `lap_llm_calls_total{team, outcome}` (recorded, no_usage, error, cut, budget_exceeded, unrecorded).
    """

    def __init__(self, lap: Lap) -> None:
        self._lap = lap

    def collect(self) -> Iterator[Metric]:
        """Yield the three counter families, read from `lap.usage_counters` at scrape time."""
        counters = self._lap.usage_counters
        tokens = CounterMetricFamily(
            "lap_llm_tokens",
            "Tokens of the model calls metered by this process, by team and kind.",
            labels=["team", "kind"],
        )
        for (team, kind), count in sorted(counters.tokens.items()):
            tokens.add_metric([team, kind], count)
        cost = CounterMetricFamily(
            "lap_llm_cost_usd", "What the gateway said the metered model calls cost, by team.", labels=["team"]
        )
        for team, usd in sorted(counters.cost_usd.items()):
            cost.add_metric([team], usd)
        calls = CounterMetricFamily(
            "lap_llm_calls",
            "Model calls through this process's LLM proxy, by team and outcome.",
            labels=["team", "outcome"],
        )
        for (team, outcome), count in sorted(counters.calls.items()):
            calls.add_metric([team, outcome], count)
        yield from (tokens, cost, calls)
