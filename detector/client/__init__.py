"""The wallet client wing: publish a withdrawal, await its verdict, fail safe (kafka-python).

A wallet service asks :class:`WalletClient.decide` and gets a :class:`ClientVerdict`: the
detector's verdict when it arrives within the deadline, else ``delay`` made by the client
(``reason`` ``client_timeout`` or ``client_error``), never ``allow``. Imports the core only
(``tests/core/test_layering.py``); a service installs it with ``pip install .``.
"""

from __future__ import annotations

from detector.client.transport import KafkaDecisions, KafkaWithdrawals, decisions_partition
from detector.client.wallet import (
    CLIENT_ERROR,
    CLIENT_TIMEOUT,
    ClientVerdict,
    DecisionSource,
    WalletClient,
    WithdrawalSink,
)

__all__ = [
    "CLIENT_ERROR",
    "CLIENT_TIMEOUT",
    "ClientVerdict",
    "DecisionSource",
    "KafkaDecisions",
    "KafkaWithdrawals",
    "WalletClient",
    "WithdrawalSink",
    "decisions_partition",
]
