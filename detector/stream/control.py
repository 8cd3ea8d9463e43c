"""Which model every worker serves: the model control topic, and the switch.

``<app_id>-model-control`` is a compacted topic of one partition; its latest record (key
``models``) says which version of the model store is *active* (decides) and which, if any,
is the *shadow* (scores the same withdrawals; its verdicts go to ``decisions-shadow`` only)::

    {"active": "iforest-1a2b3c4d5e", "shadow": null, "previous": "iforest-0f9e8d7c6b",
     "changed_at": "2026-12-01T10:00:00.000Z", "changed_by": "alice", "seq": 7}

``detector models promote | rollback | shadow`` write it; every worker follows it (a plain
consumer of its own, not in the group: every worker must see every record), verifies the
named artifact (digests, and the signature when a key is configured) and switches between
two micro-batches, without a restart. A version that does not verify is refused and the
current one stays (``detector_model_switch_failures_total``).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from typing import Any

from detector.config import Settings
from detector.errors import ConfigError, DetectorError
from detector.events import format_rfc3339
from detector.model import Model, ModelStore
from detector.stream.compat import import_kafka

__all__ = ["CONTROL_KEY", "ModelControl", "follow_control", "publish_control", "read_control"]

log = logging.getLogger(__name__)

CONTROL_KEY = b"models"
# Pause between polls of the control topic when nothing arrived (s): a switch reaches
# every worker within about this long.
_POLL_S = 0.5


@dataclass(frozen=True)
class ModelControl:
    active: str | None = None
    shadow: str | None = None
    previous: str | None = None
    changed_at: str = ""
    changed_by: str = ""
    seq: int = 0

    def encode(self) -> bytes:
        return json.dumps(asdict(self), separators=(",", ":")).encode()

    @classmethod
    def decode(cls, raw: bytes) -> ModelControl:
        try:
            doc = json.loads(raw)
            return cls(
                active=_version(doc.get("active")),
                shadow=_version(doc.get("shadow")),
                previous=_version(doc.get("previous")),
                changed_at=str(doc.get("changed_at", "")),
                changed_by=str(doc.get("changed_by", "")),
                seq=int(doc.get("seq", 0)),
            )
        except (ValueError, TypeError, AttributeError) as exc:
            raise DetectorError(f"unreadable model control record: {exc}") from None

    def changed(self, by: str, **fields: Any) -> ModelControl:
        values = {**asdict(self), **fields}
        values.update(changed_at=format_rfc3339(time.time()), changed_by=by, seq=self.seq + 1)
        return ModelControl(**values)


def _version(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        raise ValueError(f"bad version {value!r}")
    return value


# ---------------------------------------------------------------------- the CLI side


def read_control(settings: Settings, *, timeout: float = 10.0) -> ModelControl:
    """The latest control record (an empty one when the topic has none)."""
    import_kafka()
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(
        bootstrap_servers=settings.bootstrap_list,
        enable_auto_commit=False,
        **settings.kafka_python_config(),
    )
    try:
        tp = TopicPartition(settings.topic_model_control, 0)
        consumer.assign([tp])
        end = consumer.end_offsets([tp])[tp]
        if end == 0:
            return ModelControl()
        consumer.seek(tp, end - 1)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for record in consumer.poll(timeout_ms=500).get(tp, []):
                return ModelControl.decode(record.value)
        raise DetectorError(f"no answer from {settings.topic_model_control} in {timeout:.0f} s")
    finally:
        consumer.close()


def publish_control(settings: Settings, control: ModelControl) -> None:
    """Write ``control`` (every worker follows it within about a second)."""
    import_kafka()
    from kafka import KafkaProducer

    producer = KafkaProducer(
        bootstrap_servers=settings.bootstrap_list, acks="all", **settings.kafka_python_config()
    )
    try:
        producer.send(settings.topic_model_control, key=CONTROL_KEY, value=control.encode())
        producer.flush(30)
    finally:
        producer.close()


def initial_version(settings: Settings) -> str | None:
    """The version of DETECTOR_MODEL_DIR: what workers serve before any promote."""
    try:
        return str(json.loads((settings.model_dir / "model.json").read_text())["version"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def check_version(store: ModelStore, version: str, settings: Settings) -> None:
    """Refuse to publish a version the store does not hold or that does not verify."""
    if version not in store.versions():
        raise ConfigError(
            f"{version} is not in the model store {store.root} "
            f"(has: {', '.join(store.versions()) or 'nothing'}); `detector models add` it first"
        )
    settings.load_model(store.path_of(version))  # raises ModelError if it does not verify


# ---------------------------------------------------------------------- the worker side


async def follow_control(
    settings: Settings,
    on_change: Callable[[ModelControl], Awaitable[None]],
    *,
    stopped: Callable[[], bool],
) -> None:
    """Read the control topic from its start, forever; ``on_change`` for every record."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.bootstrap_list,
        enable_auto_commit=False,
        **_aiokafka_security(settings),
    )
    tp = TopicPartition(settings.topic_model_control, 0)
    await consumer.start()
    try:
        consumer.assign([tp])
        await consumer.seek_to_beginning(tp)
        while not stopped():
            batches = await consumer.getmany(tp, timeout_ms=int(_POLL_S * 1000))
            records = batches.get(tp, [])
            if records:  # only the newest matters (compacted, one key)
                try:
                    control = ModelControl.decode(records[-1].value)
                except DetectorError as exc:
                    log.error("%s; keeping the current models", exc)
                    continue
                await on_change(control)
    finally:
        await consumer.stop()


