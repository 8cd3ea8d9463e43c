"""``detector``: the command line. Each command is a thin wrapper over a plain function."""

from __future__ import annotations

import argparse
import getpass
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from detector.config import Settings
from detector.errors import ConfigError, DetectorError
from detector.model import COMBINE_METHODS
from detector.offline.training import DEFAULT_TREES, FAMILY_MAX_SAMPLES
from detector.policy import DEFAULT_DELAY_RATE, DEFAULT_REFUSE_RATE

__all__ = ["main"]


def _settings(args: argparse.Namespace) -> Settings:
    overrides = {}
    if getattr(args, "bootstrap_servers", None):
        overrides["bootstrap_servers"] = args.bootstrap_servers
    return Settings.from_env(**overrides)


def cmd_kafka(args: argparse.Namespace) -> int:
    from detector.local import broker

    settings = _settings(args)
    if args.action == "start":
        broker.start(settings)
    elif args.action == "stop":
        broker.stop(settings)
    else:
        status = broker.status(settings)
        print(status)
        return 0 if status.ready else 3
    return 0


def cmd_topics(args: argparse.Namespace) -> int:
    from detector.review.service import review_topic_specs
    from detector.stream.app import topic_specs
    from detector.stream.topics import ensure_topics

    settings = _settings(args)
    specs = list({s.name: s for s in topic_specs(settings) + review_topic_specs(settings)}.values())
    created = ensure_topics(
        settings.bootstrap_servers, specs, security=settings.kafka_python_config()
    )
    for spec in specs:
        print(
            f"{spec.name}: {spec.partitions} partitions"
            f"{' (created)' if spec.name in created else ''}"
        )
    return 0


def cmd_worker(args: argparse.Namespace) -> int:
    from detector.stream.worker import run_worker

    run_worker(_settings(args))
    return 0


def cmd_review(args: argparse.Namespace) -> int:
    if args.hash_user is not None:
        return _hash_user(args.hash_user)
    from detector.review.service import run_review

    run_review(_settings(args))
    return 0


def _hash_user(name: str) -> int:
    """Print a users-file line for ``name``; the password comes from the prompt (twice) or,
    when stdin is not a terminal, from its first line."""
    import getpass

    from detector.review.auth import hash_password
    from detector.review.records import valid_reviewer

    if not valid_reviewer(name):
        raise ConfigError(f"{name!r} is not a valid analyst name (1..64 letters, digits, ._@+-)")
    if sys.stdin.isatty():
        password = getpass.getpass(f"password for {name}: ")
        if getpass.getpass("again: ") != password:
            raise ConfigError("the passwords differ")
    else:
        password = sys.stdin.readline().rstrip("\r\n")
    if len(password) < 12:
        raise ConfigError("use a password of at least 12 characters")
    print(f"{name}:{hash_password(password)}")
    return 0


