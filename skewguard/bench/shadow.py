"""Benchmark: what shadow mode costs the request path — production latency with shadow off vs on.

One process, one embedded broker (Tansu), one real :class:`~skewguard.serving.ServingLogger`:

1. **Models.** Production is a small torch MLP over ``FEATURES`` numeric features (the demo CTR model's
   shape, sigmoid output) behind :func:`~skewguard.shadow.torch_scorer`. The candidate is a deeper MLP
   whose depth is calibrated at the start of the run so that scoring ONE request takes about
   ``slowdown`` times production's time (each the median of single-request calls, the two models'
   calls interleaved); the measured ratio is reported as ``candidate_slowdown``.
2. **Two arms, the same apart from shadow.** Both are a :class:`~skewguard.shadow.ShadowRunner` around
   the same production scorer and logging to the same ServingLogger: *off* has no candidates (the
   runner logs each request in ``predict``), *on* has the candidate (``predict`` queues the request;
   a background worker scores it in batches and logs one record with its shadow prediction).
3. **Steady load.** Requests are issued one at a time at ``rate_per_s`` on a fixed schedule (sleeping
   until each request's slot; a late request is issued at once, not skipped). The arms alternate in
   ``blocks`` blocks (off, on, off, on, ...) so that load from other processes on the machine falls on
   both alike; between blocks the runner and the logger are flushed (outside the measurement). Each
   arm first serves ``warmup`` untimed requests.
4. **Latency** is the wall time of ``runner.predict(...)`` per request (``perf_counter_ns``): the
   request path as the serving code sees it. Percentiles are numpy's (linear interpolation).

``p99_overhead_ms = p99_on_ms - p99_off_ms``; ``dropped`` counts requests the candidate never saw
because the shadow queue was full (never the case at a sustainable rate); ``candidate_scored`` the
requests it did score; ``logged`` the records the broker acknowledged.
"""

from __future__ import annotations

import math
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final

import numpy as np
import torch
from torch import nn

from skewguard.errors import ConfigError
from skewguard.io.broker import EmbeddedBroker
from skewguard.io.kafka import KafkaSettings, ensure_topics
from skewguard.serving import ServingLogger
from skewguard.shadow import ShadowRunner, TorchScorer, torch_scorer

__all__ = ["bench_shadow"]

FEATURES: Final = 16
#: Distinct feature dicts cycled through by the requests (so building them is not in the timing).
_POOL: Final = 1024
_CANDIDATE_WIDTH: Final = 64
_MAX_DEPTH: Final = 64
#: Re-measurements that may deepen a candidate found short of the requested slowdown.
_DEEPEN_ATTEMPTS: Final = 3
_CALIBRATION_CALLS: Final = 200


def _feature_names() -> list[str]:
    return [f"f{i:02d}" for i in range(FEATURES)]


def _encoder(names: Sequence[str]) -> Callable[[Sequence[Mapping[str, Any]]], torch.Tensor]:
    def encode(batch: Sequence[Mapping[str, Any]]) -> torch.Tensor:
        return torch.tensor([[row[name] for name in names] for row in batch], dtype=torch.float32)

    return encode


def _production_module(generator: torch.Generator) -> nn.Module:
    module = nn.Sequential(nn.Linear(FEATURES, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 1))
    _init(module, generator)
    return module


def _candidate_module(depth: int, generator: torch.Generator) -> nn.Module:
    layers: list[nn.Module] = [nn.Linear(FEATURES, _CANDIDATE_WIDTH), nn.ReLU()]
    for _ in range(depth):
        layers += [nn.Linear(_CANDIDATE_WIDTH, _CANDIDATE_WIDTH), nn.ReLU()]
    layers.append(nn.Linear(_CANDIDATE_WIDTH, 1))
    module = nn.Sequential(*layers)
    _init(module, generator)
    return module


def _init(module: nn.Module, generator: torch.Generator) -> None:
    """Seeded weights without touching torch's global RNG."""
    with torch.no_grad():
        for parameter in module.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.1)


