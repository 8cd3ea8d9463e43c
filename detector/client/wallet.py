"""WalletClient: publish a withdrawal, wait for its verdict with a deadline, fail safe.

The contract (README, architecture.md): withdrawals go to ``withdrawals`` keyed by
``account_id`` (murmur2 partitioning); verdicts come back on ``decisions`` keyed by
``account_id``; "a wallet client that gets no verdict in time treats it as delay, never
allow". :meth:`WalletClient.decide`:

1. validates the withdrawal locally with the worker's own parser
   (:func:`detector.events.parse_withdrawal`): an invalid one raises
   :class:`~detector.errors.InvalidEvent` and nothing is sent;
2. makes sure the reader watches the ``decisions`` partition the account hashes to,
   starting from that partition's end offset taken *before* publishing (no verdict can be
   missed, nothing older is read);
3. publishes the withdrawal (acks=all, idempotent producer) unless this client already did;
4. waits for the verdict carrying its ``withdrawal_id``.

It returns the detector's verdict, or a ``delay`` made by the client (``source="client"``,
``reason`` :data:`CLIENT_TIMEOUT` or :data:`CLIENT_ERROR`) when the deadline passes or
anything fails. The client never makes an ``allow``: only a well-formed verdict document of
the detector for this withdrawal and this account can say ``allow``.

Dedupe by ``withdrawal_id``: a verdict received is remembered (LRU, ``cache_size``), and a
second ``decide`` of that id returns it without publishing again; a withdrawal published
whose verdict is late is not published twice either (the next ``decide`` waits for the same
verdict). Duplicate verdict messages (at-least-once delivery) are ignored: the first wins.
Reusing a ``withdrawal_id`` for a different withdrawal raises ``InvalidEvent``
(``withdrawal_id_reused``) instead of answering with the other withdrawal's verdict.

Threads: one client per process, shared by any number of threads. ``decide`` is
thread-safe; one reader thread owns the Kafka consumer (kafka-python consumers are not
thread-safe), the producer (thread-safe) publishes from a small pool so that a blocked send
never holds a caller past its deadline. ``close()`` (or ``with WalletClient(...)``) stops
them; ``decide`` on a closed client returns ``delay`` (``client_error``).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import hashlib
import json
import logging
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from detector.client.transport import KafkaDecisions, KafkaWithdrawals, decisions_partition
from detector.config import Settings, parse_bootstrap
from detector.errors import InvalidEvent
from detector.events import Withdrawal, parse_withdrawal
from detector.pipeline import SCHEMA_VERSION
from detector.policy import VERDICTS, Verdict

__all__ = [
    "CLIENT_ERROR",
    "CLIENT_TIMEOUT",
    "ClientVerdict",
    "DecisionSource",
    "WalletClient",
    "WithdrawalSink",
]

log = logging.getLogger(__name__)

CLIENT_TIMEOUT = "client_timeout"  # no verdict (or no acknowledgement) within the deadline
CLIENT_ERROR = "client_error"  # Kafka unreachable, a send failed, a bad verdict, closed client

_POLL_S = 0.05  # the reader's poll: also how soon it serves a request to watch a partition
_PUBLISH_ACK_TIMEOUT_S = 30.0  # a publish already under way waits this long for its ack
_CLOSE_TIMEOUT_S = 5.0
_DEFAULT_CACHE_SIZE = 10_000


class WithdrawalSink(Protocol):
    """Publishes withdrawal records (thread-safe). See ``transport.KafkaWithdrawals``."""

    def publish(self, key: bytes, value: bytes, timeout_s: float) -> None: ...

    def close(self, timeout_s: float) -> None: ...


class DecisionSource(Protocol):
    """Reads verdict records from chosen partitions of ``decisions`` (one thread only).
    See ``transport.KafkaDecisions``."""

    def partition_count(self) -> int: ...

    def start_at_end(self, partition: int) -> None: ...

    def poll(self, timeout_s: float) -> list[bytes]: ...

    def close(self) -> None: ...


@dataclass(frozen=True, slots=True)
class ClientVerdict:
    """What :meth:`WalletClient.decide` answers.

    ``source="detector"``: the detector's verdict document (``score``, ``reasons`` as
    ``(code, detail)`` pairs, ``hold_seconds`` on ``delay``, ``document`` the JSON text).
    ``source="client"``: a fail-safe ``delay`` made by the client, with ``reason``
    (:data:`CLIENT_TIMEOUT` or :data:`CLIENT_ERROR`) and a sentence in ``detail``.
    """

    withdrawal_id: str
    verdict: Verdict
    source: Literal["detector", "client"]
    reason: str | None = None
    detail: str = ""
    score: float | None = None
    reasons: tuple[tuple[str, str], ...] = ()
    hold_seconds: int | None = None
    model_version: str | None = None
    decided_at: str | None = None
    document: str | None = None

    @property
    def fail_safe(self) -> bool:
        """True when the client made this verdict (always ``delay``)."""
        return self.source == "client"


def _fail_safe(withdrawal_id: str, reason: str, detail: str) -> ClientVerdict:
    return ClientVerdict(withdrawal_id, "delay", "client", reason=reason, detail=detail)


class _BadVerdictError(Exception):
    """A verdict message for our withdrawal that breaks the verdict contract."""


def _verdict_from(doc: Mapping[str, Any], text: str, account_id: str) -> ClientVerdict:
    """The detector's verdict document -> ClientVerdict; anything off raises _BadVerdictError."""
    if doc.get("account_id") != account_id:
        raise _BadVerdictError(
            f"verdict for account {doc.get('account_id')!r}, the withdrawal's is {account_id!r}"
        )
    if doc.get("schema_version") != SCHEMA_VERSION:
        raise _BadVerdictError(
            f"verdict schema_version {doc.get('schema_version')!r}, this client reads "
            f"{SCHEMA_VERSION}"
        )
    verdict = doc.get("verdict")
    if verdict not in VERDICTS:
        raise _BadVerdictError(f"unknown verdict {verdict!r}")
    score = doc.get("score")
    if isinstance(score, bool) or not isinstance(score, (int, float)) or not 0.0 <= score <= 1.0:
        raise _BadVerdictError(f"score must be a number in [0, 1], got {score!r}")
    raw_reasons = doc.get("reasons", [])
    if not isinstance(raw_reasons, list):
        raise _BadVerdictError("reasons must be a list")
    reasons: list[tuple[str, str]] = []
    for item in raw_reasons:
        if not isinstance(item, dict) or not isinstance(item.get("code"), str):
            raise _BadVerdictError(f"a reason must be an object with a code, got {item!r}")
        reasons.append((item["code"], str(item.get("detail", ""))))
    hold = doc.get("hold_seconds")
    if hold is not None and (isinstance(hold, bool) or not isinstance(hold, int)):
        raise _BadVerdictError(f"hold_seconds must be an integer, got {hold!r}")
    model_version, decided_at = doc.get("model_version"), doc.get("decided_at")
    return ClientVerdict(
        withdrawal_id=str(doc["withdrawal_id"]),
        verdict=verdict,
        source="detector",
        score=float(score),
        reasons=tuple(reasons),
        hold_seconds=hold,
        model_version=model_version if isinstance(model_version, str) else None,
        decided_at=decided_at if isinstance(decided_at, str) else None,
        document=text,
    )


