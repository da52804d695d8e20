"""The app metrics Prometheus scrapes from the fleet: labels per workload, never per pod."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class FleetMetrics:
    def __init__(self) -> None:
        disable_created_metrics()  # type: ignore[no-untyped-call]
        self.registry = CollectorRegistry()
        self.requests = Counter("http_requests_total", "HTTP requests served by the workload's pods",
                                ["namespace", "service", "code"], registry=self.registry)
        self.latency = Histogram("http_request_duration_seconds", "HTTP request latency in the workload's pods",
                                 ["namespace", "service"], buckets=LATENCY_BUCKETS, registry=self.registry)
        self.redis_errors = Counter("redis_client_errors_total", "Redis client errors seen by the workload's pods",
                                    ["namespace", "service", "error"], registry=self.registry)
        self.connections = Gauge("redis_client_connections", "Open Redis connections held by the workload's pods",
                                 ["namespace", "service"], registry=self.registry)
        # ingress-nginx names this counter without the _total suffix that prometheus_client would add to a Counter.
        self.nginx_requests = Gauge("nginx_ingress_controller_requests", "Requests through ingress-nginx",
                                    ["namespace", "ingress", "service", "status"], registry=self.registry)
        self.traefik_requests = Counter("traefik_service_requests_total", "Requests through Traefik",
                                        ["service", "code", "method", "protocol"], registry=self.registry)
