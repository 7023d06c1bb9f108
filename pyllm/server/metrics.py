"""The server's metrics in Prometheus' text exposition format (version 0.0.4).

The engine counts what it runs (requests running and queued, prompt and generated tokens, KV
memory); the server adds what only it sees: requests by how they finished, and per request the
time to the first token and the time per output token after it, from the stream's timestamps.
Everything is updated on the event loop's thread, so no lock is needed.
"""
from __future__ import annotations

import bisect
from collections import Counter
from typing import Any

# seconds; the ranges vLLM uses, which cover a CPU's first tokens and per-token times
TTFT_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0)
TPOT_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5)


class Histogram:
    """A cumulative histogram over fixed upper bounds, as Prometheus reads it."""

    def __init__(self, name: str, help: str, buckets: tuple[float, ...]):
        self.name, self.help, self.buckets = name, help, buckets
        self.counts = [0] * (len(buckets) + 1)  # the last one is +Inf
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        """Count one observation."""
        self.counts[bisect.bisect_left(self.buckets, value)] += 1
        self.sum += value
        self.count += 1

    def lines(self) -> list[str]:
        """Its exposition lines: HELP, TYPE, one cumulative bucket per bound, sum and count."""
        out = [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} histogram"]
        total = 0
        for bound, n in zip((*self.buckets, float("inf")), self.counts):
            total += n
            le = "+Inf" if bound == float("inf") else repr(bound)
            out.append(f'{self.name}_bucket{{le="{le}"}} {total}')
        out += [f"{self.name}_sum {self.sum!r}", f"{self.name}_count {self.count}"]
        return out


class Metrics:
    """What /metrics reports: the engine's counters read at scrape time, and the server's own."""

    def __init__(self) -> None:
        self.ttft = Histogram("pyllm_time_to_first_token_seconds",
                              "Time from a request's arrival to its first generated token.", TTFT_BUCKETS)
        self.tpot = Histogram("pyllm_time_per_output_token_seconds",
                              "Mean time between a request's generated tokens after the first.", TPOT_BUCKETS)
        self.finished: Counter[str] = Counter()  # OpenAI finish reason, or "cancelled" / "error"
        self.rejected: Counter[str] = Counter()  # "queue_full", "context_full"

    def request_done(self, stream: Any, last_token_at: float | None, reason: str) -> None:
        """Record one finished request (an engine Stream): its timings and how it ended."""
        self.finished[reason] += 1
        if stream.first_token_at is not None:
            self.ttft.observe(stream.first_token_at - stream.submitted)
            n = stream.usage.completion_tokens
            if n > 1 and last_token_at is not None:
                self.tpot.observe(max(0.0, last_token_at - stream.first_token_at) / (n - 1))

    def render(self, stats: Any, model_name: str) -> str:
        """The exposition text, with the engine's stats (an EngineStats) read now."""
        def one(name: str, kind: str, help: str, value: float) -> list[str]:
            return [f"# HELP {name} {help}", f"# TYPE {name} {kind}", f"{name} {value}"]

        out = ["# HELP pyllm_model_info The model this server runs.", "# TYPE pyllm_model_info gauge",
               f'pyllm_model_info{{model="{_label(model_name)}"}} 1']
        out += one("pyllm_requests_running", "gauge", "Requests being generated now.", stats.running)
        out += one("pyllm_requests_queued", "gauge", "Requests waiting to be admitted.", stats.queued)
        out += one("pyllm_prompt_tokens_total", "counter", "Prompt tokens read.", stats.prompt_tokens)
        out += one("pyllm_generation_tokens_total", "counter", "Tokens generated.", stats.generated_tokens)
        out += one("pyllm_kv_blocks_used", "gauge", "KV cache blocks held by running requests.",
                   stats.kv_blocks_used)
        out += one("pyllm_kv_blocks_free", "gauge", "KV cache blocks free (or holding a prefix no request uses).",
                   stats.kv_blocks_free)
        out += one("pyllm_kv_cache_used_bytes", "gauge", "KV cache memory held by running requests.",
                   stats.kv_blocks_used * stats.kv_block_bytes)
        out += one("pyllm_kv_cache_free_bytes", "gauge", "KV cache memory left in the budget.",
                   stats.kv_blocks_free * stats.kv_block_bytes)
        out += ["# HELP pyllm_requests_finished_total Generation requests ended, by finish reason.",
                "# TYPE pyllm_requests_finished_total counter"]
        out += [f'pyllm_requests_finished_total{{reason="{r}"}} {self.finished[r]}'
                for r in sorted({"stop", "length", "cancelled", "error"} | set(self.finished))]
        out += ["# HELP pyllm_requests_rejected_total Generation requests refused before they ran, by cause.",
                "# TYPE pyllm_requests_rejected_total counter"]
        out += [f'pyllm_requests_rejected_total{{reason="{r}"}} {self.rejected[r]}'
                for r in sorted({"queue_full", "context_full"} | set(self.rejected))]
        out += self.ttft.lines() + self.tpot.lines()
        return "\n".join(out) + "\n"


def _label(value: str) -> str:
    """A label value escaped as the text format wants it."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
