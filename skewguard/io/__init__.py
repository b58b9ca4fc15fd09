"""Adapters to Kafka: the only package that imports kafka-python.

``broker`` runs the embedded Kafka-protocol broker (Tansu) used by the demo and the tests; ``kafka``
holds the typed producer/consumer/admin wrappers the rest of skewguard talks to. Kafka errors are
converted into :class:`skewguard.errors.BrokerError` here, so nothing above this package ever sees
a kafka-python type.
"""
