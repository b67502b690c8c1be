"""Prometheus metrics of one server (its own registry: no process-wide globals)."""

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest


class ServerMetrics:
    def __init__(self, engine_requests: Callable[[], float] | None = None) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "cxr_rl_requests",
            "HTTP requests by endpoint and status",
            ["endpoint", "status"],
            registry=self.registry,
        )
        self.completions = Counter("cxr_rl_completions", "completions generated", registry=self.registry)
        self.tokens = Counter("cxr_rl_generated_tokens", "tokens generated", registry=self.registry)
        self.prompt_tokens = Counter(
            "cxr_rl_prompt_tokens", "prompt tokens processed", registry=self.registry
        )
        self.queue_depth = Gauge("cxr_rl_queue_depth", "items waiting or generating", registry=self.registry)
        self.engine_requests = Gauge(
            "cxr_rl_engine_requests",
            "requests inside the vLLM engine (waiting or running)",
            registry=self.registry,
        )
        if engine_requests is not None:
            self.engine_requests.set_function(engine_requests)
        self.adapter_version = Gauge(
            "cxr_rl_adapter_version", "latest loaded version per adapter", ["adapter"], registry=self.registry
        )
        self.swap_seconds = Histogram(
            "cxr_rl_adapter_swap_seconds",
            "time from adapter upload to live (canary included)",
            buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=self.registry,
        )

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
