"""The one exception root of the detector.

Hierarchy::

    DetectorError
    ├── ConfigError            a setting is missing or malformed (DETECTOR_* variables)
    ├── InvalidEvent           a withdrawal breaks the contract; ``reason`` is human-readable,
    │                          ``code`` is a stable machine code (used as the DLQ metric label)
    ├── InputFileError         a JSONL/CLI input file has a bad line (carries ``line``)
    ├── ModelError             a model artifact is missing, corrupted, tampered or incompatible
    │   └── ScoringInputError  a feature matrix has NaN/inf or the wrong width
    └── KafkaSetupError        the local broker or the topics cannot be set up (``retriable``)
"""

from __future__ import annotations

__all__ = [
    "ConfigError",
    "DetectorError",
    "InputFileError",
    "InvalidEvent",
    "KafkaSetupError",
    "ModelError",
    "ScoringInputError",
]


class DetectorError(Exception):
    """Root of every error the detector raises on purpose."""

    retriable: bool = False


class ConfigError(DetectorError):
    """A setting is missing or malformed."""


class InvalidEvent(DetectorError):  # noqa: N818 - the contract's word: "an invalid event"
    """A withdrawal event breaks the contract."""

    def __init__(self, code: str, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


class InputFileError(DetectorError):
    """A line of an input file is unreadable; the message names the line and why."""

    def __init__(self, path: str, line: int, reason: str) -> None:
        super().__init__(f"{path}:{line}: {reason}")
        self.path = path
        self.line = line
        self.reason = reason


class ModelError(DetectorError):
    """A model artifact is missing, corrupted, tampered with, or incompatible."""


class ScoringInputError(ModelError, ValueError):
    """A feature matrix given to the scorer has NaN/inf values or the wrong shape."""


class KafkaSetupError(DetectorError):
    """The broker or the topics could not be set up."""

    def __init__(self, message: str, *, retriable: bool = False) -> None:
        super().__init__(message)
        self.retriable = retriable
