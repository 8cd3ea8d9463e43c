"""Streaming withdrawal anomaly detector: Faust + Kafka + a compiled isolation forest."""

__version__ = "0.1.0"
__all__ = ["__version__"]
