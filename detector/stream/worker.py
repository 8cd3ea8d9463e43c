"""``detector worker``: verify the model, create the topics, run the Faust worker."""

from __future__ import annotations

from detector.config import Settings
from detector.gctune import settle
from detector.stream import compat
from detector.stream.app import create_app, topic_specs
from detector.stream.topics import ensure_topics

__all__ = ["run_worker"]


def run_worker(settings: Settings) -> None:
    model = settings.load_model()  # fail fast, before touching Kafka
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    ensure_topics(
        settings.bootstrap_servers, topic_specs(settings), security=settings.kafka_python_config()
    )
    detector_app = create_app(settings, model=model)
    worker = compat.QuietWorker(detector_app.app, loglevel=settings.log_level.upper())
    settle(settings.gc_young_threshold)
    detector_app.metrics.watch_gc()  # for the process's life: detector_gc_pause_seconds
    worker.execute_from_commandline()