def _aiokafka_security(settings: Settings) -> dict[str, Any]:
    config: dict[str, Any] = {"security_protocol": settings.kafka_security_protocol}
    if settings.kafka_uses_ssl:
        config["ssl_context"] = settings.kafka_ssl_context()
    if settings.kafka_uses_sasl:
        config["sasl_mechanism"] = settings.kafka_sasl_mechanism
        config["sasl_plain_username"] = settings.kafka_sasl_username
        config["sasl_plain_password"] = settings.kafka_sasl_password()
    return config


class ModelSwitch:
    """Keeps the worker's active and shadow models in line with the control topic."""

    def __init__(
        self,
        settings: Settings,
        store: ModelStore,
        apply: Callable[[str, Model | None], None],
        *,
        on_failure: Callable[[str, str], None],
    ) -> None:
        self.settings = settings
        self.store = store
        self._apply = apply  # (role, model or None) -> None
        self._on_failure = on_failure
        self.serving: dict[str, str | None] = {"active": None, "shadow": None}
        self._loaded: dict[str, Model] = {}  # versions already verified in this process

    def start_with(self, model: Model) -> None:
        """The model the worker started with (DETECTOR_MODEL_DIR) serves as active, and
        stays available by its version without the store."""
        self._loaded[model.version] = model
        self.serving["active"] = model.version

    async def __call__(self, control: ModelControl) -> None:
        for role in ("active", "shadow"):
            wanted = getattr(control, role)
            if wanted == self.serving[role]:
                continue
            if wanted is None:
                if role == "shadow":
                    self._apply(role, None)
                    self.serving[role] = None
                continue
            model = self._loaded.get(wanted)
            if model is None:
                try:
                    model = await asyncio.get_running_loop().run_in_executor(
                        None, self.settings.load_model, self.store.path_of(wanted)
                    )
                except DetectorError as exc:
                    log.error("refusing model %s as %s: %s", wanted, role, exc)
                    self._on_failure(role, wanted)
                    continue
                self._loaded = {**dict(list(self._loaded.items())[-3:]), wanted: model}
            self._apply(role, model)
            self.serving[role] = wanted
            log.warning("now serving model %s as %s (control seq %d)", wanted, role, control.seq)
