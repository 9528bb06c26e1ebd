"""The node's operator metrics: aggregate counters and gauges only, on a separate port (N7).

Not pure (reads the gateway's and engine's counters at scrape time). Exposed with
prometheus-client's text format on the operator port, never on the request port.

Invariants: every series is in `ALLOWED`; the only label is `outcome`, whose values are the fixed
set `OUTCOMES` (no per-request series, no ids, no content). Counts not in `OUTCOMES` are dropped.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

if TYPE_CHECKING:
    from collections.abc import Iterator

    from prometheus_client.registry import Collector as _Collector

    from node.gateway import Gateway
    from node.server import NodeServer
else:
    _Collector = object

OUTCOMES = ("submitted", "completed", "failed", "models", "rejected_media_type", "rejected_key",
            "rejected_decrypt", "rejected_replay", "rejected_busy", "rejected_date",
            "rejected_request", "rejected_limits", "rejected_overload", "rejected_size",
            "rejected_deadline")
ALLOWED = frozenset({
    "hushcc_node_requests", "hushcc_node_in_flight", "hushcc_engine_steps",
    "hushcc_engine_running", "hushcc_engine_waiting", "hushcc_engine_free_blocks",
    "hushcc_engine_preemptions", "hushcc_engine_cancelled",
})


class NodeCollector(_Collector):
    """Reads aggregate counts at scrape time."""

    def __init__(self, server: NodeServer) -> None:
        """Collect from `server` (its gateway and engine)."""
        self._server = server

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        """Yield the allowlisted families."""
        gateway: Gateway = self._server.gateway
        requests = CounterMetricFamily("hushcc_node_requests", "Requests by outcome",
                                       labels=["outcome"])
        for outcome in OUTCOMES:
            requests.add_metric([outcome], gateway.counts.get(outcome, 0))
        yield requests
        yield GaugeMetricFamily("hushcc_node_in_flight", "Requests in flight",
                                value=self._server.in_flight)
        stats = gateway.engine.stats()
        yield CounterMetricFamily("hushcc_engine_steps", "Engine steps", value=stats.steps)
        yield CounterMetricFamily("hushcc_engine_preemptions", "Preemptions",
                                  value=stats.preemptions)
        yield CounterMetricFamily("hushcc_engine_cancelled", "Cancelled sequences",
                                  value=stats.cancelled)
        yield GaugeMetricFamily("hushcc_engine_running", "Running sequences", value=stats.running)
        yield GaugeMetricFamily("hushcc_engine_waiting", "Waiting sequences", value=stats.waiting)
        yield GaugeMetricFamily("hushcc_engine_free_blocks", "Free KV blocks",
                                value=stats.free_blocks)


def operator_app(server: NodeServer) -> web.Application:
    """The operator port's application: `GET /metrics` only."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(NodeCollector(server))

    async def metrics(_request: web.Request) -> web.Response:
        return web.Response(body=generate_latest(registry),
                            headers={"Content-Type": "text/plain; version=0.0.4"})

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    return app
