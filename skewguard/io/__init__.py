"""Adapters to Kafka: the only package that imports kafka-python.

``broker`` runs the embedded Kafka-protocol broker (Tansu) used by the demo and the tests; ``kafka``
holds the typed producer/consumer/admin wrappers the rest of skewguard talks to. Kafka errors are
converted into :class:`skewguard.errors.BrokerError` here, so nothing above this package ever sees
a kafka-python type.
"""

from __future__ import annotations

import warnings
from typing import Any

# kafka-python 3.0 loads its protocol schemas with the deprecated importlib.resources.read_text (and
# open_text) while its modules are imported. Import them once here, with exactly that warning silenced,
# so neither users nor the test-suite (warnings are errors there) see it; the filter ends with the block.
with warnings.catch_warnings():
    warnings.filterwarnings(
        "ignore", message=r"(read_text|open_text) is deprecated", category=DeprecationWarning
    )
    import kafka
    import kafka.admin
    import kafka.errors
    import kafka.structs  # noqa: F401


def _close_sockets_of_failed_connects() -> None:
    """Close the socket of a failed broker connection attempt instead of leaving it to the collector.

    kafka-python 3.0 (``kafka.net.inet.KafkaNetSocket.connect``) drops the socket when a connect fails,
    so every reconnect attempt during a broker outage ends in a ``ResourceWarning: unclosed socket``
    from the IO thread (an error under the test-suite's warning policy, noise elsewhere). This wraps
    the method with the same steps plus ``close()`` on failure; if kafka-python changes shape, it is
    left alone.
    """
    import inspect

    from kafka.net import inet

    cls = getattr(inet, "KafkaNetSocket", None)
    original = getattr(cls, "connect", None)
    if cls is None or original is None or getattr(original, "_skewguard_closes_on_failure", False):
        return
    if list(inspect.signature(original).parameters) != [
        "self",
        "net",
        "addrinfo",
        "socket_options",
        "timeout_at",
    ] or not hasattr(cls, "sock_connect"):
        return

    async def connect(
        self: Any, net: Any, addrinfo: Any, socket_options: Any = (), timeout_at: Any = None
    ) -> Any:
        family, sock_type, proto, _canonname, sockaddr = addrinfo
        sock = self.socket(family, sock_type, proto)
        try:
            sock.setblocking(False)
            for option in socket_options:
                sock.setsockopt(*option)
            return await self.sock_connect(net, sock, sockaddr, timeout_at=timeout_at)
        except BaseException:
            sock.close()
            raise

    connect._skewguard_closes_on_failure = True  # type: ignore[attr-defined]
    cls.connect = connect


_close_sockets_of_failed_connects()
