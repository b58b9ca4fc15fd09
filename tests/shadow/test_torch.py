"""torch_scorer: eval mode and inference mode (dropout off → deterministic), batched like row by row."""

from __future__ import annotations

import ctypes
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from skewguard.errors import ConfigError
from skewguard.shadow import ShadowRunner, batch_scorer, torch_scorer
from tests.shadow.helpers import MemoryLog, features_for

NAMES = ("x", "y")


def encode(batch: Sequence[Mapping[str, Any]]) -> torch.Tensor:
    return torch.tensor([[float(row[name]) for name in NAMES] for row in batch], dtype=torch.float32)


class Probe(nn.Module):
    """Records, on every forward, whether it ran in training mode and whether autograd was on."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[tuple[bool, bool, bool]] = []

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        self.seen.append((self.training, torch.is_grad_enabled(), torch.is_inference_mode_enabled()))
        return inputs


@pytest.fixture
def seeded() -> Iterator[None]:
    """Module initialisation draws from torch's global RNG: seed it, and restore it afterwards."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        yield


def dropout_model(outputs: int = 1) -> tuple[nn.Sequential, Probe]:
    probe = Probe()
    model = nn.Sequential(nn.Linear(2, 64), nn.ReLU(), nn.Dropout(0.5), probe, nn.Linear(64, outputs))
    model.train()  # as a training loop would leave it
    return model, probe


@pytest.mark.usefixtures("seeded")
def test_torch_scorer_runs_in_eval_and_inference_mode_so_dropout_is_off_and_output_deterministic() -> None:
    model, probe = dropout_model()
    scorer = torch_scorer(model, encode, output=torch.sigmoid)
    assert not model.training
    rows = [features_for(i) for i in range(20)]
    first = scorer.score_batch(rows)
    assert all(scorer.score_batch(rows) == first for _ in range(5))
    with torch.no_grad():
        expected = torch.sigmoid(model.eval()(encode(rows))).reshape(-1).tolist()
    assert first == pytest.approx(expected, abs=0.0)
    assert set(probe.seen[:6]) == {(False, False, True)}  # eval, no grad, inference mode
    # someone switches the shared module back to training: the next call is still in eval mode
    model.train()
    assert scorer.score_batch(rows) == first
    assert probe.seen[-1] == (False, False, True)


@pytest.mark.usefixtures("seeded")
def test_torch_scorer_batches_score_like_single_rows() -> None:
    model, _ = dropout_model()
    scorer = torch_scorer(model, encode)
    rows = [features_for(i) for i in range(33)]
    singles = [scorer(row) for row in rows]
    assert all(type(value) is float for value in singles)
    assert scorer.score_batch(rows) == pytest.approx(singles, rel=1e-5, abs=1e-6)


@pytest.mark.usefixtures("seeded")
def test_torch_candidate_with_several_outputs_logs_class_probabilities() -> None:
    model, _ = dropout_model(outputs=3)
    candidate = torch_scorer(model, encode, output=lambda logits: torch.softmax(logits, dim=-1))
    log = MemoryLog()
    with ShadowRunner(lambda f: 0.5, {"v-torch": candidate}, log, batch_size=8) as runner:
        for i in range(40):
            runner.predict(f"r{i}", features_for(i))
        assert runner.flush(10.0)
        stats = runner.stats()
    assert (stats.candidates["v-torch"].scored, stats.candidates["v-torch"].errors) == (40, 0)
    for i, call in enumerate(sorted(log.calls, key=lambda c: int(c["request_id"][1:]))):
        probabilities = call["shadow_predictions"]["v-torch"]
        assert len(probabilities) == 3 and sum(probabilities) == pytest.approx(1.0, abs=1e-6)
        assert probabilities == pytest.approx(candidate(features_for(i)), abs=1e-6)


def test_torch_scorer_refuses_what_is_not_a_module_or_an_encoder() -> None:
    with pytest.raises(ConfigError, match=r"torch\.nn\.Module"):
        torch_scorer(lambda x: x, encode)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="encode"):
        torch_scorer(nn.Identity(), "encode")  # type: ignore[arg-type]


def test_torch_output_that_does_not_split_into_rows_is_a_counted_candidate_error() -> None:
    candidate = torch_scorer(nn.Identity(), lambda rows: torch.ones(len(rows) * 2 + 1))
    log = MemoryLog()
    with ShadowRunner(lambda f: 0.5, {"odd": candidate}, log, batch_size=4) as runner:
        for i in range(10):
            assert runner.predict(f"r{i}", features_for(i)) == 0.5
        assert runner.flush(10.0)
        stats = runner.stats()
    assert (stats.candidates["odd"].errors, stats.logged) == (10, 10)
    assert "cannot be split into" in str(stats.candidates["odd"].last_error)


def openmp_max_threads() -> Callable[[], int] | None:
    """``omp_get_max_threads`` of the OpenMP runtime torch loaded into this process (Linux), if any."""
    maps = Path("/proc/self/maps")
    if not maps.exists():
        return None
    libraries = {line.split()[-1] for line in maps.read_text().splitlines() if "omp" in line.split()[-1]}
    runtimes = [lib for lib in sorted(libraries) if "gomp" in Path(lib).name or "iomp" in Path(lib).name]
    # Other wheels bundle their own OpenMP (e.g. scipy.libs/libgomp-*.so): ask the one torch ships.
    runtime = next((lib for lib in runtimes if "/torch/" in lib), None)
    if runtime is None:
        return None
    function: Callable[[], int] = ctypes.CDLL(runtime).omp_get_max_threads
    return function


@pytest.fixture
def one_torch_thread() -> Iterator[None]:
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.mark.usefixtures("seeded", "one_torch_thread")
def test_torch_scorer_applies_torchs_thread_count_to_each_new_thread_before_scoring() -> None:
    omp_max_threads = openmp_max_threads()
    if omp_max_threads is None:
        pytest.skip("no OpenMP runtime in this process (a torch build without OpenMP)")
    scorer = torch_scorer(nn.Linear(2, 1), encode)
    seen: dict[str, int] = {}

    def worker() -> None:
        seen["before"] = omp_max_threads()
        scorer.score_batch([features_for(1), features_for(2)])
        seen["after"] = omp_max_threads()

    thread = threading.Thread(target=worker)
    thread.start()
    thread.join()
    if seen["before"] == 1:
        pytest.skip("OpenMP's default team is already 1 here (one core or OMP_NUM_THREADS=1)")
    # a new thread starts with OpenMP's default team; the scorer's first call brings it to torch's setting
    assert seen["after"] == 1


@pytest.mark.usefixtures("seeded", "one_torch_thread")
def test_shadow_workers_apply_torchs_thread_count_for_candidates_that_call_torch_themselves() -> None:
    omp_max_threads = openmp_max_threads()
    if omp_max_threads is None:
        pytest.skip("no OpenMP runtime in this process (a torch build without OpenMP)")
    module = nn.Linear(2, 1).eval()
    seen: list[int] = []

    def frame_model(rows: Sequence[Mapping[str, Any]]) -> list[float]:
        seen.append(omp_max_threads())
        with torch.no_grad():
            scores: list[float] = module(encode(rows)).reshape(-1).tolist()
        return scores

    with ShadowRunner(lambda f: 0.5, {"v2": batch_scorer(frame_model)}, MemoryLog()) as runner:
        runner.predict("r1", features_for(1))
        assert runner.flush(10.0)
    assert seen == [1]
