"""deploy/docker, deploy/compose, deploy/k8s: static checks of the files shipped for users.

CI has no Docker engine, no Compose plugin, no cluster and no kubeconform, so nothing here
builds, starts or applies anything: these tests are the validation. They parse every YAML
file, check the structure each tool relies on (depends_on conditions, probes, kustomization
resources, Dockerfile instructions), and hold the files to the code:

* every ``DETECTOR_*`` / ``KAFKA_BOOTSTRAP_SERVERS`` name must be a field of
  :class:`detector.config.Settings`, and every environment must pass ``Settings.from_env``;
* every command a container runs, and every ``detector ...`` line of the deploy READMEs,
  must parse with the real CLI;
* every file or directory a setting names must lie on a volume the container mounts (a
  secret for credentials, a writable volume for the data dir, the model store read-only in
  the workers), and every Secret the manifests use must be documented for the user to create;
* probes must hit paths the worker or the review queue really serves, and the README's list
  of what the worker's port serves must be what Faust and the detector register;
* every file the Dockerfile copies or compose mounts must exist.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fnmatch
import http.server
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, cast

import pytest
import yaml
from prometheus_client import CollectorRegistry

from detector.cli import build_parser
from detector.config import ENV_PREFIX, Settings
from detector.stream.health import Health, http_response

REPO_ROOT = Path(__file__).resolve().parents[2]
DEPLOY = REPO_ROOT / "deploy"
COMPOSE_DIR = DEPLOY / "compose"
COMPOSE_FILE = COMPOSE_DIR / "compose.yaml"
COMPOSE_GITIGNORE = COMPOSE_DIR / ".gitignore"
K8S_DIR = DEPLOY / "k8s"
K8S_EXAMPLES_DIR = K8S_DIR / "examples"
KUSTOMIZATION = K8S_DIR / "kustomization.yaml"
K8S_README = K8S_DIR / "README.md"
DEPLOY_README = DEPLOY / "README.md"
DOCKERFILE = DEPLOY / "docker" / "Dockerfile"
DOCKERIGNORE = REPO_ROOT / ".dockerignore"
PROMETHEUS_DIR = DEPLOY / "prometheus"
PROMETHEUS_K8S = PROMETHEUS_DIR / "prometheus-kubernetes.yml"
DEFAULT_MODEL = REPO_ROOT / "models" / "default"

BOOTSTRAP_ENV = "KAFKA_BOOTSTRAP_SERVERS"
SETTINGS_ENV = frozenset(f.metadata["env"] for f in dataclasses.fields(Settings))
DETECTOR_IMAGE = "withdrawal-detector"  # compose image / k8s image name (before the tag)
NAMESPACE = "withdrawal-detector"
COMPOSE_CONDITIONS = {"service_started", "service_healthy", "service_completed_successfully"}
# The alert rules match these job names (deploy/prometheus/rules).
WORKER_JOB, REVIEW_JOB = "detector", "detector-review"
# Pod labels of each role (the selectors of Services, PDB and NetworkPolicies).
APP_LABEL = {"app.kubernetes.io/name": NAMESPACE}
WORKER_LABELS = {**APP_LABEL, "app.kubernetes.io/component": "worker"}
REVIEW_LABELS = {**APP_LABEL, "app.kubernetes.io/component": "review"}
# A DETECTOR_* word anywhere in a deploy file (comments included): not preceded by a name char.
_DETECTOR_WORD = re.compile(rf"(?<![A-Za-z0-9_]){ENV_PREFIX}[A-Z0-9_]+")
# Settings whose values must agree between every container of one deployment: the same
# cluster, credentials, topic names and partition counts.
_SHARED_PREFIXES = ("kafka_security_", "kafka_sasl_", "kafka_ssl_", "topic_")
SHARED_FIELDS = tuple(
    f.name
    for f in dataclasses.fields(Settings)
    if f.name.startswith(_SHARED_PREFIXES)
    or f.name in {"bootstrap_servers", "app_id", "partitions", "replication_factor"}
)

K8S_MANIFESTS = sorted(p for p in K8S_DIR.glob("*.y*ml") if p != KUSTOMIZATION)
K8S_EXAMPLES = sorted(K8S_EXAMPLES_DIR.glob("*.y*ml"))
YAML_FILES = sorted(
    [
        *COMPOSE_DIR.glob("*.y*ml"),
        *K8S_DIR.glob("*.y*ml"),
        *K8S_EXAMPLES,
        PROMETHEUS_K8S,
    ]
)
READMES = [DEPLOY_README, K8S_README]
# Files written for deployment whose every DETECTOR_* mention must be a real setting.
TEXT_FILES = sorted(
    {
        DOCKERFILE,
        DEPLOY_README,
        PROMETHEUS_K8S,
        *(p for p in COMPOSE_DIR.rglob("*") if p.is_file()),
        *(p for p in K8S_DIR.rglob("*") if p.is_file()),
    }
)


def rel(path: Path) -> str:
    return str(path.relative_to(REPO_ROOT))


def load_all(path: Path) -> list[Any]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]


def load_one(path: Path) -> dict[str, Any]:
    docs = load_all(path)
    assert len(docs) == 1 and isinstance(docs[0], dict), f"{rel(path)}: expected one mapping"
    return cast(dict[str, Any], docs[0])


def checked_name(name: str) -> bool:
    """The names this project owns: they must be Settings fields."""
    return name.startswith(ENV_PREFIX) or name == BOOTSTRAP_ENV


def unknown_settings(names: Iterable[str]) -> list[str]:
    return sorted(n for n in names if checked_name(n) and n not in SETTINGS_ENV)


def settings_from(env: Mapping[str, Any]) -> Settings:
    """Settings as a container with ``env`` would build them (values must convert)."""
    return Settings.from_env({k: str(v) for k, v in env.items() if checked_name(k)})


def shared(settings: Settings) -> dict[str, Any]:
    return {name: getattr(settings, name) for name in SHARED_FIELDS}


def parse_cli(argv: list[str]) -> str:
    """The subcommand ``detector <argv>`` runs; fails the test if the CLI rejects argv."""
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # argparse prints the reason on stderr
        pytest.fail(f"`detector {shlex.join(argv)}` is rejected by the CLI (exit {exc.code})")
    return str(args.command)


def is_under(path: PurePosixPath, directory: PurePosixPath) -> bool:
    return path == directory or directory in path.parents


# ---------------------------------------------------------------------------------------------
# What the detector's processes need on disk, by command: checked against compose's and the
# manifests' mounts.


@dataclass(frozen=True)
class Need:
    """A path that setting ``env`` names and the container must be able to use."""

    env: str
    path: PurePosixPath
    kind: str  # "secret": a credential file; "writable"; "read-only"; "readable"


def _kafka_needs(settings: Settings) -> list[Need]:
    needs = []
    if settings.kafka_uses_sasl:
        needs.append(
            Need(
                "DETECTOR_KAFKA_SASL_PASSWORD_FILE",
                PurePosixPath(settings.kafka_sasl_password_file),
                "secret",
            )
        )
    if settings.kafka_uses_ssl:
        for env, value in (
            ("DETECTOR_KAFKA_SSL_CAFILE", settings.kafka_ssl_cafile),
            ("DETECTOR_KAFKA_SSL_CERTFILE", settings.kafka_ssl_certfile),
            ("DETECTOR_KAFKA_SSL_KEYFILE", settings.kafka_ssl_keyfile),
        ):
            if value:
                needs.append(Need(env, PurePosixPath(value), "secret"))
    return needs


def needs_of(argv: list[str], settings: Settings) -> list[Need]:
    """What ``detector <argv>`` reads and writes on disk under ``settings``."""
    command = parse_cli(argv)
    needs = _kafka_needs(settings)
    verify_key = (
        [Need("DETECTOR_MODEL_VERIFY_KEY", PurePosixPath(settings.model_verify_key), "secret")]
        if settings.model_verify_key
        else []
    )
    model_dir = Need("DETECTOR_MODEL_DIR", PurePosixPath(settings.model_dir), "readable")
    if command == "worker":
        needs += [
            Need("DETECTOR_DATA_DIR", PurePosixPath(settings.data_dir), "writable"),
            model_dir,
            # Written by `detector models add` only: a worker must not be able to alter it.
            Need("DETECTOR_MODEL_STORE", PurePosixPath(settings.model_store), "read-only"),
            *verify_key,
        ]
    elif command == "models":
        writes = argv[1] == "add"
        needs += [
            model_dir,  # what a rollback past every promoted version returns to
            Need(
                "DETECTOR_MODEL_STORE",
                PurePosixPath(settings.model_store),
                "writable" if writes else "readable",
            ),
            *verify_key,
        ]
    elif command == "review" and "--hash-user" not in argv:
        needs.append(
            Need("DETECTOR_REVIEW_USERS_FILE", PurePosixPath(settings.review_users_file), "secret")
        )
    return needs


@dataclass(frozen=True)
class Mount:
    target: PurePosixPath
    kind: str  # "secret", "volume" (a writable data volume), "tmp", "config"
    read_only: bool
    source: str  # the volume / secret / claim name


def unmet(needs: Iterable[Need], mounts: Iterable[Mount], image_paths: Iterable[str]) -> list[str]:
    """The needs that no mount (or, for readable paths, the image itself) satisfies."""
    problems = []
    mounts = list(mounts)
    baked = [PurePosixPath(p) for p in image_paths]
    for need in needs:
        if not need.path.is_absolute():
            problems.append(f"{need.env}={need.path} is relative: give the absolute path")
            continue
        covering = [m for m in mounts if is_under(need.path, m.target)]
        mount = max(covering, key=lambda m: len(m.target.parts), default=None)  # innermost
        if mount is None:
            if need.kind == "readable" and any(is_under(need.path, b) for b in baked):
                continue
            problems.append(f"{need.env}={need.path} is on no volume the container mounts")
        elif need.kind == "secret" and mount.kind != "secret":
            problems.append(f"{need.env}={need.path}: a credential must come from a secret")
        elif need.kind == "writable" and (mount.read_only or mount.kind != "volume"):
            problems.append(f"{need.env}={need.path}: must be on a writable volume")
        elif need.kind == "read-only" and not mount.read_only:
            problems.append(f"{need.env}={need.path}: must be mounted read-only here")
        elif need.kind in ("readable", "read-only") and mount.kind == "tmp":
            problems.append(f"{need.env}={need.path} is on a scratch volume")
    return problems


def test_needs_and_mounts_checker() -> None:
    settings = Settings(
        kafka_security_protocol="SASL_SSL",
        kafka_sasl_username="u",
        kafka_sasl_password_file="/etc/k/password",
        kafka_ssl_cafile="/etc/k/ca.crt",
        data_dir=Path("/data"),
        model_dir=Path("/app/models/default"),
        model_store=Path("/models/store"),
    )
    needs = needs_of(["worker"], settings)
    assert {n.env for n in needs} == {
        "DETECTOR_KAFKA_SASL_PASSWORD_FILE",
        "DETECTOR_KAFKA_SSL_CAFILE",
        "DETECTOR_DATA_DIR",
        "DETECTOR_MODEL_DIR",
        "DETECTOR_MODEL_STORE",
    }
    good = [
        Mount(PurePosixPath("/etc/k"), "secret", True, "kafka"),
        Mount(PurePosixPath("/data"), "volume", False, "data"),
        Mount(PurePosixPath("/models"), "volume", True, "models"),
    ]
    assert unmet(needs, good, ["/app/models"]) == []
    assert len(unmet(needs, good, [])) == 1  # the baked-in model dir is not in the image
    bad = [
        Mount(PurePosixPath("/etc"), "volume", False, "etc"),
        Mount(PurePosixPath("/data"), "volume", True, "data"),
        Mount(PurePosixPath("/models"), "volume", False, "models"),
    ]
    assert len(unmet(needs, bad, ["/app/models"])) == 4
    plain = Settings(review_users_file="/run/secrets/users")
    assert needs_of(["topics"], plain) == []
    assert [n.env for n in needs_of(["review"], plain)] == ["DETECTOR_REVIEW_USERS_FILE"]
    assert needs_of(["review", "--hash-user", "alice"], plain) == []
    store = [n for n in needs_of(["models", "add", "x"], plain) if n.env.endswith("STORE")]
    assert store[0].kind == "writable"


# ---------------------------------------------------------------------------------------------
# All files


def test_deploy_directories_hold_yaml() -> None:
    assert COMPOSE_FILE in YAML_FILES
    assert KUSTOMIZATION in YAML_FILES
    assert len(K8S_MANIFESTS) >= 9
    assert K8S_EXAMPLES, "deploy/k8s/examples holds the model admin pod"


@pytest.mark.parametrize("path", YAML_FILES, ids=rel)
def test_yaml_parses_to_mappings(path: Path) -> None:
    docs = load_all(path)
    assert docs, f"{rel(path)} is empty"
    for doc in docs:
        assert isinstance(doc, dict), f"{rel(path)}: a document is not a mapping: {doc!r}"


@pytest.mark.parametrize("path", TEXT_FILES, ids=rel)
def test_every_detector_variable_mentioned_is_a_setting(path: Path) -> None:
    names = set(_DETECTOR_WORD.findall(path.read_text()))
    assert not unknown_settings(names), (
        f"{rel(path)} mentions {unknown_settings(names)}, not in Settings "
        f"(valid: {sorted(SETTINGS_ENV)})"
    )


def test_settings_names_checker() -> None:
    assert BOOTSTRAP_ENV in SETTINGS_ENV
    assert {"DETECTOR_PARTITIONS", "DETECTOR_WEB_HOST", "DETECTOR_DATA_DIR"} <= SETTINGS_ENV
    assert unknown_settings(["DETECTOR_PARTITION", "KAFKA_HEAP_OPTS", "DETECTOR_WEB_PORT"]) == [
        "DETECTOR_PARTITION"
    ]
    assert _DETECTOR_WORD.findall("WITHDRAWAL_DETECTOR_TAG $DETECTOR_X") == ["DETECTOR_X"]
    assert "topic_labels" in SHARED_FIELDS and "kafka_sasl_password_file" in SHARED_FIELDS
    assert "web_port" not in SHARED_FIELDS and "kafka_port" not in SHARED_FIELDS


# ---------------------------------------------------------------------------------------------
# The READMEs' command lines

_FENCE = re.compile(r"^```[a-z]*\n(.*?)^```", re.MULTILINE | re.DOTALL)
# `detector ARGS` as a command: at the start, after whitespace or `-- `, or as .../bin/detector
# (not `withdrawal-detector`, `detector-models-admin`, ...).
_DETECTOR_COMMAND = re.compile(r"(?:^|(?<=\s)|(?<=bin/))detector\s+([a-z].*)$")
# `docker compose ... run --rm SERVICE ARGS`: ARGS go to the image's `detector` entrypoint.
_COMPOSE_RUN = re.compile(
    r"\bdocker compose\b.*?\brun\s+--rm\s+(?P<service>[\w-]+)\s+(?P<args>.*)$"
)
_SHELL_END = re.compile(r"\s(?:>>?|\||&&|;|#)(?:\s|$).*$|\s\\$")


def _argv(text: str) -> list[str]:
    return shlex.split(_SHELL_END.sub("", text.strip()))


def readme_commands(path: Path) -> tuple[list[list[str]], list[tuple[str, list[str]]]]:
    """``detector`` argument lists and ``(service, args)`` of compose runs, from every fenced
    code block of ``path``."""
    commands, runs = [], []
    for block in _FENCE.findall(path.read_text()):
        for line in block.splitlines():
            run = _COMPOSE_RUN.search(line)
            if run:
                runs.append((run["service"], _argv(run["args"])))
                continue
            found = _DETECTOR_COMMAND.search(line)
            if found:
                commands.append(_argv(found.group(1)))
    return commands, runs


def test_readme_command_extraction() -> None:
    assert _DETECTOR_COMMAND.search("kubectl -n withdrawal-detector get pods") is None
    assert _DETECTOR_COMMAND.search("exec detector-models-admin -- ln -s a b") is None
    found = _DETECTOR_COMMAND.search("kubectl exec pod -- detector models add /upload/x")
    assert found and _argv(found.group(1)) == ["models", "add", "/upload/x"]
    found = _DETECTOR_COMMAND.search(".venv/bin/detector review --hash-user a >> f  # x")
    assert found and _argv(found.group(1)) == ["review", "--hash-user", "a"]
    run = _COMPOSE_RUN.search("docker compose -f c.yaml run --rm models models list")
    assert run and (run["service"], _argv(run["args"])) == ("models", ["models", "list"])


@pytest.mark.parametrize("path", READMES, ids=rel)
def test_readme_command_lines_parse(path: Path, services: dict[str, dict[str, Any]]) -> None:
    """Every `detector ...` line of the deploy READMEs is accepted by the CLI, and every
    `docker compose run --rm SERVICE ARGS` names a detector service and CLI arguments."""
    commands, runs = readme_commands(path)
    assert commands or runs, f"{rel(path)}: no command line found (extraction broken?)"
    for argv in commands:
        parse_cli(argv)
    for service, argv in runs:
        assert service in services, f"{rel(path)}: `run --rm {service}`: no such service"
        assert is_detector(services[service]), f"{rel(path)}: {service} is not the detector"
        parse_cli(argv)
    if path == K8S_README:
        issued = {parse_cli(a) + " " + a[1] for a in commands if a[0] == "models"}
        assert {"models add", "models promote", "models rollback", "models shadow"} <= issued
    if path == DEPLOY_README:
        issued = {a[0] + " " + a[1] for _, a in runs if a[0] == "models"}
        assert {"models add", "models promote", "models rollback", "models shadow"} <= issued


# ---------------------------------------------------------------------------------------------
# What the worker's and the review queue's HTTP ports serve


@pytest.fixture(scope="module")
def worker_routes(tmp_path_factory: pytest.TempPathFactory) -> set[str]:
    """Every path the worker's web server routes: the detector's pages and the Faust
    blueprints it leaves enabled (read from the Faust app the worker builds; nothing starts)."""
    from mode.utils.imports import symbol_by_name

    from detector.model import Model
    from detector.stream.app import create_app

    settings = Settings(data_dir=tmp_path_factory.mktemp("worker-data"))
    app = create_app(settings, model=Model.load(DEFAULT_MODEL)).app
    routes = set(app.web.views)
    for prefix, blueprint in app.web.blueprints._enabled:
        for route in symbol_by_name(blueprint).routes:
            routes.add(prefix + route.uri)
    return routes


@pytest.fixture(scope="module")
def review_routes() -> set[str]:
    """GET paths of the review queue's web application (routes only; nothing is served)."""
    from detector.review.web import create_web_app

    app = create_web_app(cast(Any, None))
    return {r.resource.canonical for r in app.router.routes() if r.method == "GET" and r.resource}


