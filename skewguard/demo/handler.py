"""The demo's serving handler: features as a real request path gets them, the model's score, one log call.

Per request, the context and item features are computed from the request itself by ``features/`` (the
code training used), and the click-history features come from a "feature store" behind a
:class:`~skewguard.serving.FeatureGroupFetcher` with a deadline: when the store is slow, the request is
served with the group's declared defaults and the record says which features were defaulted. A
"hotfixed" replica rewrites the local hour with :func:`~skewguard.demo.traffic.hour_in_utc_bug`. The
trained model scores the features the request actually ended up with, and every request is logged with
its raw inputs through the :class:`~skewguard.serving.ServingLogger`, so the monitor can replay it.

Requests of a window are handled concurrently (as a server would), so a store outage costs the demo a
deadline per batch of requests rather than per request; they are logged in event-time order afterwards.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Self

import numpy as np
import pandas as pd

from skewguard.demo.scenario import WindowPlan
from skewguard.demo.traffic import generate_requests, hour_in_utc_bug, raw_inputs_json
from skewguard.errors import ConfigError
from skewguard.pipeline import TrainedModel
from skewguard.serving import FeatureGroupFetcher, ServingLogger
from skewguard.shadow import BatchScorer, ShadowRunner, batch_scorer

#: The feature group served from the (sometimes slow) feature store.
HISTORY_GROUP = "history"


@dataclass(frozen=True)
class ServedWindow:
    """What one window's requests were: ids, event times and true clicks (for the labels), and faults."""

    request_ids: list[str]
    event_times: list[pd.Timestamp]
    clicks: list[int]
    scores: np.ndarray[Any, np.dtype[np.float64]]
    #: Requests the hotfixed replica served.
    hotfixed: int
    #: Requests served with the click-history group's defaults (a slow or, rarely, a late healthy lookup).
    defaulted: int
    #: Requests handed to the serving log (by the handler, or by the shadow runner).
    logged: int