def _single_call_ms(scorers: Sequence[TorchScorer], pool: Sequence[Mapping[str, Any]]) -> list[float]:
    """Median wall time of scoring one request alone, per scorer, the scorers' calls interleaved.

    Interleaved so that load from other processes falls on every scorer alike: the ratio is steadier
    than the two times.
    """
    for scorer in scorers:
        for row in pool[:20]:
            scorer(row)
    times: list[list[int]] = [[] for _ in scorers]
    for i in range(_CALIBRATION_CALLS):
        row = pool[i % len(pool)]
        for scorer, spent in zip(scorers, times, strict=True):
            started = time.perf_counter_ns()
            scorer(row)
            spent.append(time.perf_counter_ns() - started)
    return [float(np.median(spent)) / 1e6 for spent in times]


def _calibrated_candidate(
    production: TorchScorer,
    slowdown: float,
    encode: Callable[[Sequence[Mapping[str, Any]]], torch.Tensor],
    pool: Sequence[Mapping[str, Any]],
    generator: torch.Generator,
) -> tuple[TorchScorer, int, float, float]:
    """A candidate about ``slowdown`` x slower than production per request: its depth, and both times.

    A layer costs about the same at any depth, so the time of a shallow and of a deep candidate give
    the depth for the target; the chosen candidate is then measured again against production, and
    deepened (a few times at most) while that measurement falls short of ``slowdown``: the benchmark's
    premise is a candidate at least that much slower, not one that missed it by timing noise.
    """

    def build(depth: int) -> TorchScorer:
        return torch_scorer(_candidate_module(depth, generator), encode, output=torch.sigmoid)

    shallow, deep = 1, _MAX_DEPTH // 2
    production_ms, shallow_ms, deep_ms = _single_call_ms([production, build(shallow), build(deep)], pool)
    per_layer = max((deep_ms - shallow_ms) / (deep - shallow), 1e-6)
    depth = math.ceil(shallow + (slowdown * production_ms - shallow_ms) / per_layer)
    depth = min(_MAX_DEPTH, max(1, depth))
    candidate = build(depth)
    production_ms, candidate_ms = _single_call_ms([production, candidate], pool)
    for _attempt in range(_DEEPEN_ATTEMPTS):
        if candidate_ms >= slowdown * production_ms or depth >= _MAX_DEPTH:
            break
        depth = min(
            _MAX_DEPTH, depth + max(1, math.ceil((slowdown * production_ms - candidate_ms) / per_layer))
        )
        candidate = build(depth)
        production_ms, candidate_ms = _single_call_ms([production, candidate], pool)
    return candidate, depth, production_ms, candidate_ms


def _run_block(
    runner: ShadowRunner, pool: Sequence[Mapping[str, Any]], start: int, count: int, rate_per_s: float
) -> list[int]:
    """Issue ``count`` requests on a steady schedule; wall time of each ``predict`` in nanoseconds."""
    latencies = []
    interval_ns = int(1e9 / rate_per_s)
    begin = time.perf_counter_ns()
    for i in range(count):
        slot = begin + i * interval_ns
        wait_ns = slot - time.perf_counter_ns()
        if wait_ns > 0:
            time.sleep(wait_ns / 1e9)
        n = start + i
        features = pool[n % len(pool)]
        started = time.perf_counter_ns()
        runner.predict(f"req-{n}", features)
        latencies.append(time.perf_counter_ns() - started)
    return latencies