def cmd_simulate(args: argparse.Namespace) -> int:
    from detector.local import traffic
    from detector.offline import simulate

    config = simulate.SimConfig(
        accounts=args.accounts,
        days=args.days,
        seed=args.seed,
        attacks_per_scenario=args.attacks_per_scenario,
        amount_scale=args.amount_scale,
        activity_scale=args.activity_scale,
    )
    events = simulate.generate(config)
    if args.labels_out:
        n_labels = simulate.write_labels(simulate.attack_labels(events, config), args.labels_out)
        print(f"wrote {n_labels} labels to {args.labels_out}")
    if args.out:
        n = simulate.write_jsonl(events, Path(args.out))
        labels: dict[str, int] = {}
        for e in events:
            label = e["metadata"]["label"]
            labels[label] = labels.get(label, 0) + 1
        print(f"wrote {n} withdrawals to {args.out}: {json.dumps(labels, sort_keys=True)}")
        return 0
    settings = _settings(args)
    sent = traffic.stream_to_kafka(
        events,
        bootstrap_servers=settings.bootstrap_servers,
        topic=args.topic or settings.topic_withdrawals,
        rate=args.rate,
        duration=args.duration,
    )
    print(f"sent {sent} withdrawals to {args.topic or settings.topic_withdrawals}")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from detector.events import parse_rfc3339
    from detector.model import load_signer
    from detector.offline.training import train

    signer = load_signer(Path(args.sign_key)) if args.sign_key else None
    result = train(
        Path(args.events),
        Path(args.out),
        warmup_path=Path(args.warmup) if args.warmup else None,
        fit_from=parse_rfc3339(args.fit_from) if args.fit_from else None,
        delay_rate=args.delay_rate,
        refuse_rate=args.refuse_rate,
        n_estimators=args.trees,
        max_samples=args.max_samples,
        seed=args.seed,
        plots=not args.no_plots,
        signer=signer,
    )
    report = result.report
    print(
        f"model {report['model_version']} fitted on {report['events']} of "
        f"{report['history_events']} withdrawals -> {args.out}"
    )
    print(
        f"thresholds: delay >= {report['thresholds']['delay_threshold']:.4f}, "
        f"refuse >= {report['thresholds']['refuse_threshold']:.4f}"
    )
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    from detector import model as artifact

    if args.action == "keygen":
        private, public = Path(args.private), Path(args.public)
        artifact.generate_ed25519(private, public)
        print(f"Ed25519 key pair: {private} (signs, keep it secret), {public} (workers verify)")
        print(f"workers: DETECTOR_MODEL_VERIFY_KEY={public}")
        return 0
    if args.action in ("add", "list", "promote", "rollback", "shadow"):
        return _models_control(args)
    directory = Path(args.dir)
    if args.action == "sign":
        artifact.sign_artifact(directory, artifact.load_signer(Path(args.key)))
        print(f"signed {directory} ({artifact.SIGNATURE})")
        return 0
    verifier = artifact.load_verifier(Path(args.key)) if args.key else None
    loaded = artifact.Model.load(directory, verifier=verifier)
    families = ", ".join(f.name for f in loaded.families)
    print(f"{directory}: model {loaded.version} verifies ({families}; combine {loaded.combine})")
    return 0


def _models_control(args: argparse.Namespace) -> int:
    """The model store and the control topic: add, list, promote, rollback, shadow."""
    from detector.model import ModelStore, load_verifier
    from detector.stream import control

    settings = _settings(args)
    store = ModelStore(settings.model_store)
    if args.action == "add":
        key = settings.model_verify_key
        version = store.add(Path(args.dir), verifier=load_verifier(Path(key)) if key else None)
        print(f"{version} in {store.root}")
        return 0
    current = control.read_control(settings)
    if args.action == "list":
        for version in store.versions():
            roles = [r for r in ("active", "shadow", "previous") if getattr(current, r) == version]
            print(f"{version}  {' '.join(roles)}".rstrip())
        if current.seq:
            print(f"(control seq {current.seq}, {current.changed_at} by {current.changed_by})")
        return 0
    by = args.by
    # Before any promote, workers serve DETECTOR_MODEL_DIR: that is what a rollback returns to.
    serving = current.active or control.initial_version(settings)
    if args.action == "promote":
        control.check_version(store, args.version, settings)
        new = current.changed(by, active=args.version, previous=serving)
        if new.shadow == args.version:
            new = new.changed(by, shadow=None)
    elif args.action == "rollback":
        if current.previous is None:
            raise ConfigError("nothing to roll back to: no previous active version on record")
        if current.previous != control.initial_version(settings):
            control.check_version(store, current.previous, settings)
        new = current.changed(by, active=current.previous, previous=serving)
    else:  # shadow
        if args.version != "off":
            control.check_version(store, args.version, settings)
        new = current.changed(by, shadow=None if args.version == "off" else args.version)
    control.publish_control(settings, new)
    print(
        f"control seq {new.seq}: active {new.active}, shadow {new.shadow or '-'}, "
        f"previous {new.previous or '-'} (workers switch within seconds)"
    )
    return 0