def test_worker_and_review_routes_are_read(
    worker_routes: set[str], review_routes: set[str]
) -> None:
    assert {"/metrics", "/healthz", "/readyz"} <= worker_routes
    assert {"/metrics", "/healthz", "/readyz", "/login", "/"} <= review_routes


def readme_worker_paths() -> set[str]:
    """The first column of deploy/README.md's table of what the worker's port serves."""
    text = DEPLOY_README.read_text()
    section = text.split("## Exposing /metrics", 1)[1].split("\n## ", 1)[0]
    paths: set[str] = set()
    for line in section.splitlines():
        if line.startswith("| `/"):
            paths.update(re.findall(r"`(/[^`]*)`", line.split("|")[1]))
    return paths


def test_readme_lists_exactly_what_the_worker_port_serves(worker_routes: set[str]) -> None:
    """Its advice (only Prometheus may reach the port) rests on that list: it must not drift
    from the routes the worker really has (Faust's /table/ reads per-account state)."""
    documented = readme_worker_paths()
    assert documented == worker_routes, (
        f"deploy/README.md, 'Exposing /metrics': served but not listed "
        f"{sorted(worker_routes - documented)}, listed but not served "
        f"{sorted(documented - worker_routes)}"
    )


# ---------------------------------------------------------------------------------------------
# Docker Compose


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return load_one(COMPOSE_FILE)


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return dict(compose["services"])


