"""Shadow mode, serving side: production answers each request; candidates score it off the request path.

:class:`ShadowRunner` wraps the production scorer and any number of candidate scorers::

    runner = ShadowRunner(production, {"v7": candidate}, serving_logger, workers=1)
    score = runner.predict(request_id, features, raw_inputs=raw)   # production's answer, at once

What the request path pays, and what it never pays:

* ``predict`` calls production synchronously and returns its prediction (production's own exceptions
  propagate, exactly as without shadow mode). Shadow work costs the caller one dict copy and one
  non-blocking put into a bounded queue: when the queue is full the request is **dropped** for the
  candidates (counted per candidate) and logged at once with production's prediction alone, so a slow
  candidate can never make a request wait.
* A pool of ``workers`` background threads takes requests from the queue in batches (up to
  ``batch_size``, gathered for at most ``batch_wait_ms``), and has each candidate score the batch: with
  ``score_batch`` when the scorer has one, else request by request. While traffic flows the workers
  poll the queue rather than wait on it, so a request's put wakes no thread (no context switch on the
  request path); the logging happens on the workers too. A candidate that raises, returns the wrong
  number of predictions or something that is not a prediction (a NaN, a dict) is counted as an
  **error** for that candidate; it never reaches the caller, the other candidates or the logged record.
* **One record per request.** When every candidate has scored the request, or the request's deadline
  (``deadline_ms`` after ``predict``) has passed, the worker logs ONE record through the serving logger:
  production's prediction plus ``shadow_predictions`` by candidate version, stamped with the event time
  taken in ``predict``. One record rather than a production record now and a shadow record later,
  because the monitor then counts every request exactly once and needs no join inside its windows; a
  record waits at most the deadline, and event-time windows do not care when it arrives. A candidate
  whose turn comes after the deadline is skipped for that request and counted as **expired**; one still
  running when the deadline passes (a hanging model) is counted expired too, and a watchdog logs the
  requests it holds without waiting for it.

Counting contract (:meth:`ShadowRunner.stats`): every answered request ends up in exactly one of
``logged`` (the logger accepted the record), ``log_refused`` (the logger dropped or refused it) or
``queued`` (still with the candidates); and for each candidate, in exactly one of ``scored``,
``dropped``, ``expired``, ``errors``, or still queued.

Python cannot interrupt a running call: a candidate that hangs holds its worker until it returns.
While every worker is stuck so past the deadline, the watchdog takes the queued requests off the queue
and logs each at its deadline (candidates counted expired); once the queue is full, later requests are
dropped (and logged at once without shadow predictions) rather than delayed. :meth:`ShadowRunner.close`
logs what a stuck worker holds, with the predictions it has.

Scorers are plain callables ``scorer(features) -> prediction`` (see :class:`Scorer`), optionally with
``score_batch(list_of_features) -> predictions``; :func:`torch_scorer` wraps a torch module (eval mode,
inference mode, batched) and :func:`batch_scorer` any function over a batch. Candidates see the features
through a read-only view, so one cannot change what production logged. With ``workers > 1`` a scorer is
called from several threads at once (torch modules are safe for that in inference).

This module imports neither Kafka nor the serving logger: anything with the keyword signature of
:meth:`skewguard.serving.ServingLogger.log` (see :class:`RequestLog`) can receive the records; torch is
imported only inside :func:`torch_scorer`.
"""

from __future__ import annotations

import logging
import math
import queue
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from types import MappingProxyType, TracebackType
from typing import TYPE_CHECKING, Any, Final, Protocol, Self, TypeAlias, runtime_checkable

from skewguard.errors import ConfigError
from skewguard.records import Prediction, defaulted_names

if TYPE_CHECKING:
    import torch

__all__ = [
    "BatchScorer",
    "CandidateStats",
    "RequestLog",
    "Scorer",
    "ShadowRunner",
    "ShadowStats",
    "TorchScorer",
    "batch_scorer",
    "torch_scorer",
]