class DemoServingHandler:
    """Serves generated requests with a trained model and logs them; one instance per deployed version."""

    def __init__(
        self,
        model: TrainedModel,
        logger: ServingLogger,
        *,
        deadline_s: float = 0.05,
        concurrency: int = 16,
    ) -> None:
        if deadline_s <= 0 or concurrency < 1:
            msg = (
                f"DemoServingHandler needs deadline_s > 0 and concurrency >= 1, "
                f"got deadline_s={deadline_s}, concurrency={concurrency}"
            )
            raise ConfigError(msg)
        groups = model.feature_set.groups()
        if HISTORY_GROUP not in groups:
            msg = f"the demo's feature set {model.feature_set.name!r} has no {HISTORY_GROUP!r} feature group"
            raise ConfigError(msg)
        self.model = model
        self.logger = logger
        self.deadline_s = deadline_s
        self._history = [f.name for f in groups[HISTORY_GROUP]]
        self._inputs = list(model.feature_set.inputs)
        self._columns = list(model.feature_set.features)
        # A slow lookup keeps its worker until it answers; the pool has room for the stragglers of every
        # concurrent request, so a healthy lookup does not queue behind them. (On a busy machine a
        # healthy lookup can still miss the deadline now and then: the monitor reports those few
        # defaults, below its limit, as it would in production.)
        self._fetcher = FeatureGroupFetcher(
            model.feature_set.group_defaults(), timeout_s=deadline_s, max_workers=concurrency * 6
        )
        self._requests = ThreadPoolExecutor(
            max_workers=concurrency, thread_name_prefix="skewguard-demo-serve"
        )
        # Set at close: slow lookups still sleeping give up at once instead of holding the exit.
        self._closed = threading.Event()

    def serve(self, plan: WindowPlan, records: int, shadow: ShadowRunner | None = None) -> ServedWindow:
        """Generate ``records`` requests inside the plan's window, serve them with its faults, log them."""
        frame = generate_requests(
            records, seed=plan.seed, start=plan.start, span=plan.end - plan.start, shape=plan.shape
        )
        frame["request_id"] = [f"w{plan.index:02d}-{i:05d}" for i in range(records)]
        return self.serve_frame(frame, plan, shadow)

    def serve_frame(
        self, frame: pd.DataFrame, plan: WindowPlan, shadow: ShadowRunner | None = None
    ) -> ServedWindow:
        """Serve the generated requests in ``frame`` (in event-time order) with the plan's faults.

        With a ``shadow`` runner, production answers each request through it (one call per request,
        candidates scoring off the request path, the runner logging one record per request); without
        one, the model scores the window's requests in one batch (same scores, faster) and each
        request is logged here.
        """
        records = len(frame)
        computed = self.model.feature_set.transform_frame(frame, self.model.state)
        rng = np.random.default_rng(plan.seed + 7)
        hotfixed = rng.random(records) < plan.hotfix_share
        slow = rng.random(records) < plan.timeout_share
        raws = [raw_inputs_json(row, self._inputs) for row in frame.to_dict("records")]
        local = [self.model.feature_set.row_values(computed, i) for i in range(records)]

        def handle(i: int) -> tuple[dict[str, Any], list[str]]:
            values = dict(local[i])
            stored = {name: values.pop(name) for name in self._history}
            lookup = self._slow_lookup(stored) if slow[i] else _answer(stored)
            fetched = self._fetcher.fetch({HISTORY_GROUP: lookup})
            values.update(fetched.features)
            if hotfixed[i]:
                values = hour_in_utc_bug(values, raws[i])
            return values, fetched.defaulted

        answers = list(self._requests.map(handle, range(records)))
        features = [values for values, _ in answers]
        ids = frame["request_id"].tolist()
        times = list(frame["event_time"])
        logged = 0
        if shadow is not None:
            scores = np.asarray(
                [
                    shadow.predict(
                        ids[i],
                        features[i],
                        raw_inputs=raws[i],
                        event_time=times[i].to_pydatetime(),
                        defaulted=answers[i][1],
                    )
                    for i in range(records)
                ],
                dtype=np.float64,
            )
            logged = records  # the runner logs them; its stats say what the logger accepted
        else:
            scores = self.model.predict_scores(pd.DataFrame(features, columns=self._columns))
            for i in range(records):
                logged += self.logger.log(
                    request_id=ids[i],
                    event_time=times[i].to_pydatetime(),
                    features=features[i],
                    prediction=float(scores[i]),
                    raw_inputs=raws[i],
                    defaulted=answers[i][1],
                )
        return ServedWindow(
            request_ids=ids,
            event_times=times,
            clicks=[int(c) for c in frame["click"]],
            scores=scores,
            hotfixed=int(hotfixed.sum()),
            defaulted=sum(bool(d) for _, d in answers),
            logged=logged,
        )

    def _slow_lookup(self, answer: Mapping[str, Any]) -> Callable[[], Mapping[str, Any]]:
        def lookup() -> Mapping[str, Any]:
            # The store answers, but four deadlines too late: the request has been served with defaults.
            self._closed.wait(self.deadline_s * 4)
            return answer

        return lookup

    def close(self) -> None:
        """Stop serving; release slow lookups still waiting."""
        self._closed.set()
        self._requests.shutdown(wait=True)
        self._fetcher.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def model_scorer(model: TrainedModel) -> BatchScorer:
    """A model version as a shadow-mode scorer: feature mappings in, click probabilities out."""
    columns = list(model.feature_set.features)

    def score(rows: Sequence[Mapping[str, Any]]) -> list[float]:
        frame = pd.DataFrame([dict(row) for row in rows], columns=columns)
        scores: list[float] = model.predict_scores(frame).tolist()
        return scores

    return batch_scorer(score)


def _answer(values: Mapping[str, Any]) -> Callable[[], Mapping[str, Any]]:
    return lambda: values
