"""Tests of the Kafka adapters against the real embedded broker."""