log = logging.getLogger(__name__)

_BatchFunction: TypeAlias = Callable[[Sequence[Mapping[str, Any]]], Sequence[Any]]

#: How long an idle worker blocks on the queue before it looks at the stop flag again.
_IDLE_POLL_S: Final = 0.05
#: After this long without a request a worker stops polling and blocks on the queue instead.
_IDLE_AFTER_S: Final = 1.0


# --------------------------------------------------------------------------------------------------
# contracts


@runtime_checkable
class Scorer(Protocol):
    """A model as shadow mode sees it: computed features of one request in, one prediction out.

    A prediction is a score (number), class probabilities (list of numbers) or a value (number, string,
    bool); numpy and torch scalars and 1-D arrays are accepted and converted.
    """

    def __call__(self, features: Mapping[str, Any], /) -> Any:
        """Score one request."""
        ...


@runtime_checkable
class BatchScorer(Scorer, Protocol):
    """A scorer that can also score many requests in one call, which the workers then prefer."""

    def score_batch(self, batch: Sequence[Mapping[str, Any]], /) -> Sequence[Any]:
        """Score several requests; one prediction per request, in order."""
        ...


class RequestLog(Protocol):
    """Where the records go: the keyword signature of :meth:`skewguard.serving.ServingLogger.log`.

    Must return at once and never raise (the ServingLogger guarantees both); True when accepted.
    """

    def log(
        self,
        *,
        request_id: str,
        features: Mapping[str, Any],
        prediction: Prediction | Any,
        raw_inputs: Mapping[str, Any] | None = None,
        shadow_predictions: Mapping[str, Any] | None = None,
        defaulted: Iterable[str] = (),
        event_time: datetime | None = None,
        model_version: str | None = None,
    ) -> bool:
        """Queue one record; True if accepted."""
        ...


# --------------------------------------------------------------------------------------------------
# results


@dataclass(frozen=True, slots=True)
class CandidateStats:
    """What one candidate did with the requests production answered.

    ``dropped``: never offered (the queue was full, or the runner closed); ``expired``: offered, but
    its turn came after the request's deadline; ``errors``: it raised or returned no valid prediction.
    ``mean_latency_ms`` is compute per request: the wall time of its scoring calls divided by the
    requests in them (a batch of 32 scored in 3.2 ms is 0.1 ms each); None before the first call.
    """

    scored: int
    dropped: int
    expired: int
    errors: int
    mean_latency_ms: float | None
    last_error: str | None = None


@dataclass(frozen=True, slots=True)
class ShadowStats:
    """Counters of a :class:`ShadowRunner`; see the module docstring for the counting contract."""

    requests: int
    production_errors: int
    logged: int
    log_refused: int
    queued: int
    candidates: dict[str, CandidateStats]
    production_mean_latency_ms: float | None


class _CandidateCounters:
    """Mutable per-candidate counters; updated under the runner's lock."""

    __slots__ = ("calls_ns", "dropped", "errors", "expired", "last_error", "scored", "timed_requests")

    def __init__(self) -> None:
        self.scored = 0
        self.dropped = 0
        self.expired = 0
        self.errors = 0
        self.calls_ns = 0
        self.timed_requests = 0
        self.last_error: str | None = None

    def snapshot(self) -> CandidateStats:
        mean = self.calls_ns / self.timed_requests / 1e6 if self.timed_requests else None
        return CandidateStats(self.scored, self.dropped, self.expired, self.errors, mean, self.last_error)