def encode_withdrawal(withdrawal: Mapping[str, Any]) -> tuple[Withdrawal, bytes, str]:
    """Validate and encode a withdrawal: ``(event, JSON bytes, fingerprint)``.

    Raises :class:`InvalidEvent` for anything the worker would dead-letter on content
    (the worker's parser, byte limits included), or that is not strict JSON at all. The
    fingerprint identifies the content regardless of key order.
    """
    if not isinstance(withdrawal, Mapping):
        raise InvalidEvent(
            "not_an_object", f"a withdrawal is a mapping, got {type(withdrawal).__name__}"
        )
    doc = dict(withdrawal)
    try:
        value = json.dumps(doc, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
        data = value.encode("utf-8")
        canonical = json.dumps(doc, sort_keys=True, ensure_ascii=True, allow_nan=False)
    except UnicodeEncodeError as exc:
        raise InvalidEvent(
            "invalid_unicode", f"a string of the withdrawal is not valid Unicode: {exc.reason}"
        ) from None
    except RecursionError:
        raise InvalidEvent("too_deep", "the withdrawal nests too deeply to encode") from None
    except (TypeError, ValueError) as exc:
        raise InvalidEvent(
            "invalid_json", f"the withdrawal cannot be encoded as strict JSON: {exc}"
        ) from None
    event = parse_withdrawal(data)
    return event, data, hashlib.sha256(canonical.encode("ascii")).hexdigest()


@dataclass(eq=False)
class _Pending:
    """A withdrawal this client has been asked about and has no verdict for yet."""

    fingerprint: str
    account_id: str
    done: threading.Event = field(default_factory=threading.Event)
    verdict: ClientVerdict | None = None
    state: Literal["new", "publishing", "published", "failed"] = "new"
    waiters: int = 0


@dataclass(eq=False)
class _Watch:
    """A request to the reader: watch ``partition`` from its current end offset."""

    partition: int
    done: threading.Event = field(default_factory=threading.Event)
    error: str | None = None


class WalletClient:
    """Publishes withdrawals and awaits their verdicts; see the module docstring.

    ``connect_withdrawals`` / ``connect_decisions`` build the Kafka side (default:
    kafka-python, ``transport.KafkaWithdrawals`` / ``transport.KafkaDecisions``); the reader
    thread calls them, retrying every ``reconnect_s`` until both succeed, so constructing a
    client never blocks or raises on an unreachable cluster (``decide`` says ``delay``).
    """

    def __init__(
        self,
        bootstrap_servers: str | Sequence[str] = "127.0.0.1:9092",
        *,
        topic_withdrawals: str = "withdrawals",
        topic_decisions: str = "decisions",
        cache_size: int = _DEFAULT_CACHE_SIZE,
        client_id: str = "detector-wallet-client",
        publish_threads: int = 4,
        reconnect_s: float = 1.0,
        connect_withdrawals: Callable[[], WithdrawalSink] | None = None,
        connect_decisions: Callable[[], DecisionSource] | None = None,
    ) -> None:
        if cache_size < 1:
            raise ValueError(f"cache_size must be >= 1, got {cache_size}")
        if publish_threads < 1:
            raise ValueError(f"publish_threads must be >= 1, got {publish_threads}")
        bootstrap = (
            [
                f"[{h}]:{p}" if ":" in h else f"{h}:{p}"
                for h, p in parse_bootstrap(bootstrap_servers)
            ]
            if isinstance(bootstrap_servers, str)
            else list(bootstrap_servers)
        )

        def kafka_withdrawals() -> WithdrawalSink:
            return KafkaWithdrawals(bootstrap, topic_withdrawals, client_id=client_id)

        def kafka_decisions() -> DecisionSource:
            return KafkaDecisions(bootstrap, topic_decisions, client_id=client_id)

        self._connect_withdrawals = connect_withdrawals or kafka_withdrawals
        self._connect_decisions = connect_decisions or kafka_decisions
        self._cache_size = cache_size
        self._reconnect_s = reconnect_s

        self._lock = threading.Lock()
        self._decided: OrderedDict[str, tuple[str, ClientVerdict]] = OrderedDict()
        self._pending: OrderedDict[str, _Pending] = OrderedDict()
        self._watched: set[int] = set()
        self._requests: dict[int, _Watch] = {}  # partition -> a request not served yet
        self._wake = threading.Event()
        self._connected = threading.Event()
        self._closed = threading.Event()
        self._partitions = 0
        self._sink: WithdrawalSink | None = None
        self._last_error: str | None = None
        self._pool = concurrent.futures.ThreadPoolExecutor(
            publish_threads, thread_name_prefix="wallet-client-publish"
        )
        self._reader = threading.Thread(target=self._run, name="wallet-client-reader", daemon=True)
        self._reader.start()

    @classmethod
    def from_settings(cls, settings: Settings, **options: Any) -> WalletClient:
        """A client for the detector configured by ``settings`` (bootstrap and topics)."""
        return cls(
            settings.bootstrap_list,
            topic_withdrawals=settings.topic_withdrawals,
            topic_decisions=settings.topic_decisions,
            **options,
        )

    # ------------------------------------------------------------------ public API

    def decide(self, withdrawal: Mapping[str, Any], deadline_s: float) -> ClientVerdict:
        """The verdict for ``withdrawal`` within ``deadline_s`` seconds, else ``delay``.

        Raises :class:`InvalidEvent` (nothing sent) for a withdrawal that breaks the contract
        or reuses a ``withdrawal_id`` with other content, and ``ValueError`` for a deadline
        that is not a positive number. Every other failure is a fail-safe ``delay``.
        """
        if not (isinstance(deadline_s, (int, float)) and math.isfinite(deadline_s)) or (
            deadline_s <= 0
        ):
            raise ValueError(f"deadline_s must be a positive number of seconds, got {deadline_s}")
        deadline = time.monotonic() + deadline_s
        event, value, fingerprint = encode_withdrawal(withdrawal)
        wid = event.withdrawal_id
        with self._lock:
            known = self._decided.get(wid)
            if known is not None:
                self._check_same(wid, known[0], fingerprint)
                self._decided.move_to_end(wid)
                return known[1]
            pending = self._pending.get(wid)
            if pending is None:
                pending = _Pending(fingerprint, event.account_id)
                self._pending[wid] = pending
                self._trim_pending()
            else:
                self._check_same(wid, pending.fingerprint, fingerprint)
            pending.waiters += 1
        try:
            return self._await(wid, event, value, pending, deadline, deadline_s)
        except Exception as exc:  # never let a bug become anything but delay
            log.exception("wallet client: deciding %s failed", wid)
            return _fail_safe(wid, CLIENT_ERROR, f"{type(exc).__name__}: {exc}")
        finally:
            with self._lock:
                pending.waiters -= 1

    async def decide_async(self, withdrawal: Mapping[str, Any], deadline_s: float) -> ClientVerdict:
        """:meth:`decide` for asyncio code (runs it in a worker thread)."""
        return await asyncio.to_thread(self.decide, withdrawal, deadline_s)

    def close(self, timeout_s: float = _CLOSE_TIMEOUT_S) -> None:
        """Stop the reader, flush and close the producer; waiting callers get ``delay``."""
        if self._closed.is_set():
            return
        self._closed.set()
        self._wake.set()
        with self._lock:
            waiting = list(self._pending.values())
            requests, self._requests = self._requests, {}
        for pending in waiting:
            pending.done.set()
        for request in requests.values():
            request.error = "the client is closed"
            request.done.set()
        self._reader.join(timeout_s)
        self._pool.shutdown(wait=False, cancel_futures=True)

    def __enter__(self) -> WalletClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # ------------------------------------------------------------------ decide's steps

    @staticmethod
    def _check_same(wid: str, known: str, fingerprint: str) -> None:
        if known != fingerprint:
            raise InvalidEvent(
                "withdrawal_id_reused",
                f"withdrawal_id {wid!r} was already used for a different withdrawal: every "
                "withdrawal needs its own id (its verdict would be the other one's)",
            )

    def _trim_pending(self) -> None:
        """Forget the oldest unanswered withdrawals nobody waits for (under the lock)."""
        excess = len(self._pending) - self._cache_size
        if excess <= 0:
            return
        doomed: list[str] = []
        for wid, pending in self._pending.items():  # oldest first
            if pending.waiters == 0:
                doomed.append(wid)
                if len(doomed) == excess:
                    break
        for wid in doomed:
            del self._pending[wid]

    def _await(
        self,
        wid: str,
        event: Withdrawal,
        value: bytes,
        pending: _Pending,
        deadline: float,
        deadline_s: float,
    ) -> ClientVerdict:
        def left() -> float:
            return max(deadline - time.monotonic(), 0.0)

        if pending.verdict is not None:  # answered meanwhile (another thread's request)
            return pending.verdict
        if self._closed.is_set():
            return _fail_safe(wid, CLIENT_ERROR, "the client is closed")
        if not self._connected.wait(left()):
            error = self._last_error
            if error is not None:
                return _fail_safe(wid, CLIENT_ERROR, f"not connected to Kafka: {error}")
            return _fail_safe(wid, CLIENT_TIMEOUT, "still connecting to Kafka at the deadline")

        # Watch the account's decisions partition from an end offset taken before publishing.
        partition = decisions_partition(event.account_id, self._partitions)
        with self._lock:
            request = None
            if partition not in self._watched:  # ask the reader, or join a request under way
                request = self._requests.setdefault(partition, _Watch(partition))
        if request is not None:
            self._wake.set()
            if not request.done.wait(left()):
                return _fail_safe(
                    wid, CLIENT_TIMEOUT, f"decisions partition {partition} not ready in time"
                )
            if request.error is not None:
                return _fail_safe(
                    wid,
                    CLIENT_ERROR,
                    f"cannot read decisions partition {partition}: {request.error}",
                )

        with self._lock:
            publish = pending.verdict is None and pending.state in ("new", "failed")
            if publish:
                pending.state = "publishing"
        if publish:
            sent = self._pool.submit(self._publish, pending, event.account_id, value, deadline)
            try:
                sent.result(timeout=left())
            except concurrent.futures.TimeoutError:
                return _fail_safe(
                    wid, CLIENT_TIMEOUT, "Kafka did not acknowledge the withdrawal in time"
                )
            except Exception as exc:
                return _fail_safe(
                    wid, CLIENT_ERROR, f"publishing failed: {type(exc).__name__}: {exc}"
                )

        if pending.done.wait(left()) and pending.verdict is not None:
            return pending.verdict
        if self._closed.is_set():
            return _fail_safe(wid, CLIENT_ERROR, "the client was closed while waiting")
        return _fail_safe(wid, CLIENT_TIMEOUT, f"no verdict within {deadline_s:g} s")

    def _publish(self, pending: _Pending, account_id: str, value: bytes, deadline: float) -> None:
        """Runs on the publish pool: send and wait for the ack (marks the pending's state)."""
        try:
            if time.monotonic() >= deadline:  # its caller has answered delay already
                raise TimeoutError("the deadline passed before the withdrawal could be sent")
            sink = self._sink
            if sink is None or self._closed.is_set():
                raise ConnectionError("the client is closed")
            sink.publish(account_id.encode("utf-8"), value, _PUBLISH_ACK_TIMEOUT_S)
        except BaseException:
            with self._lock:
                pending.state = "failed"
            raise
        with self._lock:
            pending.state = "published"

    # ------------------------------------------------------------------ the reader thread

    def _run(self) -> None:
        source: DecisionSource | None = None
        try:
            while not self._closed.is_set():
                if source is None:
                    source = self._connect()
                    if source is None:
                        self._closed.wait(self._reconnect_s)
                        continue
                self._serve_requests(source)
                try:
                    if self._watched:
                        values = source.poll(_POLL_S)
                    else:
                        self._wake.wait(_POLL_S)
                        self._wake.clear()
                        values = []
                except Exception as exc:
                    self._note_error(f"reading decisions failed: {type(exc).__name__}: {exc}")
                    self._closed.wait(self._reconnect_s)
                    continue
                for raw in values:
                    self._on_verdict(raw)
        finally:
            self._shut(source)

    def _connect(self) -> DecisionSource | None:
        source: DecisionSource | None = None
        try:
            source = self._connect_decisions()
            partitions = source.partition_count()
            if partitions < 1:
                raise ConnectionError("the decisions topic does not exist")
            self._sink = self._connect_withdrawals()
        except Exception as exc:
            self._note_error(f"{type(exc).__name__}: {exc}")
            if source is not None:
                try:
                    source.close()
                except Exception:
                    log.debug("wallet client: closing a half-connected reader failed")
            return None
        self._partitions = partitions
        self._last_error = None
        self._connected.set()
        log.info("wallet client: connected (decisions has %d partitions)", partitions)
        return source

    def _note_error(self, message: str) -> None:
        if message != self._last_error:
            log.warning("wallet client: %s", message)
        self._last_error = message

    def _serve_requests(self, source: DecisionSource) -> None:
        # A request stays listed until it is served, so threads that need the same partition
        # meanwhile join it instead of asking again.
        with self._lock:
            requests = list(self._requests.values())
        for request in requests:
            try:
                source.start_at_end(request.partition)
            except Exception as exc:
                request.error = f"{type(exc).__name__}: {exc}"
            with self._lock:
                if request.error is None:
                    self._watched.add(request.partition)
                if self._requests.get(request.partition) is request:
                    del self._requests[request.partition]
            request.done.set()

    def _on_verdict(self, raw: bytes) -> None:
        try:
            text = raw.decode("utf-8")
            doc = json.loads(text)
        except ValueError:  # UnicodeDecodeError and JSONDecodeError: not a verdict
            return
        if not isinstance(doc, dict) or not isinstance(doc.get("withdrawal_id"), str):
            return
        wid = doc["withdrawal_id"]
        with self._lock:
            pending = self._pending.get(wid)
            if pending is None or pending.verdict is not None:
                return  # not asked by this client, or a duplicate message: the first one won
            try:
                verdict = _verdict_from(doc, text, pending.account_id)
            except _BadVerdictError as exc:
                log.warning("wallet client: bad verdict for %s: %s", wid, exc)
                verdict = _fail_safe(wid, CLIENT_ERROR, f"the verdict message is invalid: {exc}")
            pending.verdict = verdict
            del self._pending[wid]
            if not verdict.fail_safe:
                self._decided[wid] = (pending.fingerprint, verdict)
                while len(self._decided) > self._cache_size:
                    self._decided.popitem(last=False)
        pending.done.set()

    def _shut(self, source: DecisionSource | None) -> None:
        if source is not None:
            try:
                source.close()
            except Exception:
                log.debug("wallet client: closing the reader failed", exc_info=True)
        sink, self._sink = self._sink, None
        if sink is not None:
            try:
                sink.close(_CLOSE_TIMEOUT_S)
            except Exception:
                log.debug("wallet client: closing the producer failed", exc_info=True)