def cmd_backfill(args: argparse.Namespace) -> int:
    from detector.local.backfill import backfill

    settings = _settings(args)
    model = settings.load_model(Path(args.model) if args.model else None)
    backfill(Path(args.events), settings, model.params)
    return 0


def cmd_shadow_report(args: argparse.Namespace) -> int:
    from detector.events import parse_rfc3339
    from detector.stream.shadow import format_report, shadow_report

    settings = _settings(args)
    since = parse_rfc3339(args.since) if args.since else None
    result = shadow_report(settings, since=since)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    print(format_report(result, show=args.show))
    return 0


def cmd_replay(args: argparse.Namespace) -> int:
    from detector.events import format_rfc3339, parse_rfc3339
    from detector.offline.dataset import load_events, load_labels
    from detector.offline.replay import quality_report, replay, write_verdicts

    settings = Settings.from_env()
    model = settings.load_model(Path(args.model))
    events = load_events(Path(args.events))
    score_from = parse_rfc3339(args.score_from) if args.score_from else None
    if args.warmup:
        history = load_events(Path(args.warmup))
        if score_from is None and events:
            score_from = events[0].requested_at
        events = sorted([*history, *events], key=lambda e: e.requested_at)
    reports = load_labels(Path(args.labels)) if args.labels else []
    feedback = settings.feedback()

    def run(with_reports: bool) -> Any:
        return replay(
            events,
            model,
            hold_seconds=settings.hold_seconds,
            reports=reports if with_reports else (),
            feedback=feedback,
            score_from=score_from,
            structuring=settings.structuring(),
            jobs=args.jobs,
        )

    result = run(True)
    if args.out:
        write_verdicts(result.verdicts, Path(args.out))
    report = quality_report(result.verdicts, result.labels)
    report["model_version"] = model.version
    report["events_per_second"] = round(result.events_per_second)
    if score_from is not None:
        report["scored_from"] = format_rfc3339(score_from)
    if reports:
        plain = run(False)
        report["labels_applied"] = len(reports)
        report["without_feedback"] = quality_report(plain.verdicts, plain.labels)
    if args.report:
        path = Path(args.report)
        path.write_text(json.dumps(report, indent=2) + "\n")
        if "attack_recall" in report and not args.no_plots:
            from detector.offline.plots import save_precision_recall_png

            save_precision_recall_png(
                result.scores, result.labels, model.policy, path.with_name(path.stem + "_pr.png")
            )
    print(json.dumps(report, indent=2))
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from detector.offline.evaluation import DEFAULT_SPARKOV, render, run_evaluation

    if args.from_json:
        render(Path(args.from_json), Path(args.out))
        print(f"[evaluate] rewrote {args.out} from {args.from_json}")
        return 0
    sparkov = None if args.no_sparkov else Path(args.sparkov or DEFAULT_SPARKOV)
    run_evaluation(
        Path(args.out),
        Path(args.work_dir),
        accounts=args.accounts,
        days=args.days,
        seed=args.seed,
        train_attacks_per_scenario=args.train_attacks,
        test_attacks_per_scenario=args.test_attacks,
        worlds=args.worlds.split(",") if args.worlds else None,
        sparkov=sparkov,
        delay_rate=args.delay_rate,
        refuse_rate=args.refuse_rate,
        combine=args.combine,
    )
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from detector.local.demo import run_demo

    return run_demo(
        Settings.from_env(), duration=args.duration, rate=args.rate, accounts=args.accounts
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="detector", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("kafka", help="run a local single-node Kafka (KRaft) from Maven jars")
    p.add_argument("action", choices=("start", "stop", "status"))
    p.set_defaults(func=cmd_kafka)

    p = sub.add_parser("topics", help="create the worker's topics (explicit partitions)")
    p.add_argument("--bootstrap-servers")
    p.set_defaults(func=cmd_topics)

    p = sub.add_parser("worker", help="run the Faust worker")
    p.add_argument("--bootstrap-servers")
    p.set_defaults(func=cmd_worker)

    p = sub.add_parser("review", help="the analysts' review queue of held withdrawals (web page)")
    p.add_argument("--bootstrap-servers")
    p.add_argument(
        "--hash-user",
        metavar="NAME",
        help="print a DETECTOR_REVIEW_USERS_FILE line for NAME (password from the prompt or "
        "stdin) and exit",
    )
    p.set_defaults(func=cmd_review)

    p = sub.add_parser("simulate", help="synthetic withdrawals with labelled attacks")
    p.add_argument("--out", help="write JSONL here (else stream to Kafka)")
    p.add_argument("--accounts", type=int, default=500)
    p.add_argument("--days", type=float, default=14.0)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--attacks-per-scenario", type=int, default=8)
    p.add_argument("--amount-scale", type=float, default=1.0, help="every amount x this")
    p.add_argument("--activity-scale", type=float, default=1.0, help="every withdrawal rate x this")
    p.add_argument("--labels-out", help="also write the attacks' fraud reports (labels JSONL)")
    p.add_argument("--bootstrap-servers")
    p.add_argument("--topic")
    p.add_argument("--rate", type=float, help="events per second (default: as fast as possible)")
    p.add_argument("--duration", type=float, help="stop after this many seconds")
    p.set_defaults(func=cmd_simulate)

    p = sub.add_parser("train", help="fit and calibrate a model on a JSONL history")
    p.add_argument("--events", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--warmup", help="history JSONL before --events: builds state, is not fitted")
    p.add_argument("--fit-from", help="RFC 3339: earlier withdrawals only build state")
    p.add_argument("--delay-rate", type=float, default=DEFAULT_DELAY_RATE)
    p.add_argument("--refuse-rate", type=float, default=DEFAULT_REFUSE_RATE)
    p.add_argument("--trees", type=int, default=DEFAULT_TREES, help="number of trees")
    p.add_argument(
        "--max-samples",
        type=int,
        default=None,
        help="rows per tree subsample, every family (default: per family, "
        + ", ".join(f"{k} {v}" for k, v in FAMILY_MAX_SAMPLES.items())
        + ")",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-plots", action="store_true")
    p.add_argument("--sign-key", help="sign the artifact (Ed25519 private key PEM or HMAC secret)")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser(
        "models", help="model artifacts and versions: keygen, sign, verify, add, list, promote..."
    )
    msub = p.add_subparsers(dest="action", required=True)
    q = msub.add_parser("add", help="verify an artifact and copy it into the model store")
    q.add_argument("dir")
    q = msub.add_parser("list", help="versions in the store, with the active/shadow ones marked")
    for action, help_ in (
        ("promote", "make VERSION the active model of every worker (no restart)"),
        ("shadow", "score with VERSION in the shadow on every worker ('off' to stop)"),
    ):
        q = msub.add_parser(action, help=help_)
        q.add_argument("version")
        q.add_argument("--by", default=getpass.getuser(), help="who (recorded)")
    q = msub.add_parser("rollback", help="make the previous active model active again")
    q.add_argument("--by", default=getpass.getuser(), help="who (recorded)")
    q = msub.add_parser("keygen", help="a new Ed25519 key pair for signing artifacts")
    q.add_argument("--private", required=True, help="private key file to write (mode 0600)")
    q.add_argument("--public", required=True, help="public key file to write")
    q = msub.add_parser("sign", help="sign an artifact directory")
    q.add_argument("dir")
    q.add_argument("--key", required=True, help="Ed25519 private key PEM or HMAC secret file")
    q = msub.add_parser("verify", help="verify an artifact (and its signature with --key)")
    q.add_argument("dir")
    q.add_argument("--key", help="Ed25519 public key PEM or HMAC secret file")
    p.set_defaults(func=cmd_models)

    p = sub.add_parser("backfill", help="build the workers' state from history (warm start)")
    p.add_argument("--events", required=True, help="history JSONL (any order)")
    p.add_argument(
        "--model", help="the model the workers will serve (its scales; default: model dir)"
    )
    p.add_argument("--bootstrap-servers")
    p.set_defaults(func=cmd_backfill)

    p = sub.add_parser("shadow-report", help="the shadow model against the active one")
    p.add_argument("--since", help="RFC 3339 start (default: everything on the topics)")
    p.add_argument("--show", type=int, default=10, help="disagreements to print")
    p.add_argument("--json", help="also write the full comparison here")
    p.add_argument("--bootstrap-servers")
    p.set_defaults(func=cmd_shadow_report)

    p = sub.add_parser("replay", help="the worker's decisions over a JSONL file, no Kafka")
    p.add_argument("--events", required=True)
    p.add_argument("--model", required=True)
    p.add_argument("--warmup", help="history JSONL: builds state, is not scored")
    p.add_argument("--score-from", help="RFC 3339: earlier withdrawals only build state")
    p.add_argument(
        "--labels", help="labels JSONL: each applied at its reported_at (feedback backtest)"
    )
    p.add_argument("--out")
    p.add_argument("--report")
    p.add_argument("--no-plots", action="store_true")
    p.add_argument(
        "--jobs",
        type=int,
        choices=(1, 2),
        help="processes: 2 runs the account stage in a second one (default: 2 when two CPUs "
        "are free and the input has 16,384+ events, else 1); the verdicts are the same",
    )
    p.set_defaults(func=cmd_replay)

    p = sub.add_parser(
        "evaluate",
        help="regenerate docs/evaluation.md: simulator, shifted worlds, Sparkov; baselines",
    )
    p.add_argument("--out", default="docs/evaluation.md")
    p.add_argument("--work-dir", default=".detector/evaluation", help="simulations, models")
    p.add_argument("--accounts", type=int, default=1000, help="simulated accounts")
    p.add_argument(
        "--days", type=float, default=21.0, help="days of simulated history, and of test"
    )
    p.add_argument("--seed", type=int, default=1, help="simulator seed (every world)")
    p.add_argument("--train-attacks", type=int, default=2, help="per scenario, in the history")
    p.add_argument(
        "--test-attacks", type=int, help="per scenario, in the test (default: 24, fewer if small)"
    )
    p.add_argument(
        "--worlds",
        help="comma-separated simulated worlds (default all: base, amount_x0.01, amount_x100, "
        "activity_x0.2, activity_x5; base always runs)",
    )
    p.add_argument(
        "--sparkov", help="the Sparkov benchmark directory (default ../shared/benchmarks/sparkov)"
    )
    p.add_argument("--no-sparkov", action="store_true", help="skip the external benchmark")
    p.add_argument("--delay-rate", type=float, default=DEFAULT_DELAY_RATE)
    p.add_argument("--refuse-rate", type=float, default=DEFAULT_REFUSE_RATE)
    p.add_argument(
        "--combine",
        choices=COMBINE_METHODS,
        default="evidence",
        help="how the families' scores combine (an alternative to measure against the default)",
    )
    p.add_argument("--from-json", help="only rewrite the markdown from this JSON of an earlier run")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("demo", help="end to end on a local Kafka: worker + traffic + summary")
    p.add_argument("--duration", type=float, default=40.0, help="seconds of traffic")
    p.add_argument("--rate", type=float, default=1000.0, help="withdrawals per second")
    p.add_argument("--accounts", type=int, default=400)
    p.set_defaults(func=cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        return int(args.func(args))
    except DetectorError as exc:
        print(f"detector {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"detector {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