class _Job:
    """One answered request on its way through the candidates to the log."""

    __slots__ = (
        "defaulted",
        "done",
        "due",
        "event_time",
        "features",
        "model_version",
        "prediction",
        "raw_inputs",
        "request_id",
        "settled",
        "shadows",
        "view",
    )

    def __init__(
        self,
        request_id: str,
        features: dict[str, Any],
        prediction: Any,
        raw_inputs: dict[str, Any] | None,
        defaulted: list[str],
        event_time: datetime,
        model_version: str | None,
        due: float,
    ) -> None:
        self.request_id = request_id
        self.features = features
        self.view: Mapping[str, Any] = MappingProxyType(features)
        self.prediction = prediction
        self.raw_inputs = raw_inputs
        self.defaulted = defaulted
        self.event_time = event_time
        self.model_version = model_version
        self.due = due  # monotonic deadline
        self.shadows: dict[str, Prediction] = {}
        self.settled = 0  # candidates (in order) that scored, failed or skipped this job
        self.done = False  # claimed for logging (by its worker, or by close for a stuck worker)


# --------------------------------------------------------------------------------------------------
# the runner


class ShadowRunner:
    """Serve production's predictions synchronously; score candidates in the background; log both.

    ``candidates`` maps a model version (the key of ``shadow_predictions`` in the record) to a scorer.
    ``queue_size`` bounds the requests waiting for the candidates; ``batch_size`` and ``batch_wait_ms``
    shape the batches handed to ``score_batch``; ``deadline_ms`` bounds how long a record may wait for
    the candidates. The logger is not closed by the runner (it may be shared).
    """

    def __init__(
        self,
        production: Scorer,
        candidates: Mapping[str, Scorer],
        logger: RequestLog,
        *,
        workers: int = 1,
        queue_size: int = 1_000,
        batch_size: int = 32,
        batch_wait_ms: float = 10.0,
        deadline_ms: float = 1_000.0,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        if not callable(production):
            msg = f"ShadowRunner production: expected a scorer (a callable), got {type(production).__name__}"
            raise ConfigError(msg)
        for version, scorer in candidates.items():
            if not isinstance(version, str) or not version:
                msg = f"ShadowRunner candidates: expected non-empty version strings as keys, got {version!r}"
                raise ConfigError(msg)
            if not callable(scorer):
                msg = (
                    f"ShadowRunner candidates[{version!r}]: expected a scorer (a callable), "
                    f"got {type(scorer).__name__}"
                )
                raise ConfigError(msg)
        if not callable(getattr(logger, "log", None)):
            msg = f"ShadowRunner logger: expected a ServingLogger (with .log), got {type(logger).__name__}"
            raise ConfigError(msg)
        for name, count in (("workers", workers), ("queue_size", queue_size), ("batch_size", batch_size)):
            if isinstance(count, bool) or not isinstance(count, int) or count < 1:
                msg = f"ShadowRunner {name}: expected an integer of at least 1, got {count!r}"
                raise ConfigError(msg)
        for name, value in (("batch_wait_ms", batch_wait_ms), ("deadline_ms", deadline_ms)):
            if not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
                msg = f"ShadowRunner {name}: expected a finite number of milliseconds >= 0, got {value!r}"
                raise ConfigError(msg)
        self._production = production
        self._candidates: list[tuple[str, Scorer, _BatchFunction | None]] = []
        for version, scorer in candidates.items():
            batch = getattr(scorer, "score_batch", None)
            self._candidates.append((version, scorer, batch if callable(batch) else None))
        self._logger = logger
        self._queue_size = queue_size
        self._batch_size = batch_size
        self._batch_wait_s = batch_wait_ms / 1000
        self._deadline_s = deadline_ms / 1000
        self._clock = clock or _utc_now

        # one lock for every counter; the condition lets flush() wait for the workers
        self._cond = threading.Condition(threading.Lock())
        self._queue: queue.SimpleQueue[_Job] = queue.SimpleQueue()  # bounded by _in_queue, under the lock
        self._in_queue = 0
        self._accepted = 0  # jobs that entered the queue
        self._finished = 0  # of those, handed to the logger (accepted or refused)
        self._requests = 0
        self._production_errors = 0
        self._production_ns = 0
        self._logged = 0
        self._log_refused = 0
        self._counters = {version: _CandidateCounters() for version, _, _ in self._candidates}
        self._closed = False
        self._close_deadline = math.inf
        self._stop = threading.Event()
        # no candidates, no workers: predict then logs each request itself
        thread_count = workers if self._candidates else 0
        self._in_hand: list[list[_Job]] = [[] for _ in range(thread_count)]
        # when each worker took the batch it is scoring (None while it waits): the watchdog's way to
        # tell that every worker is stuck in a candidate
        self._busy_since: list[float | None] = [None] * thread_count
        self._workers = [
            threading.Thread(target=self._work, args=(index,), name=f"skewguard-shadow-{index}", daemon=True)
            for index in range(thread_count)
        ]
        for thread in self._workers:
            thread.start()
        self._watchdog = (
            threading.Thread(target=self._watch, name="skewguard-deadline-watch", daemon=True)
            if self._workers
            else None
        )
        if self._watchdog is not None:
            self._watchdog.start()

    @property
    def versions(self) -> list[str]:
        """The candidate versions, in the order they score each batch."""
        return [version for version, _, _ in self._candidates]

    # ------------------------------------------------------------------ the request path

    def predict(
        self,
        request_id: str,
        features: Mapping[str, Any],
        *,
        raw_inputs: Mapping[str, Any] | None = None,
        event_time: datetime | None = None,
        defaulted: Iterable[str] = (),
        model_version: str | None = None,
    ) -> Any:
        """Production's prediction for one request, returned synchronously; shadow scoring is queued.

        Raises only what production itself raises (counted, nothing logged); arguments that cannot be
        recorded (``raw_inputs`` that are no mapping) count as ``log_refused``, the answer still
        returned. ``features`` and ``raw_inputs`` are copied one level deep, so the caller may reuse
        its dicts at once.
        ``event_time`` defaults to now (UTC), taken here rather than when the record is logged.
        """
        started = time.perf_counter_ns()
        try:
            prediction = self._production(features)
        except Exception:
            with self._cond:
                self._requests += 1
                self._production_errors += 1
            raise
        elapsed = time.perf_counter_ns() - started
        try:
            job = _Job(
                request_id,
                dict(features),
                prediction,
                dict(raw_inputs) if raw_inputs is not None else None,
                defaulted_names(defaulted),
                event_time if event_time is not None else self._clock(),
                model_version,
                time.monotonic() + self._deadline_s,
            )
        except Exception:  # (raw_inputs that are no mapping, a clock that raises): production answered
            log.warning("shadow: a request could not be recorded (its answer is returned)", exc_info=True)
            with self._cond:
                self._requests += 1
                self._production_ns += elapsed
                self._log_refused += 1
            return prediction
        with self._cond:
            self._requests += 1
            self._production_ns += elapsed
            queued = bool(self._workers) and not self._closed and self._in_queue < self._queue_size
            if queued:
                self._queue.put(job)
                self._in_queue += 1
                self._accepted += 1
            else:
                for counters in self._counters.values():
                    counters.dropped += 1
        if not queued:
            self._log(job)
        return prediction

    # ------------------------------------------------------------------ control

    def stats(self) -> ShadowStats:
        """Counters so far; consistent with each other (taken under one lock)."""
        with self._cond:
            return ShadowStats(
                requests=self._requests,
                production_errors=self._production_errors,
                logged=self._logged,
                log_refused=self._log_refused,
                queued=self._accepted - self._finished,
                candidates={version: c.snapshot() for version, c in self._counters.items()},
                production_mean_latency_ms=(
                    self._production_ns / (self._requests - self._production_errors) / 1e6
                    if self._requests > self._production_errors
                    else None
                ),
            )

    def flush(self, timeout_s: float = 10.0) -> bool:
        """Wait until every request answered before the call is logged; False on timeout. Never raises."""
        deadline = time.monotonic() + timeout_s
        with self._cond:
            target = self._accepted
            while self._finished < target:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._cond.wait(min(remaining, 0.1))
        return True

    def close(self, timeout_s: float = 10.0) -> ShadowStats:
        """Stop shadowing: finish queued requests within ``timeout_s``, log them, stop the workers.

        Requests still waiting at the deadline are logged with the shadow predictions they have (their
        missing candidates counted as expired). After close, ``predict`` still answers with production
        and logs at once. Idempotent; never raises; the logger stays open.
        """
        with self._cond:
            first = not self._closed
            self._closed = True  # no job enters the queue after this
        if first:
            self._close_deadline = time.monotonic() + timeout_s
            self._stop.set()
        # The watchdog first: it stops at once and logs the requests it took off the queue; joined after
        # stuck workers, it would get no time left, and close could return before those are logged.
        if self._watchdog is not None:
            self._watchdog.join(max(0.0, self._close_deadline - time.monotonic()))
        for thread in self._workers:
            thread.join(max(0.0, self._close_deadline - time.monotonic()))
        # what no worker will log any more: jobs left in the queue and jobs held by a stuck worker
        leftovers = self._drain_queue()
        for thread, held in zip(self._workers, self._in_hand, strict=True):
            if thread.is_alive():
                log.warning("shadow worker %s still busy in a candidate at close", thread.name)
                leftovers.extend(held)
        for job in leftovers:
            self._finish(job)
        return self.stats()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # ------------------------------------------------------------------ the workers

    def _work(self, index: int) -> None:
        _apply_torch_threads()
        last_batch = -math.inf
        while True:
            polling = self._batch_wait_s > 0 and time.monotonic() - last_batch < _IDLE_AFTER_S
            batch = self._take_batch(polling)
            if not batch:
                if self._stop.is_set():
                    return
                continue
            last_batch = time.monotonic()
            self._in_hand[index] = batch
            self._busy_since[index] = last_batch
            try:
                self._score(batch)
            except Exception:  # pragma: no cover - _score catches candidates' errors; a bug of ours
                log.exception("shadow worker failed; its requests are logged without shadow predictions")
            for job in batch:
                self._finish(job)
            self._in_hand[index] = []
            self._busy_since[index] = None

    def _watch(self) -> None:
        """Log the requests past their deadline that no worker can get to while candidates hang.

        Workers check the deadline only between candidates, so a candidate that hangs held its batch's
        records (and every ``flush``) until close; and with every worker stuck so, the requests still
        in the queue waited too — up to ``queue_size`` records logged long after their event time,
        late for the monitor's windows. The watchdog logs held requests once past their deadline and,
        while every worker has been busy longer than the deadline, takes the queued ones off the queue
        and logs each at its deadline (its candidates counted expired). ``_finish`` logs a job once
        whoever calls it, and a worker, when its candidate returns, counts nothing more for a job
        already logged.
        """
        period = min(max(self._deadline_s / 4, 0.005), 0.25)
        adopted: deque[_Job] = deque()  # taken off the queue while every worker was stuck, by deadline
        while not self._stop.wait(period):
            now = time.monotonic()
            for held in list(self._in_hand):
                for job in list(held):
                    if job.due <= now and not job.done:
                        self._finish(job)
            if self._all_workers_stuck(now):
                adopted.extend(self._drain_queue())
            while adopted and adopted[0].due <= now:
                self._finish(adopted.popleft())
        # stopping: close() logs what is left in the queue and with stuck workers; these are ours
        for job in adopted:
            self._finish(job)

    def _all_workers_stuck(self, now: float) -> bool:
        """Whether every worker has been scoring one batch for longer than the deadline."""
        return all(since is not None and now - since > self._deadline_s for since in self._busy_since)

    def _drain_queue(self) -> list[_Job]:
        """Everything waiting in the queue, taken off it (FIFO, so in deadline order)."""
        taken: list[_Job] = []
        while True:
            try:
                taken.append(self._queue.get_nowait())
            except queue.Empty:
                break
        if taken:
            with self._cond:
                self._in_queue -= len(taken)
        return taken

    def _take_batch(self, polling: bool) -> list[_Job]:
        """The next batch: up to ``batch_size`` requests, gathered for at most ``batch_wait_ms``.

        While traffic flows (``polling``) the worker sleeps through the batch window and then drains the
        queue, instead of waiting on the queue: a put with no waiting getter wakes no thread, so the
        request path causes no context switch. An idle worker blocks on the queue, and the first
        request after a quiet spell wakes it once.
        """
        stopping = self._stop.is_set()
        batch: list[_Job] = []
        if not polling or stopping:
            try:
                batch.append(self._queue.get(timeout=0.0 if stopping else _IDLE_POLL_S))
            except queue.Empty:
                return []
        if not stopping and self._batch_wait_s > 0 and self._in_queue < self._batch_size:
            time.sleep(self._batch_wait_s)
        while len(batch) < self._batch_size:
            try:
                batch.append(self._queue.get_nowait())
            except queue.Empty:
                break
        with self._cond:
            self._in_queue -= len(batch)
        return batch

    def _score(self, batch: list[_Job]) -> None:
        """Each candidate in turn scores the requests of the batch that are still within their deadline."""
        for index, (version, scorer, score_batch) in enumerate(self._candidates):
            now = time.monotonic()
            stopping = now >= self._close_deadline
            live = [job for job in batch if job.due > now and not stopping and not job.done]
            results: list[tuple[_Job, Prediction]] = []
            failures: list[tuple[_Job, str]] = []
            started = time.perf_counter_ns()
            if live and score_batch is not None:
                try:
                    outputs = _as_list(score_batch([job.view for job in live]))
                    if len(outputs) != len(live):
                        msg = f"score_batch returned {len(outputs)} predictions for {len(live)} requests"
                        raise ValueError(msg)
                except Exception as exc:
                    reason = _describe(exc)
                    failures.extend((job, reason) for job in live)
                else:
                    for job, output in zip(live, outputs, strict=True):
                        try:
                            results.append((job, _as_prediction(output)))
                        except (TypeError, ValueError, OverflowError) as exc:  # (an int too big for a float)
                            failures.append((job, f"request {job.request_id!r}: {exc}"))
            else:
                for job in live:
                    try:
                        results.append((job, _as_prediction(scorer(job.view))))
                    except Exception as exc:
                        failures.append((job, f"request {job.request_id!r}: {_describe(exc)}"))
            elapsed = time.perf_counter_ns() - started
            counters = self._counters[version]
            with self._cond:
                # a job close() already logged (this worker was stuck) was counted there: skip it here
                for job, prediction in results:
                    if not job.done:
                        job.shadows[version] = prediction
                        counters.scored += 1
                errors = [reason for job, reason in failures if not job.done]
                counters.errors += len(errors)
                live_ids = {id(job) for job in live}
                counters.expired += sum(1 for job in batch if id(job) not in live_ids and not job.done)
                for job in batch:
                    if not job.done:
                        job.settled = index + 1
                if live:
                    counters.calls_ns += elapsed
                    counters.timed_requests += len(live)
                first_error = bool(errors) and counters.last_error is None
                if errors:
                    counters.last_error = errors[-1]
            if first_error:
                log.warning("shadow candidate %r failed: %s (further failures counted)", version, errors[0])

    def _finish(self, job: _Job) -> None:
        """Log a queued job once, whoever gets there first (its worker, or close for a stuck worker).

        Candidates that never got to the job (close's deadline came first) are counted as expired.
        """
        with self._cond:
            if job.done:
                return
            job.done = True
            for version, _, _ in self._candidates[job.settled :]:
                self._counters[version].expired += 1
        accepted = self._log(job, count=False)
        with self._cond:
            self._finished += 1
            if accepted:
                self._logged += 1
            else:
                self._log_refused += 1
            self._cond.notify_all()

    def _log(self, job: _Job, *, count: bool = True) -> bool:
        try:
            accepted = self._logger.log(
                request_id=job.request_id,
                features=job.features,
                prediction=job.prediction,
                raw_inputs=job.raw_inputs,
                shadow_predictions=dict(job.shadows),
                defaulted=job.defaulted,
                event_time=job.event_time,
                model_version=job.model_version,
            )
        except Exception as exc:  # a logger that breaks its own promise must not reach the caller
            log.warning("serving logger raised for request %r: %s", job.request_id, exc)
            accepted = False
        if count:
            with self._cond:
                if accepted:
                    self._logged += 1
                else:
                    self._log_refused += 1
        return bool(accepted)


# --------------------------------------------------------------------------------------------------
# predictions


def _as_list(outputs: Any) -> list[Any]:
    """A batch's outputs as a list: numpy arrays and tensors through ``tolist``, sequences as they are."""
    tolist = getattr(outputs, "tolist", None)
    if callable(tolist):
        converted = tolist()
        if isinstance(converted, list):
            return converted
    if isinstance(outputs, list | tuple):
        return list(outputs)
    msg = f"score_batch returned {type(outputs).__name__}; expected a sequence of predictions"
    raise TypeError(msg)


def _as_prediction(value: Any) -> Prediction:
    """Check a candidate's output is a loggable prediction; numpy/torch scalars and 1-D arrays convert.

    A NaN or infinite score is an error here: JSON would write it as null, and the record (production's
    prediction with it) would then be refused by the codec.
    """
    kind = type(value)
    if kind is float:
        if math.isfinite(value):
            return value  # type: ignore[no-any-return]
        msg = f"returned {value!r}; expected a finite score"
        raise ValueError(msg)
    if kind is int or kind is bool or kind is str:
        return value  # type: ignore[no-any-return]
    if kind is list or kind is tuple:
        if not value:
            msg = "returned an empty list; expected class probabilities"
            raise ValueError(msg)
        probabilities: list[float] = []
        for item in value:
            number = item if type(item) in (float, int) else _scalar(item)
            if type(number) not in (float, int) or not math.isfinite(number):
                msg = f"returned a list holding {item!r}; expected finite numbers (class probabilities)"
                raise ValueError(msg)
            probabilities.append(number)
        return probabilities
    tolist = getattr(value, "tolist", None)  # numpy / torch scalars and 1-D arrays
    if callable(tolist):
        converted = tolist()
        if type(converted) is not kind and not hasattr(converted, "tolist"):
            return _as_prediction(converted)
    msg = (
        f"returned {kind.__name__}; expected a finite number, string, bool or a non-empty list of "
        "finite numbers"
    )
    raise TypeError(msg)


def _scalar(item: Any) -> Any:
    tolist = getattr(item, "tolist", None)
    return tolist() if callable(tolist) else item


def _describe(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}"
    return text if len(text) <= 300 else text[:297] + "..."


def _utc_now() -> datetime:
    return datetime.now(UTC)


def _apply_torch_threads() -> None:
    """Give this new worker thread torch's thread count, if torch is loaded (never imports it).

    For candidates that call torch themselves (e.g. through :func:`batch_scorer`); see
    :class:`TorchScorer` for why a new thread needs it.
    """
    torch_module = sys.modules.get("torch")
    get_num_threads = getattr(torch_module, "get_num_threads", None)
    if callable(get_num_threads):
        get_num_threads()


# --------------------------------------------------------------------------------------------------
# adapters


class _BatchFunctionScorer:
    """A function over a batch of feature mappings, as a :class:`BatchScorer`."""

    def __init__(self, score: Callable[[Sequence[Mapping[str, Any]]], Sequence[Any]]) -> None:
        self._score = score

    def __call__(self, features: Mapping[str, Any], /) -> Any:
        return _as_list(self._score([features]))[0]

    def score_batch(self, batch: Sequence[Mapping[str, Any]], /) -> Sequence[Any]:
        return self._score(batch)


def batch_scorer(score: Callable[[Sequence[Mapping[str, Any]]], Sequence[Any]]) -> BatchScorer:
    """Wrap a function that scores a list of feature mappings at once (e.g. a frame-based model).

    For a pipeline model: ``batch_scorer(lambda rows: model.predict_scores(pd.DataFrame(rows)))``.
    """
    if not callable(score):
        msg = f"batch_scorer: expected a function of a list of feature mappings, got {type(score).__name__}"
        raise ConfigError(msg)
    return _BatchFunctionScorer(score)


class TorchScorer:
    """A torch module as a :class:`BatchScorer`: eval mode, ``torch.inference_mode()``, batched.

    ``encode(list_of_features) -> Tensor`` builds the ``(n, ...)`` input batch; ``output`` (e.g.
    ``torch.sigmoid``) turns the module's output into predictions. One output element per row gives a
    score; several give a list (class probabilities).

    Threads: OpenMP and MKL keep their thread count per OS thread, and ATen applies
    ``torch.set_num_threads`` to a new thread only when something asks it for the count; matrix
    products do not. A shadow worker (or a server's request thread) would otherwise run every product
    with OpenMP's default team of all cores: on a busy 2-core machine a 0.5 ms candidate call took
    ~50 ms on average that way. So each thread's first call asks once (``torch.get_num_threads()``).
    """

    def __init__(
        self,
        module: torch.nn.Module,
        encode: Callable[[Sequence[Mapping[str, Any]]], torch.Tensor],
        output: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> None:
        import torch  # only here: the layering keeps torch out of skewguard's core

        if not isinstance(module, torch.nn.Module):
            msg = f"torch_scorer module: expected a torch.nn.Module, got {type(module).__name__}"
            raise ConfigError(msg)
        if not callable(encode):
            msg = (
                f"torch_scorer encode: expected a function of a list of features, got {type(encode).__name__}"
            )
            raise ConfigError(msg)
        self._torch = torch
        self.module = module
        self._encode = encode
        self._output = output
        self._thread_ready = threading.local()
        module.eval()

    def __call__(self, features: Mapping[str, Any], /) -> Any:
        """Score one request (a batch of one)."""
        return self.score_batch([features])[0]

    def score_batch(self, batch: Sequence[Mapping[str, Any]], /) -> list[Any]:
        """Score a batch: scores (one output per row) or lists (several outputs per row)."""
        if self.module.training:  # someone switched it back (e.g. shared with a training loop)
            self.module.eval()
        if not getattr(self._thread_ready, "done", False):
            self._torch.get_num_threads()  # applies torch's thread count to this OS thread (see above)
            self._thread_ready.done = True
        rows = len(batch)
        with self._torch.inference_mode():
            result = self.module(self._encode(batch))
            if self._output is not None:
                result = self._output(result)
            if not isinstance(result, self._torch.Tensor) or rows == 0 or result.numel() % rows:
                shape = (
                    tuple(result.shape) if isinstance(result, self._torch.Tensor) else type(result).__name__
                )
                msg = f"torch_scorer: module output {shape} cannot be split into {rows} rows"
                raise ValueError(msg)
            flat = result.reshape(rows, -1)
            if flat.shape[1] == 1:
                scores: list[Any] = flat[:, 0].tolist()
                return scores
            probabilities: list[Any] = flat.tolist()
            return probabilities


def torch_scorer(
    module: torch.nn.Module,
    encode: Callable[[Sequence[Mapping[str, Any]]], torch.Tensor],
    *,
    output: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> TorchScorer:
    """Wrap a torch module for :class:`ShadowRunner` (as production or as a candidate).

    The module is put in eval mode (dropout off, batch-norm running statistics) and every call runs
    under ``torch.inference_mode()`` (no autograd graph, no grad). ``encode`` turns a list of feature
    mappings into the input batch; ``output`` post-processes the module's output (e.g. logits →
    probabilities with ``torch.sigmoid``).
    """
    return TorchScorer(module, encode, output)