def compose_env(service: Mapping[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):  # ["NAME=value", ...]
        return dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {str(k): "" if v is None else str(v) for k, v in env.items()}


def command_of(service: Mapping[str, Any]) -> list[str]:
    command = service.get("command", [])
    return shlex.split(command) if isinstance(command, str) else [str(c) for c in command]


def is_detector(service: Mapping[str, Any]) -> bool:
    return str(service.get("image", "")).startswith(DETECTOR_IMAGE + ":")


def detector_services(services: Mapping[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {name: s for name, s in services.items() if is_detector(s)}


def depends_on(service: Mapping[str, Any]) -> dict[str, str]:
    deps = service.get("depends_on") or {}
    assert isinstance(deps, dict), "use depends_on's long form, with a condition"
    return {name: spec.get("condition", "service_started") for name, spec in deps.items()}


def has_healthcheck(service: Mapping[str, Any]) -> bool:
    check = service.get("healthcheck")
    if check is not None:
        return not check.get("disable", False) and bool(check.get("test"))
    return is_detector(service)  # the image's HEALTHCHECK


@dataclass(frozen=True)
class PublishedPort:
    host_ip: str
    host: int | None
    container: int


def parse_port(spec: str | int | Mapping[str, Any]) -> PublishedPort:
    if isinstance(spec, Mapping):  # long syntax
        return PublishedPort(
            str(spec.get("host_ip", "")),
            int(spec["published"]) if "published" in spec else None,
            int(spec["target"]),
        )
    parts = str(spec).split("/", 1)[0].rsplit(":", 2)
    if len(parts) == 1:
        return PublishedPort("", None, int(parts[0]))
    if len(parts) == 2:
        return PublishedPort("", int(parts[0]), int(parts[1]))
    return PublishedPort(parts[0], int(parts[1]), int(parts[2]))


def mounts(service: Mapping[str, Any]) -> list[tuple[str, str, bool]]:
    """(source, target, read_only) of each volume entry (short or long syntax)."""
    out = []
    for entry in service.get("volumes", []):
        if isinstance(entry, Mapping):
            out.append(
                (str(entry.get("source", "")), str(entry["target"]), bool(entry.get("read_only")))
            )
        else:
            source, target, *options = str(entry).split(":")
            out.append((source, target, "ro" in ",".join(options).split(",")))
    return out


def service_secrets(service: Mapping[str, Any]) -> dict[str, PurePosixPath]:
    """secret name -> where compose mounts it in the container."""
    out = {}
    for entry in service.get("secrets", []):
        if isinstance(entry, Mapping):
            name = str(entry["source"])
            target = str(entry.get("target", name))
        else:
            name = target = str(entry)
        out[name] = PurePosixPath(target if target.startswith("/") else f"/run/secrets/{target}")
    return out


def compose_mounts(service: Mapping[str, Any]) -> list[Mount]:
    out = [
        Mount(PurePosixPath(target), "volume", read_only, source)
        for source, target, read_only in mounts(service)
    ]
    for name, target in service_secrets(service).items():
        out.append(Mount(target, "secret", True, name))
    return out


def host_path(source: str) -> Path | None:
    """The host path of a bind mount (relative to compose.yaml), None for a named volume."""
    if source.startswith((".", "/")):
        return (COMPOSE_DIR / source).resolve()
    return None


def test_compose_services(services: dict[str, dict[str, Any]]) -> None:
    assert {
        "kafka",
        "topics",
        "worker",
        "review",
        "models",
        "prometheus",
        "grafana",
        "simulator",
    } <= set(services)
    for name in ("topics", "worker", "review", "models", "simulator"):
        assert is_detector(services[name]), f"{name} must run the detector image"


def test_compose_builds_the_detector_image_from_the_repo_root(
    services: dict[str, dict[str, Any]],
) -> None:
    for name, service in detector_services(services).items():
        build = service["build"]
        context = (COMPOSE_DIR / build["context"]).resolve()
        assert context == REPO_ROOT, f"{name}: build context must be the repo root"
        assert (context / build["dockerfile"]).resolve() == DOCKERFILE


def test_compose_env_names_are_settings(services: dict[str, dict[str, Any]]) -> None:
    for name, service in services.items():
        env = compose_env(service)
        assert not unknown_settings(env), f"{name}: {unknown_settings(env)} not in Settings"
        if is_detector(service):
            settings = settings_from(env)  # values convert and validate
            assert settings.web_host == "0.0.0.0", f"{name}: must bind the web server to 0.0.0.0"


def test_compose_detector_services_agree(services: dict[str, dict[str, Any]]) -> None:
    """topics creates what the workers consume, the review queue reads and writes, the model
    commands control and the simulator produces to: one cluster, one set of topic names."""
    detectors = {n: settings_from(compose_env(s)) for n, s in detector_services(services).items()}
    reference = shared(detectors["worker"])
    for name, settings in detectors.items():
        differing = {k for k, v in shared(settings).items() if reference[k] != v}
        assert not differing, f"{name}'s {sorted(differing)} differ from worker's"
    assert detectors["worker"].bootstrap_list == ["kafka:9092"]
    kafka_env = compose_env(services["kafka"])
    assert "PLAINTEXT://kafka:9092" in kafka_env["KAFKA_ADVERTISED_LISTENERS"].split(",")
    assert detectors["worker"].kafka_security_protocol == "PLAINTEXT"  # the bundled broker's


def test_compose_kafka_is_single_node_kraft(services: dict[str, dict[str, Any]]) -> None:
    kafka = services["kafka"]
    assert kafka["image"] == "apache/kafka:3.9.1"
    env = compose_env(kafka)
    assert set(env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    assert env["KAFKA_CONTROLLER_QUORUM_VOTERS"] == f"{env['KAFKA_NODE_ID']}@kafka:9093"
    assert env["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false"  # the detector creates topics
    for key in ("KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR", "KAFKA_TRANSACTION_STATE_LOG_MIN_ISR"):
        assert env[key] == "1", f"{key} must be 1 on a single broker"
    assert has_healthcheck(kafka)


def test_compose_depends_on_conditions(services: dict[str, dict[str, Any]]) -> None:
    assert depends_on(services["topics"]) == {"kafka": "service_healthy"}
    for name in ("worker", "review", "models", "simulator"):
        assert depends_on(services[name]) == {"topics": "service_completed_successfully"}, name
    assert depends_on(services["grafana"]) == {"prometheus": "service_healthy"}
    for name, service in services.items():
        for target, condition in depends_on(service).items():
            assert target in services, f"{name} depends on unknown service {target}"
            assert condition in COMPOSE_CONDITIONS, f"{name} -> {target}: {condition}"
            if condition == "service_healthy":
                assert has_healthcheck(services[target]), f"{target} has no healthcheck"
            if condition == "service_completed_successfully":
                # A restarting one-shot never "completes".
                assert services[target].get("restart", "no") == "no", target
                assert "profiles" not in services[target], f"{target} must always run"
            # A service that always runs cannot wait for one that runs only in a profile.
            if "profiles" not in service:
                assert "profiles" not in services[target], f"{name} -> {target} (a profile)"


def test_compose_commands_are_cli_subcommands(services: dict[str, dict[str, Any]]) -> None:
    expected = {
        "topics": "topics",
        "worker": "worker",
        "review": "review",
        "models": "models",
        "simulator": "simulate",
    }
    for name, service in detector_services(services).items():
        assert parse_cli(command_of(service)) == expected[name], name
    simulate = command_of(services["simulator"])
    assert simulate == ["simulate", "--rate", "200", "--bootstrap-servers", "kafka:9092"]
    assert services["simulator"]["profiles"] == ["simulator"]
    assert services["review"]["profiles"] == ["review"]
    assert services["models"]["profiles"] == ["admin"]
    for one_shot in ("topics", "simulator", "models"):
        assert services[one_shot]["healthcheck"] == {"disable": True}, one_shot
        assert services[one_shot].get("restart", "no") == "no", one_shot


def test_compose_workers(services: dict[str, dict[str, Any]]) -> None:
    worker = services["worker"]
    settings = settings_from(compose_env(worker))
    replicas = worker["deploy"]["replicas"]
    assert replicas == 2
    assert replicas <= settings.partitions
    assert settings.store == "rocksdb"
    # Replicas share one environment: a static id would be the same for all of them, and
    # Kafka fences a member whose group.instance.id another one takes.
    assert settings.group_instance_id == "", "replicas cannot share DETECTOR_GROUP_INSTANCE_ID"
    # A named volume at the data dir would be shared by the replicas' RocksDB stores.
    data_dir = PurePosixPath(settings.data_dir)
    for _, target, _ in mounts(worker):
        assert not is_under(data_dir, PurePosixPath(target)), "replicas would share the data dir"
    assert "container_name" not in worker  # replicas need generated names
    assert "ports" not in worker, "replicas cannot share a host port, and it serves /table/"
    assert str(settings.web_port) in [str(p) for p in worker["expose"]]
    check = " ".join(worker["healthcheck"]["test"])
    assert f"127.0.0.1:{settings.web_port}/healthz" in check
    assert worker.get("stop_grace_period")


def test_compose_review_queue(
    compose: dict[str, Any], services: dict[str, dict[str, Any]], review_routes: set[str]
) -> None:
    review = services["review"]
    settings = settings_from(compose_env(review))
    assert settings.review_host == "0.0.0.0"
    (port,) = [parse_port(p) for p in review["ports"]]
    assert port.container == settings.review_port
    # POSTs must come from DETECTOR_REVIEW_PUBLIC_URL: the address compose publishes.
    assert settings.review_public_url == f"http://{port.host_ip}:{port.host}"
    check = " ".join(review["healthcheck"]["test"])
    assert f"127.0.0.1:{settings.review_port}/healthz" in check
    assert "/healthz" in review_routes
    users = PurePosixPath(settings.review_users_file)
    assert users in service_secrets(review).values(), "the users file must be a secret"


def test_compose_mounts_what_each_command_needs(services: dict[str, dict[str, Any]]) -> None:
    """Credential files come from secrets, the model store is read-only in the workers and
    writable where `detector models add` runs (the `models` service)."""
    image_paths = [dockerfile_env()["DETECTOR_MODEL_DIR"]]
    for name, service in detector_services(services).items():
        settings = settings_from({**dockerfile_env(), **compose_env(service)})
        argv = command_of(service)
        if name == "models":
            argv = ["models", "add", "/import/default"]  # what the README runs with it
        problems = unmet(needs_of(argv, settings), compose_mounts(service), image_paths)
        if name != "worker":  # the worker's data dir is the container's own (no volume)
            assert not problems, f"{name}: {problems}"
        else:
            assert [p for p in problems if "DETECTOR_DATA_DIR" not in p] == [], problems


def test_compose_volumes_exist(compose: dict[str, Any], services: dict[str, Any]) -> None:
    named = set(compose.get("volumes") or {})
    used = set()
    for name, service in services.items():
        for source, target, _ in mounts(service):
            path = host_path(source)
            if path is None:
                assert source in named, f"{name}: volume {source} is not declared"
                used.add(source)
            else:
                assert path.exists(), f"{name}: {source} (-> {target}) does not exist"
                assert path.is_relative_to(REPO_ROOT), f"{name}: {source} leaves the repo"
    assert used == named, f"declared but unused volumes: {sorted(named - used)}"


def test_compose_secrets_are_declared_and_kept_out_of_git(
    compose: dict[str, Any], services: dict[str, Any]
) -> None:
    declared = dict(compose.get("secrets") or {})
    ignored = {
        line.strip()
        for line in COMPOSE_GITIGNORE.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    readme = DEPLOY_README.read_text()
    for name, service in services.items():
        for secret in service_secrets(service):
            assert secret in declared, f"{name}: secret {secret} is not declared"
    for secret, spec in declared.items():
        file = PurePosixPath(spec["file"])
        assert file.parent == PurePosixPath("."), f"{secret}: keep it beside compose.yaml"
        assert file.name in ignored, f"{secret}: {file} must be listed in compose/.gitignore"
        assert f"deploy/compose/{file.name}" in readme, f"{secret}: say how to create {file}"


def mount_target(service: Mapping[str, Any], source: Path) -> PurePosixPath:
    for src, target, _ in mounts(service):
        if host_path(src) == source.resolve():
            return PurePosixPath(target)
    raise AssertionError(f"{rel(source)} is not mounted")


def test_compose_prometheus_scrapes_workers_and_review(
    services: dict[str, dict[str, Any]],
) -> None:
    prometheus = services["prometheus"]
    config_path = COMPOSE_DIR / "prometheus.yml"
    config = load_one(config_path)
    reference = load_one(PROMETHEUS_DIR / "prometheus.yml")
    assert config["global"] == reference["global"]
    assert config["rule_files"] == reference["rule_files"] == ["rules/*.yml"]

    config_target = mount_target(prometheus, config_path)
    assert f"--config.file={config_target}" in prometheus["command"]
    rules_target = mount_target(prometheus, PROMETHEUS_DIR / "rules")
    assert rules_target == config_target.parent / "rules"

    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert set(jobs) == {j["job_name"] for j in reference["scrape_configs"]}
    assert set(jobs) == {WORKER_JOB, REVIEW_JOB}
    ports = {
        "worker": settings_from(compose_env(services["worker"])).web_port,
        "review": settings_from(compose_env(services["review"])).review_port,
    }
    for job_name, service in ((WORKER_JOB, "worker"), (REVIEW_JOB, "review")):
        job = jobs[job_name]
        assert job.get("metrics_path", "/metrics") == "/metrics"
        (dns,) = job["dns_sd_configs"]
        assert dns["names"] == [service], job_name
        assert dns["type"] == "A"
        assert dns["port"] == ports[service], f"{job_name}: scrapes the wrong port"
    assert parse_port(prometheus["ports"][0]).container == 9090


def test_compose_ports(services: dict[str, dict[str, Any]]) -> None:
    published: dict[int, str] = {}
    for name, service in services.items():
        for spec in service.get("ports", []):
            port = parse_port(spec)
            assert port.host is not None, f"{name}: {spec!r} publishes a random host port"
            assert port.host not in published, f"{name} and {published[port.host]}: {port.host}"
            assert port.host_ip == "127.0.0.1", f"{name}: {spec!r} should bind to 127.0.0.1"
            published[port.host] = name
    assert published.get(9090) == "prometheus"
    assert published.get(3000) == "grafana"
    assert published.get(19092) == "kafka"
    assert published.get(6070) == "review"
    assert "worker" not in published.values()
    kafka_env = compose_env(services["kafka"])
    assert "HOST://127.0.0.1:19092" in kafka_env["KAFKA_ADVERTISED_LISTENERS"].split(",")


def test_compose_grafana_provisioning(services: dict[str, dict[str, Any]]) -> None:
    grafana = services["grafana"]
    datasource_path = COMPOSE_DIR / "grafana-datasource.yml"
    (datasource,) = load_one(datasource_path)["datasources"]
    (reference,) = load_one(DEPLOY / "grafana/provisioning/datasources/prometheus.yml")[
        "datasources"
    ]
    for key in ("name", "uid", "type", "access", "isDefault", "jsonData"):
        assert datasource[key] == reference[key], f"data source {key} differs from deploy/grafana"
    assert datasource["url"] == "http://prometheus:9090"
    assert str(mount_target(grafana, datasource_path)).startswith(
        "/etc/grafana/provisioning/datasources/"
    )

    providers = DEPLOY / "grafana/provisioning/dashboards"
    assert mount_target(grafana, providers) == PurePosixPath("/etc/grafana/provisioning/dashboards")
    (provider,) = load_one(providers / "detector.yml")["providers"]
    dashboards_target = mount_target(grafana, DEPLOY / "grafana/dashboards")
    assert PurePosixPath(provider["options"]["path"]) == dashboards_target
    home = compose_env(grafana).get("GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH")
    if home:
        home_path = PurePosixPath(home)
        assert home_path.parent == dashboards_target
        assert (DEPLOY / "grafana/dashboards" / home_path.name).is_file()


def test_topics_command_creates_every_topic_the_services_use() -> None:
    """What deploy/README.md promises of the one-shot `topics` (compose service, k8s Job):
    labels, review-decisions, decisions-shadow and the model control topic included."""
    from detector.review.service import review_topic_specs
    from detector.stream.app import topic_specs

    settings = Settings()
    names = {s.name for s in topic_specs(settings) + review_topic_specs(settings)}
    expected = {
        settings.topic_withdrawals,
        settings.topic_labels,
        settings.topic_decisions,
        settings.topic_dlq,
        settings.topic_decisions_shadow,
        settings.topic_review_decisions,
        settings.topic_model_control,
        settings.topic_by_destination,
    }
    assert expected <= names, sorted(expected - names)
    readme = DEPLOY_README.read_text()
    for name in ("labels", "review-decisions", "decisions-shadow", "<app id>-model-control"):
        assert f"`{name}`" in readme


def promtool_or_fail() -> str:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.fail(
            "promtool not found on PATH: install Debian's prometheus package "
            "(apt-get install -y prometheus), which CI installs; this test does not skip.",
            pytrace=False,
        )
    return promtool


def promtool_check_config(config: Path, workdir: Path) -> subprocess.CompletedProcess[str]:
    """`promtool check config` on ``config`` laid out as in the container: the repo's rules
    in rules/ beside it."""
    workdir.mkdir(parents=True, exist_ok=True)
    shutil.copy(config, workdir / "prometheus.yml")
    shutil.copytree(PROMETHEUS_DIR / "rules", workdir / "rules")
    return subprocess.run(
        [promtool_or_fail(), "check", "config", str(workdir / "prometheus.yml")],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def assert_promtool_ok(result: subprocess.CompletedProcess[str]) -> None:
    assert result.returncode == 0, result.stdout + result.stderr
    rule_files = sorted((PROMETHEUS_DIR / "rules").glob("*.yml"))
    assert f"SUCCESS: {len(rule_files)} rule files found" in result.stdout


@pytest.mark.prometheus
def test_compose_prometheus_config_passes_promtool(tmp_path: Path) -> None:
    assert_promtool_ok(promtool_check_config(COMPOSE_DIR / "prometheus.yml", tmp_path))


@pytest.mark.prometheus
def test_kubernetes_prometheus_config_passes_promtool(tmp_path: Path) -> None:
    """Debian's promtool is built without Kubernetes discovery ("field kubernetes_sd_configs
    not found"): there the rest of the file (rules, relabelling) is checked with static
    targets in the discovery's place."""
    result = promtool_check_config(PROMETHEUS_K8S, tmp_path / "as-is")
    if "field kubernetes_sd_configs not found" in result.stdout + result.stderr:
        config = load_one(PROMETHEUS_K8S)
        for job in config["scrape_configs"]:
            del job["kubernetes_sd_configs"]
            job["static_configs"] = [{"targets": ["10.0.0.1:6066"]}]
        swapped = tmp_path / "prometheus-kubernetes.yml"
        swapped.write_text(yaml.safe_dump(config))
        result = promtool_check_config(swapped, tmp_path / "swapped")
    assert_promtool_ok(result)


# ---------------------------------------------------------------------------------------------
# Kubernetes

Manifests = dict[tuple[str, str], dict[str, Any]]
WORKLOAD_KINDS = {"Pod", "Deployment", "StatefulSet", "Job", "DaemonSet", "CronJob"}


def index(paths: Iterable[Path]) -> Manifests:
    """(kind, metadata.name) -> object, for every document of every file."""
    out: Manifests = {}
    for path in paths:
        for doc in load_all(path):
            key = (doc["kind"], doc["metadata"]["name"])
            assert key not in out, f"{rel(path)}: duplicate {key}"
            out[key] = doc
    return out


@pytest.fixture(scope="module")
def manifests() -> Manifests:
    """What `kubectl apply -k deploy/k8s` applies."""
    return index(K8S_MANIFESTS)


@pytest.fixture(scope="module")
def examples() -> Manifests:
    """deploy/k8s/examples: applied by hand, next to the kustomized objects."""
    return index(K8S_EXAMPLES)


@pytest.fixture(scope="module")
def config_env(manifests: Manifests) -> dict[str, str]:
    return {k: str(v) for k, v in manifests[("ConfigMap", "detector-config")]["data"].items()}


@pytest.fixture(scope="module")
def statefulset(manifests: Manifests) -> dict[str, Any]:
    return manifests[("StatefulSet", "detector-worker")]


@pytest.fixture(scope="module")
def review_deployment(manifests: Manifests) -> dict[str, Any]:
    return manifests[("Deployment", "detector-review")]


def workloads(*indexes: Manifests) -> list[dict[str, Any]]:
    return [doc for idx in indexes for doc in idx.values() if doc["kind"] in WORKLOAD_KINDS]


def pod_template(doc: Mapping[str, Any]) -> dict[str, Any]:
    """The pod (metadata + spec) a workload runs."""
    if doc["kind"] == "Pod":
        return {"metadata": doc["metadata"], "spec": doc["spec"]}
    return cast(dict[str, Any], doc["spec"]["template"])


def pod_spec(doc: Mapping[str, Any]) -> dict[str, Any]:
    return cast(dict[str, Any], pod_template(doc)["spec"])


def pod_containers(doc: Mapping[str, Any]) -> list[dict[str, Any]]:
    spec = pod_spec(doc)
    return [*spec.get("initContainers", []), *spec["containers"]]


def only_container(doc: Mapping[str, Any]) -> dict[str, Any]:
    (container,) = pod_containers(doc)
    return container


def label(doc: Mapping[str, Any]) -> str:
    return f"{doc['kind']}/{doc['metadata']['name']}"


def configmaps_of(*indexes: Manifests) -> dict[str, dict[str, str]]:
    return {
        name: {k: str(v) for k, v in doc.get("data", {}).items()}
        for idx in indexes
        for (kind, name), doc in idx.items()
        if kind == "ConfigMap"
    }


def container_env(
    container: Mapping[str, Any], configmaps: Mapping[str, Mapping[str, str]]
) -> dict[str, str]:
    """The environment the container gets from envFrom ConfigMaps and env (a valueFrom is
    shown as ``<fieldRef:PATH>`` / ``<secretKeyRef:NAME/KEY>``: a stand-in string)."""
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        assert "configMapRef" in source, f"envFrom {source}: only ConfigMaps carry settings"
        name = source["configMapRef"]["name"]
        assert name in configmaps, f"envFrom references unknown ConfigMap {name}"
        env.update(configmaps[name])
    for item in container.get("env", []):
        if "valueFrom" in item:
            ((kind, ref),) = item["valueFrom"].items()
            where = ref.get("fieldPath") or f"{ref.get('name')}/{ref.get('key')}"
            env[item["name"]] = f"<{kind}:{where}>"
        else:
            env[item["name"]] = str(item.get("value", ""))
    return env


def container_argv(doc: Mapping[str, Any], container: Mapping[str, Any]) -> list[str]:
    """The `detector` arguments a container runs; for the admin pod (which sleeps and has the
    model commands exec'ed into it) the one that needs the most: `models add`."""
    if "command" in container:
        assert doc["kind"] == "Pod" and doc in K8S_EXAMPLE_DOCS, (
            f"{label(doc)}: `command` replaces the detector entrypoint"
        )
        assert container["command"][0] == "sleep", container["command"]
        return ["models", "add", "/upload/artifact"]
    return [str(a) for a in container["args"]]


K8S_EXAMPLE_DOCS = [doc for path in K8S_EXAMPLES for doc in load_all(path)]


def volumes_of(doc: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Pod volumes by name, the StatefulSet's claim templates included (as claims)."""
    volumes = {v["name"]: v for v in pod_spec(doc).get("volumes", [])}
    claims = doc["spec"].get("volumeClaimTemplates", []) if doc["kind"] == "StatefulSet" else []
    for claim in claims:
        name = claim["metadata"]["name"]
        assert name not in volumes, f"{label(doc)}: {name} is both a volume and a claim template"
        volumes[name] = {"name": name, "persistentVolumeClaim": {"claimName": f"<{name}>"}}
    return volumes


def k8s_mounts(doc: Mapping[str, Any], container: Mapping[str, Any]) -> list[Mount]:
    volumes = volumes_of(doc)
    out = []
    for mount in container.get("volumeMounts", []):
        volume = volumes[mount["name"]]
        read_only = bool(mount.get("readOnly"))
        if "secret" in volume:
            kind, read_only, source = "secret", True, volume["secret"]["secretName"]
        elif "configMap" in volume:
            kind, read_only, source = "config", True, volume["configMap"]["name"]
        elif "emptyDir" in volume:
            kind, source = "tmp", mount["name"]
        else:
            claim = volume["persistentVolumeClaim"]
            kind, source = "volume", claim["claimName"]
            read_only = read_only or bool(claim.get("readOnly"))
        out.append(Mount(PurePosixPath(mount["mountPath"]), kind, read_only, source))
    return out


def test_k8s_manifests_have_identity() -> None:
    for path in [*K8S_MANIFESTS, *K8S_EXAMPLES]:
        for doc in load_all(path):
            assert doc.get("apiVersion"), f"{rel(path)}: no apiVersion"
            assert doc.get("kind"), f"{rel(path)}: no kind"
            assert doc.get("metadata", {}).get("name"), f"{rel(path)}: no metadata.name"
            # The namespace comes from kustomization.yaml (examples: `kubectl -n`).
            assert "namespace" not in doc["metadata"], f"{rel(path)}: hard-coded namespace"


def test_kustomization_lists_exactly_the_manifests() -> None:
    kustomization = load_one(KUSTOMIZATION)
    assert kustomization["apiVersion"] == "kustomize.config.k8s.io/v1beta1"
    assert kustomization["kind"] == "Kustomization"
    resources = kustomization["resources"]
    assert len(resources) == len(set(resources)), "a resource is listed twice"
    for resource in resources:
        assert (K8S_DIR / resource).is_file(), f"kustomization.yaml lists missing {resource}"
    assert set(resources) == {p.name for p in K8S_MANIFESTS}, "a manifest is not listed"
    assert kustomization["namespace"] == NAMESPACE
    assert [i["name"] for i in kustomization["images"]] == [DETECTOR_IMAGE]


def test_kustomize_renders() -> None:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl not installed: kustomize rendering not checked")
    result = subprocess.run(
        [kubectl, "kustomize", str(K8S_DIR)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    rendered = [d for d in yaml.safe_load_all(result.stdout) if d]
    assert sorted(d["kind"] for d in rendered) == sorted(
        doc["kind"] for path in K8S_MANIFESTS for doc in load_all(path)
    )
    for doc in rendered:
        if doc["kind"] != "Namespace":
            assert doc["metadata"]["namespace"] == NAMESPACE, doc["kind"]
        for container in pod_containers(doc) if doc["kind"] in WORKLOAD_KINDS else []:
            assert container["image"].startswith(DETECTOR_IMAGE), container["image"]


def test_k8s_configmap_is_valid_settings(config_env: dict[str, str]) -> None:
    assert not unknown_settings(config_env), unknown_settings(config_env)
    settings = settings_from(config_env)
    assert settings.web_host == "0.0.0.0"
    assert config_env[BOOTSTRAP_ENV]
    assert settings.store == "rocksdb", "workers keep their tables on their volume"
    assert settings.standby_replicas >= 1
    assert settings.kafka_uses_ssl and settings.kafka_uses_sasl, "production: SASL_SSL"
    assert settings.model_verify_key, "production: only signed models load"
    # Per pod, never shared: two workers with one id fence each other.
    assert "DETECTOR_GROUP_INSTANCE_ID" not in config_env


def test_k8s_container_env_names_are_settings(manifests: Manifests, examples: Manifests) -> None:
    configmaps = configmaps_of(manifests)
    assert {doc["kind"] for doc in workloads(manifests)} == {"StatefulSet", "Deployment", "Job"}
    assert {doc["kind"] for doc in workloads(examples)} == {"Pod", "Job"}
    for doc in workloads(manifests, examples):
        for container in pod_containers(doc):
            env = container_env(container, configmaps)
            assert not unknown_settings(env), f"{label(doc)}: {unknown_settings(env)}"
            settings_from(env)
            assert container["image"].startswith(DETECTOR_IMAGE + ":"), label(doc)


def test_k8s_workloads_agree_on_cluster_and_topics(
    manifests: Manifests, examples: Manifests, statefulset: dict[str, Any]
) -> None:
    configmaps = configmaps_of(manifests)
    reference = shared(settings_from(container_env(only_container(statefulset), configmaps)))
    for doc in workloads(manifests, examples):
        for container in pod_containers(doc):
            settings = settings_from(container_env(container, configmaps))
            differing = {k for k, v in shared(settings).items() if reference[k] != v}
            assert not differing, f"{label(doc)}: {sorted(differing)} differ from the workers'"


def test_k8s_container_commands_are_cli_subcommands(
    manifests: Manifests, examples: Manifests
) -> None:
    expected = {
        ("StatefulSet", "detector-worker"): "worker",
        ("Deployment", "detector-review"): "review",
        ("Job", "detector-topics"): "topics",
        ("Job", "detector-models-rollback"): "models",
        ("Pod", "detector-models-admin"): "models",
    }
    docs = {**manifests, **examples}
    assert {k for k, d in docs.items() if d["kind"] in WORKLOAD_KINDS} == set(expected)
    for key, command in expected.items():
        doc = docs[key]
        for container in pod_containers(doc):
            assert parse_cli(container_argv(doc, container)) == command, label(doc)
    # The admin pod only sleeps: its commands are the README's `kubectl exec`s.
    readme = K8S_README.read_text()
    assert "exec detector-models-admin -- detector models add" in readme


def test_k8s_worker_statefulset(
    manifests: Manifests, statefulset: dict[str, Any], config_env: dict[str, str]
) -> None:
    spec = statefulset["spec"]
    settings = settings_from(config_env)
    service = manifests[("Service", spec["serviceName"])]
    assert service["spec"]["clusterIP"] == "None", "a StatefulSet's serviceName is headless"
    assert service["spec"].get("publishNotReadyAddresses") is True
    assert spec["replicas"] == 2
    assert spec["replicas"] <= settings.partitions, "replicas beyond the partitions sit idle"
    assert spec["replicas"] > settings.standby_replicas, "standbys need another worker"
    assert spec["podManagementPolicy"] == "Parallel"
    assert spec["updateStrategy"]["type"] == "RollingUpdate"
    template = spec["template"]
    assert spec["selector"]["matchLabels"] == WORKER_LABELS
    assert WORKER_LABELS.items() <= template["metadata"]["labels"].items()

    (claim,) = spec["volumeClaimTemplates"]
    assert claim["spec"]["accessModes"] == ["ReadWriteOnce"]
    assert claim["spec"]["resources"]["requests"]["storage"]
    container = only_container(statefulset)
    data = {m.target: m for m in k8s_mounts(statefulset, container)}[
        PurePosixPath(settings.data_dir)
    ]
    assert data.source == f"<{claim['metadata']['name']}>", "the data dir is the claim template"
    assert not data.read_only

    # Static membership: the pod name, stable across restarts and unique in the set.
    env = {e["name"]: e for e in container.get("env", [])}
    assert env["DETECTOR_GROUP_INSTANCE_ID"]["valueFrom"] == {
        "fieldRef": {"fieldPath": "metadata.name"}
    }
    # Long enough to commit, close RocksDB and finish a rebalance in flight; short enough
    # that a node drain does not stall.
    grace = template["spec"]["terminationGracePeriodSeconds"]
    assert settings.rebalance_timeout_s <= grace <= 120


def probe_target(container: Mapping[str, Any], probe: str) -> tuple[str, int]:
    http = container[probe]["httpGet"]
    port = http["port"]
    if isinstance(port, str):  # a named container port
        (port,) = [p["containerPort"] for p in container["ports"] if p.get("name") == port]
    return http["path"], int(port)


def check_http_pod(
    doc: Mapping[str, Any], port: int, routes: set[str], *, readiness: str = "/readyz"
) -> None:
    """One `http` container port; probes and scrape annotations on it, on real routes."""
    container = only_container(doc)
    assert [(p["name"], p["containerPort"]) for p in container["ports"]] == [("http", port)]
    for probe, path in (
        ("startupProbe", "/healthz"),
        ("livenessProbe", "/healthz"),
        ("readinessProbe", readiness),
    ):
        assert probe_target(container, probe) == (path, port), f"{label(doc)} {probe}"
        assert path in routes, f"{label(doc)} {probe}: {path} is not served"
    startup = container["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 60, "start-up budget"
    annotations = pod_template(doc)["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/port"] == str(port)
    assert annotations["prometheus.io/path"] == "/metrics" and "/metrics" in routes


def test_k8s_worker_probes_and_scrape(
    statefulset: dict[str, Any], config_env: dict[str, str], worker_routes: set[str]
) -> None:
    check_http_pod(statefulset, settings_from(config_env).web_port, worker_routes)
    resources = only_container(statefulset)["resources"]
    for kind in ("requests", "limits"):
        assert {"cpu", "memory"} <= set(resources[kind]), kind


def test_k8s_review_deployment(
    manifests: Manifests, review_deployment: dict[str, Any], review_routes: set[str]
) -> None:
    container = only_container(review_deployment)
    settings = settings_from(container_env(container, configmaps_of(manifests)))
    assert settings.review_host == "0.0.0.0", "the default is unreachable from the ingress"
    assert settings.review_public_url.startswith("https://"), "behind TLS: Secure cookies"
    check_http_pod(review_deployment, settings.review_port, review_routes)
    # Sessions live in the process: one replica (more need sticky sessions).
    assert review_deployment["spec"]["replicas"] == 1
    assert review_deployment["spec"]["selector"]["matchLabels"] == REVIEW_LABELS


def test_k8s_pods_are_hardened(manifests: Manifests, examples: Manifests) -> None:
    user = dockerfile_user_id()
    for doc in workloads(manifests, examples):
        pod = pod_spec(doc)
        context = pod["securityContext"]
        assert context["runAsNonRoot"] is True, label(doc)
        assert context["runAsUser"] == user, f"{label(doc)}: must match the image's USER"
        assert context["seccompProfile"]["type"] == "RuntimeDefault", label(doc)
        assert pod["automountServiceAccountToken"] is False, label(doc)
        volumes = volumes_of(doc)
        if any("secret" in v for v in volumes.values()):
            # Secret files are mode 0440: readable through the pod's group only.
            assert context.get("fsGroup") == user, f"{label(doc)}: fsGroup for the secrets"
            for volume in volumes.values():
                if "secret" in volume:
                    assert volume["secret"]["defaultMode"] == 0o440, label(doc)
        for container in pod_containers(doc):
            security = container["securityContext"]
            assert security["readOnlyRootFilesystem"] is True, label(doc)
            assert security["allowPrivilegeEscalation"] is False, label(doc)
            assert security["capabilities"]["drop"] == ["ALL"], label(doc)
            tmp = {m.target: m for m in k8s_mounts(doc, container)}[PurePosixPath("/tmp")]
            assert tmp.kind == "tmp", f"{label(doc)}: /tmp must be a writable emptyDir"
            assert {"requests", "limits"} <= set(container["resources"]), label(doc)


def test_k8s_volume_mounts_and_volumes_match(manifests: Manifests, examples: Manifests) -> None:
    for doc in workloads(manifests, examples):
        volumes = volumes_of(doc)
        mounted = set()
        for container in pod_containers(doc):
            paths = [m["mountPath"] for m in container.get("volumeMounts", [])]
            assert len(paths) == len(set(paths)), f"{label(doc)}: a path is mounted twice"
            for mount in container.get("volumeMounts", []):
                assert mount["name"] in volumes, f"{label(doc)}: no volume {mount['name']}"
                assert "subPath" not in mount, f"{label(doc)}: subPath mounts miss updates"
                mounted.add(mount["name"])
        assert mounted == set(volumes), f"{label(doc)}: unused {sorted(set(volumes) - mounted)}"


def test_k8s_mounts_what_each_command_needs(manifests: Manifests, examples: Manifests) -> None:
    """Every file and directory a setting names is on the right kind of volume: credentials
    from Secrets, the data dir on the claim, the model store read-only in the workers."""
    configmaps = configmaps_of(manifests)
    for doc in workloads(manifests, examples):
        for container in pod_containers(doc):
            settings = settings_from(container_env(container, configmaps))
            needs = needs_of(container_argv(doc, container), settings)
            problems = unmet(needs, k8s_mounts(doc, container), image_paths=[])
            assert not problems, f"{label(doc)}: {problems}"


def readme_secrets() -> dict[str, str]:
    """Secret name -> its row of k8s/README.md's "Secrets you create" table."""
    section = K8S_README.read_text().split("## Secrets you create", 1)[1].split("\n## ", 1)[0]
    rows = {}
    for line in section.splitlines():
        found = re.match(r"\| `([a-z0-9-]+)` \|", line)
        if found:
            rows[found.group(1)] = line
    return rows


def test_k8s_references_exist_or_are_documented(manifests: Manifests, examples: Manifests) -> None:
    """ConfigMaps and claims a pod uses are applied with it; Secrets are the user's, each
    documented (with the key each setting's file needs) in k8s/README.md."""
    defined = {(kind, name) for kind, name in manifests}
    documented = readme_secrets()
    assert documented, "k8s/README.md has no 'Secrets you create' table"
    configmaps = configmaps_of(manifests)
    used_secrets = set()
    for doc in workloads(manifests, examples):
        for volume in pod_spec(doc).get("volumes", []):
            if "configMap" in volume:
                assert ("ConfigMap", volume["configMap"]["name"]) in defined, label(doc)
            if "persistentVolumeClaim" in volume:
                claim = volume["persistentVolumeClaim"]["claimName"]
                assert ("PersistentVolumeClaim", claim) in defined, f"{label(doc)}: {claim}"
            if "secret" in volume:
                used_secrets.add(volume["secret"]["secretName"])
        for container in pod_containers(doc):
            for item in container.get("env", []):
                ref = item.get("valueFrom", {})
                if "configMapKeyRef" in ref:
                    assert ("ConfigMap", ref["configMapKeyRef"]["name"]) in defined
                if "secretKeyRef" in ref:
                    used_secrets.add(ref["secretKeyRef"]["name"])
            # The key each file setting needs is the one the README tells to create.
            settings = settings_from(container_env(container, configmaps))
            secret_mounts = [m for m in k8s_mounts(doc, container) if m.kind == "secret"]
            for need in needs_of(container_argv(doc, container), settings):
                for mount in secret_mounts:
                    if is_under(need.path, mount.target):
                        key = str(need.path.relative_to(mount.target))
                        row = documented.get(mount.source, "")
                        assert f"`{key}`" in row, f"{mount.source}: key {key} ({need.env})"
    for secret in used_secrets:
        assert ("Secret", secret) in defined or secret in documented, (
            f"Secret {secret} is neither applied nor documented in k8s/README.md"
        )
    assert set(documented) == used_secrets, "the README documents a Secret nothing uses"


def test_k8s_services_and_pdb_select_their_pods(
    manifests: Manifests,
    statefulset: dict[str, Any],
    review_deployment: dict[str, Any],
    config_env: dict[str, str],
) -> None:
    review_port = settings_from(
        container_env(only_container(review_deployment), configmaps_of(manifests))
    ).review_port
    for name, workload, port in (
        ("detector-worker", statefulset, settings_from(config_env).web_port),
        ("detector-review", review_deployment, review_port),
    ):
        labels = pod_template(workload)["metadata"]["labels"]
        service = manifests[("Service", name)]
        assert service["spec"]["selector"].items() <= labels.items(), name
        (service_port,) = service["spec"]["ports"]
        named = {p["name"]: p["containerPort"] for p in only_container(workload)["ports"]}
        assert named.get(service_port["targetPort"], service_port["targetPort"]) == port
        assert service_port["port"] == port, name
        assert service["spec"].get("type", "ClusterIP") == "ClusterIP", f"{name}: not exposed"

    pdb = manifests[("PodDisruptionBudget", "detector-worker")]
    assert pdb["apiVersion"] == "policy/v1"
    labels = pod_template(statefulset)["metadata"]["labels"]
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert pdb["spec"].get("maxUnavailable", 0) < statefulset["spec"]["replicas"]


def selects(selector: Mapping[str, Any], labels: Mapping[str, str]) -> bool:
    assert set(selector) <= {"matchLabels"}, "only matchLabels selectors are understood here"
    return dict(selector.get("matchLabels", {})).items() <= labels.items()


def test_k8s_network_policies(
    manifests: Manifests,
    statefulset: dict[str, Any],
    review_deployment: dict[str, Any],
) -> None:
    """Ingress is denied by default; the workers' port (which serves Faust's /table/ too)
    opens to Prometheus only, the review queue's to the ingress controller and Prometheus."""
    policies = [doc for (kind, _), doc in manifests.items() if kind == "NetworkPolicy"]
    for policy in policies:
        assert policy["apiVersion"] == "networking.k8s.io/v1"
        assert policy["spec"]["policyTypes"] == ["Ingress"]
    deny = [p for p in policies if p["spec"]["podSelector"] == {} and not p["spec"].get("ingress")]
    assert len(deny) == 1, "one default-deny policy for the namespace"

    prometheus = {"app.kubernetes.io/name": "prometheus"}
    for workload, expect_ingress_controller in ((statefulset, False), (review_deployment, True)):
        labels = pod_template(workload)["metadata"]["labels"]
        container_ports = {p["name"]: p["containerPort"] for p in only_container(workload)["ports"]}
        rules = [
            rule
            for p in policies
            if p not in deny and selects(p["spec"]["podSelector"], labels)
            for rule in p["spec"]["ingress"]
        ]
        assert rules, f"{label(workload)}: no policy lets anything in"
        peers = []
        for rule in rules:
            assert rule.get("from"), f"{label(workload)}: a rule open to every source"
            opened = {container_ports.get(p["port"], p["port"]) for p in rule["ports"]}
            assert opened == set(container_ports.values()), f"{label(workload)}: {opened}"
            peers += rule["from"]
        for peer in peers:
            assert peer.get("namespaceSelector"), f"{label(workload)}: {peer} (any namespace?)"
        scrapers = [p for p in peers if p.get("podSelector", {}).get("matchLabels") == prometheus]
        assert scrapers, f"{label(workload)}: Prometheus cannot scrape it"
        others = [p for p in peers if p not in scrapers]
        assert bool(others) == expect_ingress_controller, f"{label(workload)}: {others}"


def test_k8s_model_store_claim(manifests: Manifests, statefulset: dict[str, Any]) -> None:
    claim = manifests[("PersistentVolumeClaim", "detector-models")]
    # Every worker (on any node) reads it, the admin pod writes it.
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"]
    volume = volumes_of(statefulset)["models"]["persistentVolumeClaim"]
    assert volume == {"claimName": "detector-models", "readOnly": True}


def test_k8s_readme_documents_every_file_and_the_partition_cap() -> None:
    text = K8S_README.read_text()
    assert "replicas <= partitions" in text
    assert "DETECTOR_PARTITIONS" in text
    for path in [*K8S_MANIFESTS, *K8S_EXAMPLES]:
        assert f"`{path.relative_to(K8S_DIR)}`" in text, f"k8s/README.md: {rel(path)}"


# ---------------------------------------------------------------------------------------------
# Dockerfile


@dataclass(frozen=True)
class Instruction:
    keyword: str
    args: str
    line: int


def dockerfile_instructions(path: Path = DOCKERFILE) -> list[Instruction]:
    """Instructions with continuation lines joined and comment lines dropped (as Docker does)."""
    out: list[Instruction] = []
    pending: list[str] = []
    start = 0
    for number, raw in enumerate(path.read_text().splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if not pending:
            start = number
        if line.endswith("\\"):
            pending.append(line[:-1].strip())
            continue
        pending.append(line)
        keyword, _, args = " ".join(pending).partition(" ")
        out.append(Instruction(keyword.upper(), args.strip(), start))
        pending = []
    assert not pending, f"{rel(path)} ends inside a continued line"
    return out


def of(keyword: str) -> list[Instruction]:
    return [i for i in dockerfile_instructions() if i.keyword == keyword]


def dockerfile_env() -> dict[str, str]:
    env: dict[str, str] = {}
    for instruction in of("ENV"):
        for item in shlex.split(instruction.args):
            name, _, value = item.partition("=")
            env[name] = value
    return env


def dockerfile_user_id() -> int:
    users = of("USER")
    assert users, "the Dockerfile sets no USER: the image would run as root"
    user = users[-1].args.split(":")[0]
    assert user.isdigit(), "USER must be numeric so Kubernetes' runAsNonRoot can verify it"
    return int(user)


def dockerignored(relpath: str) -> bool:
    """Whether .dockerignore drops ``relpath`` (or a directory above it) from the context."""
    if not DOCKERIGNORE.exists():
        return False
    patterns = [
        line.strip()
        for line in DOCKERIGNORE.read_text().splitlines()
        if line.strip() and not line.strip().startswith("#")
    ]
    parts = PurePosixPath(relpath).parts
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    excluded = False
    for line in patterns:  # Docker's rule: the last matching pattern wins
        glob = line.removeprefix("!").strip("/")
        anywhere = glob.startswith("**/")  # matches at any depth: compare base names
        glob = glob.removeprefix("**/")
        for candidate in candidates:
            name = PurePosixPath(candidate).name if anywhere else candidate
            if fnmatch.fnmatchcase(name, glob):
                excluded = not line.startswith("!")
    return excluded


def test_dockerignore_matcher() -> None:
    assert dockerignored(".venv/bin/python")
    assert dockerignored("detector/__pycache__/x.pyc")
    assert not dockerignored("detector/cli.py")
    assert not dockerignored("models/default/model.json")
    assert not dockerignored("pyproject.toml")


def test_dockerfile_is_multi_stage_python_slim() -> None:
    args = dict(
        i.args.split("=", 1)
        for i in dockerfile_instructions()
        if i.keyword == "ARG" and "=" in i.args
    )
    stages = []
    for instruction in of("FROM"):
        image = re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], instruction.args.split()[0])
        stages.append(image)
    assert len(stages) >= 2, "multi-stage: a builder and a runtime stage"
    for image in stages:
        assert image.startswith("python:3.11-slim"), image
    runs = " ".join(i.args for i in of("RUN"))
    assert "pip install ." in runs


def test_dockerfile_runtime_contract() -> None:
    assert dockerfile_user_id() != 0
    assert of("USER")[-1].args.split(":")[0] not in {"root", "0"}
    (entrypoint,) = of("ENTRYPOINT")
    assert json.loads(entrypoint.args) == ["detector"]
    (cmd,) = of("CMD")
    assert parse_cli(json.loads(cmd.args)) == "worker"

    env = dockerfile_env()
    assert not unknown_settings(env), unknown_settings(env)
    settings = settings_from(env)
    assert settings.web_host == "0.0.0.0"
    exposed = {int(p.split("/")[0]) for i in of("EXPOSE") for p in i.args.split()}
    assert exposed == {settings.web_port, settings.review_port} == {6066, 6070}

    (healthcheck,) = of("HEALTHCHECK")
    options, _, _ = healthcheck.args.partition(" CMD ")
    assert "--start-period=" in options  # start-up (model load, group join) is not a failure
    argv = healthcheck_argv()
    assert argv[0] == "python"
    assert "/healthz" in argv[-1]
    assert "DETECTOR_WEB_PORT" in argv[-1]  # follows the port setting, not a literal 6066


def healthcheck_argv() -> list[str]:
    (healthcheck,) = of("HEALTHCHECK")
    _, cmd, command = healthcheck.args.partition(" CMD ")
    assert cmd, "HEALTHCHECK without CMD"
    argv = json.loads(command)  # exec form: no shell in the way
    assert isinstance(argv, list) and all(isinstance(a, str) for a in argv)
    return argv


@contextlib.contextmanager
def _serving(registry: CollectorRegistry, health: Health) -> Iterator[int]:
    """The worker's /metrics, /healthz, /readyz handler on a stdlib HTTP server (the worker
    serves the same :func:`http_response` from Faust's web server); yields the port."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            status, body, content_type = http_response(self.path, registry, health)
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            """Quiet."""

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield int(server.server_address[1])
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def test_dockerfile_healthcheck_follows_healthz() -> None:
    """Run the HEALTHCHECK command against the real /healthz handler: 200 passes, 503 fails."""
    now = [0.0]
    health = Health(stuck_after_s=1.0, clock=lambda: now[0])
    env = {"PATH": os.environ.get("PATH", ""), "PYTHONDONTWRITEBYTECODE": "1"}
    argv = [sys.executable, *healthcheck_argv()[1:]]
    with _serving(CollectorRegistry(), health) as port:
        env["DETECTOR_WEB_PORT"] = str(port)
        alive = subprocess.run(argv, env=env, capture_output=True, timeout=30, check=False)
        assert alive.returncode == 0, alive.stderr
        # Stuck: partitions assigned, tables recovered, records waiting, no progress.
        health.set_partitions_assigned(True)
        health.set_tables_recovered(True)
        health.set_lag(5)
        now[0] = 10.0
        assert not health.liveness()[0]
        stuck = subprocess.run(argv, env=env, capture_output=True, timeout=30, check=False)
        assert stuck.returncode != 0
        assert b"503" in stuck.stderr
    # Nothing listening (e.g. the worker died): fails too.
    down = subprocess.run(argv, env=env, capture_output=True, timeout=30, check=False)
    assert down.returncode != 0


def test_dockerfile_copies_exist_and_reach_the_context() -> None:
    copies = of("COPY") + of("ADD")
    local = []
    for instruction in copies:
        tokens = shlex.split(instruction.args)
        if any(t.startswith("--from") for t in tokens):
            continue
        sources = [t for t in tokens if not t.startswith("--")][:-1]
        assert sources, f"line {instruction.line}: COPY without a source"
        for source in sources:
            relpath = source.rstrip("/") or "."
            assert (REPO_ROOT / relpath).exists(), f"line {instruction.line}: {source} missing"
            assert not dockerignored(relpath), f"line {instruction.line}: {source} is ignored"
            local.append(relpath)
    assert {"pyproject.toml", "detector", "models"} <= set(local)


def test_dockerfile_model_and_data_dirs(
    config_env: dict[str, str], services: dict[str, dict[str, Any]]
) -> None:
    env = dockerfile_env()
    model_dir = PurePosixPath(env["DETECTOR_MODEL_DIR"])
    (models_copy,) = [i for i in of("COPY") if i.args.split()[-1].rstrip("/") == "/app/models"]
    relative = model_dir.relative_to("/app/models")
    assert (REPO_ROOT / "models" / relative / "model.json").is_file()
    assert "--from=builder" in models_copy.args
    assert dockerfile_user_id() == 10001
    # The data dir and the model store's volume mount point belong to the runtime user, so
    # a new Docker volume mounted there is writable (Docker copies the ownership).
    runs = " ".join(i.args for i in of("RUN"))
    store_volume = PurePosixPath(env["DETECTOR_MODEL_STORE"]).parent
    owned = re.search(r"chown 10001:10001 ([^&]+)", runs)
    assert owned, "the data dir must be writable by the runtime user"
    assert {env["DETECTOR_DATA_DIR"], str(store_volume)} <= set(owned.group(1).split())
    # Kubernetes and compose point at the same places in the image.
    assert config_env["DETECTOR_DATA_DIR"] == env["DETECTOR_DATA_DIR"]
    assert config_env["DETECTOR_MODEL_STORE"] == env["DETECTOR_MODEL_STORE"]
    worker_volumes = {PurePosixPath(t) for _, t, _ in mounts(services["worker"])}
    assert store_volume in worker_volumes, "compose: the model store volume"
    # Kubernetes serves a signed start-up model from the store's volume (the image's is not
    # signed): under the same mount as the store.
    assert PurePosixPath(config_env["DETECTOR_MODEL_DIR"]).parent == store_volume


def test_readme_documents_the_build_and_the_tools() -> None:
    text = (DEPLOY / "README.md").read_text()
    assert "docker build -f deploy/docker/Dockerfile ." in text or (
        "docker build -f deploy/docker/Dockerfile -t" in text
    )
    assert "kubectl apply -k deploy/k8s" in text
    assert "docker compose -f deploy/compose/compose.yaml up" in text
    assert "kubeconform" in text
    assert "tests/deploy/test_deploy_files.py" in text
    assert "tests/deploy/test_deploy_files.py" in K8S_README.read_text()


def readme_file_table_paths() -> list[str]:
    """The paths in the first column of deploy/README.md's table of files (``| path | what |``)."""
    table = DEPLOY_README.read_text().split("| path | what |", 1)[1].split("\n\n", 1)[0]
    paths = []
    for line in table.splitlines()[2:]:  # after the header's separator row
        paths += re.findall(r"`([^`]+)`", line.split("|")[1])
    return paths


def test_readme_file_table_names_existing_paths() -> None:
    paths = readme_file_table_paths()
    assert {"docker/Dockerfile", "compose/compose.yaml", "k8s/"} <= set(paths), paths
    missing = [p for p in paths if not (DEPLOY / p).exists()]
    assert not missing, f"deploy/README.md lists paths that do not exist: {missing}"