def bench_shadow(
    *,
    requests: int = 10_000,
    rate_per_s: float = 500.0,
    slowdown: float = 5.0,
    blocks: int = 50,
    warmup: int = 500,
    batch_size: int = 32,
    batch_wait_ms: float = 10.0,
    queue_size: int = 1_000,
    workers: int = 1,
    threads: int = 1,
    seed: int = 0,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Production request latency with shadow off vs on (candidate ``slowdown`` x slower), at a steady rate.

    ``requests`` per arm, split into ``blocks`` alternating blocks. Returns ``requests``, ``p50_off_ms``,
    ``p99_off_ms``, ``p50_on_ms``, ``p99_on_ms``, ``p99_overhead_ms``, ``dropped`` and how it was measured.
    """
    for name, value in (("requests", requests), ("blocks", blocks), ("threads", threads)):
        if value < 1:
            msg = f"{name}={value}: expected at least 1"
            raise ConfigError(msg)
    if warmup < 0:
        msg = f"warmup={warmup}: expected at least 0"
        raise ConfigError(msg)
    if not rate_per_s > 0 or not slowdown >= 1:
        msg = f"rate_per_s={rate_per_s}, slowdown={slowdown}: expected rate > 0 and slowdown >= 1"
        raise ConfigError(msg)
    say = progress or (lambda _text: None)
    rng = np.random.default_rng(seed)
    names = _feature_names()
    values = rng.normal(size=(_POOL, FEATURES))
    pool = [dict(zip(names, map(float, row), strict=True)) for row in values]
    encode = _encoder(names)
    generator = torch.Generator().manual_seed(seed)
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        say("calibrating the candidate")
        production = torch_scorer(_production_module(generator), encode, output=torch.sigmoid)
        candidate, depth, production_ms, candidate_ms = _calibrated_candidate(
            production, slowdown, encode, pool, generator
        )
        with EmbeddedBroker() as broker:
            settings = KafkaSettings.local(broker.bootstrap_servers)
            topic = f"bench-shadow-{uuid.uuid4().hex[:8]}"
            ensure_topics(settings, {topic: 1})
            logger = ServingLogger(
                settings, topic, model="bench", model_version="production", feature_state_hash="bench"
            )
            off = ShadowRunner(production, {}, logger)
            on = ShadowRunner(
                production,
                {"candidate": candidate},
                logger,
                workers=workers,
                queue_size=queue_size,
                batch_size=batch_size,
                batch_wait_ms=batch_wait_ms,
            )
            try:
                latencies: dict[str, list[int]] = {"off": [], "on": []}
                issued = 0
                arms = {"off": off, "on": on}
                say(f"warming up ({warmup} requests per arm)")
                for runner in arms.values():
                    _run_block(runner, pool, issued, warmup, rate_per_s)
                    issued += warmup
                    runner.flush(30.0)
                logger.flush(30.0)
                warm_on = on.stats().candidates["candidate"]
                per_block = [requests // blocks + (1 if b < requests % blocks else 0) for b in range(blocks)]
                for block, count in enumerate(per_block):
                    for arm, runner in arms.items():
                        say(f"block {block + 1}/{blocks}: shadow {arm}, {count} requests at {rate_per_s:g}/s")
                        latencies[arm] += _run_block(runner, pool, issued, count, rate_per_s)
                        issued += count
                        runner.flush(30.0)
                        logger.flush(30.0)
                off.close(10.0)
                final_on = on.close(10.0).candidates["candidate"]
            finally:
                off.close(1.0)
                on.close(1.0)
                logger_stats = logger.close(10.0)
    finally:
        torch.set_num_threads(previous_threads)

    def pct(arm: str, q: float) -> float:
        return float(np.percentile(np.asarray(latencies[arm], dtype=np.float64), q)) / 1e6

    p99_off, p99_on = pct("off", 99), pct("on", 99)
    return {
        "requests": requests,
        "p50_off_ms": round(pct("off", 50), 4),
        "p99_off_ms": round(p99_off, 4),
        "p50_on_ms": round(pct("on", 50), 4),
        "p99_on_ms": round(p99_on, 4),
        "p99_overhead_ms": round(p99_on - p99_off, 4),
        "p50_overhead_ms": round(pct("on", 50) - pct("off", 50), 4),
        "dropped": final_on.dropped - warm_on.dropped,
        "candidate_scored": final_on.scored - warm_on.scored,
        "candidate_errors": final_on.errors - warm_on.errors,
        "candidate_expired": final_on.expired - warm_on.expired,
        "p999_off_ms": round(pct("off", 99.9), 4),
        "p999_on_ms": round(pct("on", 99.9), 4),
        "rate_per_s": rate_per_s,
        "production_single_ms": round(production_ms, 4),
        "candidate_single_ms": round(candidate_ms, 4),
        "candidate_slowdown": round(candidate_ms / production_ms, 2),
        "candidate_depth": depth,
        "candidate_batch_ms_per_request": (
            round(final_on.mean_latency_ms, 4) if final_on.mean_latency_ms is not None else None
        ),
        "batch_size": batch_size,
        "batch_wait_ms": batch_wait_ms,
        "workers": workers,
        "torch_threads": threads,
        "blocks": blocks,
        "warmup_per_arm": warmup,
        "logged": logger_stats.sent,
        "log_failed": logger_stats.failed + logger_stats.dropped + logger_stats.invalid,
        "latency": "wall time of ShadowRunner.predict per request (perf_counter_ns)",
        "arms": "off = ShadowRunner without candidates (logs each record inside predict), on = with the "
        "candidate (predict queues the request; the worker logs the record); same production, same "
        "ServingLogger to the embedded broker; alternating blocks",
    }
