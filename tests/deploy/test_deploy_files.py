"""deploy/docker, deploy/compose, deploy/k8s: static checks of the files shipped for users.

CI has no Docker engine, no Compose plugin, no cluster and no kubeconform, so nothing here
builds, starts or applies anything: these tests are the validation. They parse every YAML
file, check the structure each tool relies on (depends_on conditions, probes, kustomization
resources, Dockerfile instructions), and hold the files to the code: every ``DETECTOR_*`` /
``KAFKA_BOOTSTRAP_SERVERS`` name must be a field of :class:`detector.config.Settings`, every
value must pass ``Settings.from_env``, every command line must parse with the real CLI, and
every file the Dockerfile copies or compose mounts must exist.
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
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

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
K8S_DIR = DEPLOY / "k8s"
KUSTOMIZATION = K8S_DIR / "kustomization.yaml"
DOCKERFILE = DEPLOY / "docker" / "Dockerfile"
DOCKERIGNORE = REPO_ROOT / ".dockerignore"

BOOTSTRAP_ENV = "KAFKA_BOOTSTRAP_SERVERS"
SETTINGS_ENV = frozenset(f.metadata["env"] for f in dataclasses.fields(Settings))
DETECTOR_IMAGE = "withdrawal-detector"  # compose image / k8s image name (before the tag)
COMPOSE_CONDITIONS = {"service_started", "service_healthy", "service_completed_successfully"}
# A DETECTOR_* word anywhere in a deploy file (comments included): not preceded by a name char.
_DETECTOR_WORD = re.compile(rf"(?<![A-Za-z0-9_]){ENV_PREFIX}[A-Z0-9_]+")

YAML_FILES = sorted([*COMPOSE_DIR.glob("*.y*ml"), *K8S_DIR.glob("*.y*ml")])
K8S_MANIFESTS = sorted(p for p in K8S_DIR.glob("*.y*ml") if p != KUSTOMIZATION)
# Files written for deployment whose every DETECTOR_* mention must be a real setting.
TEXT_FILES = sorted(
    [
        DOCKERFILE,
        DEPLOY / "README.md",
        *COMPOSE_DIR.glob("*"),
        *K8S_DIR.glob("*"),
    ]
)


def rel(path: Path) -> str:
    return str(path.relative_to(REPO_ROOT))


def load_all(path: Path) -> list[Any]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]


def load_one(path: Path) -> dict[str, Any]:
    docs = load_all(path)
    assert len(docs) == 1 and isinstance(docs[0], dict), f"{rel(path)}: expected one mapping"
    return docs[0]


def checked_name(name: str) -> bool:
    """The names this project owns: they must be Settings fields."""
    return name.startswith(ENV_PREFIX) or name == BOOTSTRAP_ENV


def unknown_settings(names: Iterator[str] | list[str] | Mapping[str, Any]) -> list[str]:
    return sorted(n for n in names if checked_name(n) and n not in SETTINGS_ENV)


def settings_from(env: Mapping[str, Any]) -> Settings:
    """Settings as a container with ``env`` would build them (values must convert)."""
    return Settings.from_env({k: str(v) for k, v in env.items() if checked_name(k)})


def parse_cli(argv: list[str]) -> str:
    """The subcommand ``detector <argv>`` runs; fails the test if the CLI rejects argv."""
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # argparse prints the reason on stderr
        pytest.fail(f"`detector {shlex.join(argv)}` is rejected by the CLI (exit {exc.code})")
    return str(args.command)


# ---------------------------------------------------------------------------------------------
# All YAML


def test_deploy_directories_hold_yaml() -> None:
    assert COMPOSE_FILE in YAML_FILES
    assert KUSTOMIZATION in YAML_FILES
    assert len(K8S_MANIFESTS) >= 6


@pytest.mark.parametrize("path", YAML_FILES, ids=rel)
def test_yaml_parses_to_mappings(path: Path) -> None:
    docs = load_all(path)
    assert docs, f"{rel(path)} is empty"
    for doc in docs:
        assert isinstance(doc, dict), f"{rel(path)}: a document is not a mapping: {doc!r}"


@pytest.mark.parametrize("path", TEXT_FILES, ids=rel)
def test_every_detector_variable_mentioned_is_a_setting(path: Path) -> None:
    names = set(_DETECTOR_WORD.findall(path.read_text()))
    assert not unknown_settings(list(names)), (
        f"{rel(path)} mentions {unknown_settings(list(names))}, not in Settings "
        f"(valid: {sorted(SETTINGS_ENV)})"
    )


def test_settings_names_checker() -> None:
    assert BOOTSTRAP_ENV in SETTINGS_ENV
    assert {"DETECTOR_PARTITIONS", "DETECTOR_WEB_HOST", "DETECTOR_DATA_DIR"} <= SETTINGS_ENV
    assert unknown_settings(["DETECTOR_PARTITION", "KAFKA_HEAP_OPTS", "DETECTOR_WEB_PORT"]) == [
        "DETECTOR_PARTITION"
    ]
    assert _DETECTOR_WORD.findall("WITHDRAWAL_DETECTOR_TAG $DETECTOR_X") == ["DETECTOR_X"]


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


def mounts(service: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(source, target) of each volume entry (short or long syntax)."""
    out = []
    for entry in service.get("volumes", []):
        if isinstance(entry, Mapping):
            out.append((str(entry.get("source", "")), str(entry["target"])))
        else:
            source, target = str(entry).split(":")[:2]
            out.append((source, target))
    return out


def host_path(source: str) -> Path | None:
    """The host path of a bind mount (relative to compose.yaml), None for a named volume."""
    if source.startswith((".", "/")):
        return (COMPOSE_DIR / source).resolve()
    return None


def test_compose_services(services: dict[str, dict[str, Any]]) -> None:
    assert {"kafka", "topics", "worker", "prometheus", "grafana", "simulator"} <= set(services)
    for name in ("topics", "worker", "simulator"):
        assert is_detector(services[name]), f"{name} must run the detector image"


def test_compose_builds_the_detector_image_from_the_repo_root(
    services: dict[str, dict[str, Any]],
) -> None:
    for name, service in services.items():
        if not is_detector(service):
            continue
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
    """topics creates what the workers consume and the simulator produces to."""
    detectors = {n: settings_from(compose_env(s)) for n, s in services.items() if is_detector(s)}
    reference = detectors["worker"]
    for name, settings in detectors.items():
        assert settings == reference, f"{name}'s settings differ from worker's"
    assert reference.bootstrap_list == ["kafka:9092"]
    kafka_env = compose_env(services["kafka"])
    assert "PLAINTEXT://kafka:9092" in kafka_env["KAFKA_ADVERTISED_LISTENERS"].split(",")


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
    assert depends_on(services["worker"]) == {"topics": "service_completed_successfully"}
    assert depends_on(services["simulator"]) == {"topics": "service_completed_successfully"}
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


def test_compose_one_shots_and_workers(services: dict[str, dict[str, Any]]) -> None:
    assert parse_cli(command_of(services["topics"])) == "topics"
    assert parse_cli(command_of(services["worker"])) == "worker"
    simulate = command_of(services["simulator"])
    assert parse_cli(simulate) == "simulate"
    assert simulate == ["simulate", "--rate", "200", "--bootstrap-servers", "kafka:9092"]
    assert services["simulator"]["profiles"] == ["simulator"]
    for one_shot in ("topics", "simulator"):
        assert services[one_shot]["healthcheck"] == {"disable": True}, one_shot

    worker = services["worker"]
    replicas = worker["deploy"]["replicas"]
    assert replicas == 2
    assert replicas <= settings_from(compose_env(worker)).partitions
    assert "container_name" not in worker  # replicas need generated names
    assert "ports" not in worker, "replicas cannot share a host port: use expose"
    web_port = settings_from(compose_env(worker)).web_port
    assert str(web_port) in [str(p) for p in worker["expose"]]
    check = " ".join(worker["healthcheck"]["test"])
    assert f"127.0.0.1:{web_port}/healthz" in check
    assert worker.get("stop_grace_period")


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
    kafka_env = compose_env(services["kafka"])
    assert "HOST://127.0.0.1:19092" in kafka_env["KAFKA_ADVERTISED_LISTENERS"].split(",")


def test_compose_volumes_exist(compose: dict[str, Any], services: dict[str, Any]) -> None:
    named = set(compose.get("volumes") or {})
    for name, service in services.items():
        for source, target in mounts(service):
            path = host_path(source)
            if path is None:
                assert source in named, f"{name}: volume {source} is not declared"
            else:
                assert path.exists(), f"{name}: {source} (-> {target}) does not exist"
                assert path.is_relative_to(REPO_ROOT), f"{name}: {source} leaves the repo"


def mount_target(service: Mapping[str, Any], source: Path) -> PurePosixPath:
    for src, target in mounts(service):
        if host_path(src) == source.resolve():
            return PurePosixPath(target)
    raise AssertionError(f"{rel(source)} is not mounted")


def test_compose_prometheus_scrapes_the_workers(services: dict[str, dict[str, Any]]) -> None:
    prometheus = services["prometheus"]
    config_path = COMPOSE_DIR / "prometheus.yml"
    config = load_one(config_path)
    reference = load_one(DEPLOY / "prometheus" / "prometheus.yml")
    assert config["global"] == reference["global"]
    assert config["rule_files"] == reference["rule_files"] == ["rules/*.yml"]

    config_target = mount_target(prometheus, config_path)
    assert f"--config.file={config_target}" in prometheus["command"]
    rules_target = mount_target(prometheus, DEPLOY / "prometheus" / "rules")
    assert rules_target == config_target.parent / "rules"

    (job,) = config["scrape_configs"]
    assert job["job_name"] == "detector"  # the alert rules match up{job="detector"}
    assert job.get("metrics_path", "/metrics") == "/metrics"
    (dns,) = job["dns_sd_configs"]
    worker_port = settings_from(compose_env(services["worker"])).web_port
    assert dns["names"] == ["worker"]
    assert dns["type"] == "A"
    assert dns["port"] == worker_port
    assert parse_port(prometheus["ports"][0]).container == 9090


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


@pytest.mark.prometheus
def test_compose_prometheus_config_passes_promtool(tmp_path: Path) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.fail(
            "promtool not found on PATH: install Debian's prometheus package "
            "(apt-get install -y prometheus), which CI installs; this test does not skip.",
            pytrace=False,
        )
    # The container's layout: the config with the repo's rules in rules/ beside it.
    shutil.copy(COMPOSE_DIR / "prometheus.yml", tmp_path / "prometheus.yml")
    shutil.copytree(DEPLOY / "prometheus" / "rules", tmp_path / "rules")
    result = subprocess.run(
        [promtool, "check", "config", str(tmp_path / "prometheus.yml")],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    rule_files = sorted((DEPLOY / "prometheus" / "rules").glob("*.yml"))
    assert f"SUCCESS: {len(rule_files)} rule files found" in result.stdout


# ---------------------------------------------------------------------------------------------
# Kubernetes


@pytest.fixture(scope="module")
def manifests() -> dict[tuple[str, str], dict[str, Any]]:
    """(kind, metadata.name) -> manifest, for every document of every k8s file."""
    out: dict[tuple[str, str], dict[str, Any]] = {}
    for path in K8S_MANIFESTS:
        for doc in load_all(path):
            key = (doc["kind"], doc["metadata"]["name"])
            assert key not in out, f"{rel(path)}: duplicate {key}"
            out[key] = doc
    return out


@pytest.fixture(scope="module")
def config_env(manifests: dict[tuple[str, str], dict[str, Any]]) -> dict[str, str]:
    return {k: str(v) for k, v in manifests[("ConfigMap", "detector-config")]["data"].items()}


@pytest.fixture(scope="module")
def deployment(manifests: dict[tuple[str, str], dict[str, Any]]) -> dict[str, Any]:
    return manifests[("Deployment", "detector-worker")]


def pod_containers(manifest: Mapping[str, Any]) -> list[dict[str, Any]]:
    spec = manifest["spec"]["template"]["spec"]
    return [*spec.get("initContainers", []), *spec["containers"]]


def container_env(
    container: Mapping[str, Any], configmaps: Mapping[str, Mapping[str, str]]
) -> dict[str, str]:
    """The environment the container gets from envFrom ConfigMaps and env (values only)."""
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        name = source["configMapRef"]["name"]
        assert name in configmaps, f"envFrom references unknown ConfigMap {name}"
        env.update(configmaps[name])
    for item in container.get("env", []):
        env[item["name"]] = str(item.get("value", ""))
    return env


def test_k8s_manifests_have_identity() -> None:
    for path in K8S_MANIFESTS:
        for doc in load_all(path):
            assert doc.get("apiVersion"), f"{rel(path)}: no apiVersion"
            assert doc.get("kind"), f"{rel(path)}: no kind"
            assert doc.get("metadata", {}).get("name"), f"{rel(path)}: no metadata.name"


def test_kustomization_lists_exactly_the_manifests() -> None:
    kustomization = load_one(KUSTOMIZATION)
    assert kustomization["apiVersion"] == "kustomize.config.k8s.io/v1beta1"
    assert kustomization["kind"] == "Kustomization"
    resources = kustomization["resources"]
    assert len(resources) == len(set(resources)), "a resource is listed twice"
    assert set(resources) == {p.name for p in K8S_MANIFESTS}
    assert kustomization["namespace"] == "withdrawal-detector"
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
            assert doc["metadata"]["namespace"] == "withdrawal-detector", doc["kind"]
        for container in pod_containers(doc) if "template" in doc.get("spec", {}) else []:
            assert container["image"].startswith(DETECTOR_IMAGE), container["image"]


def test_k8s_configmap_is_valid_settings(config_env: dict[str, str]) -> None:
    assert not unknown_settings(config_env), unknown_settings(config_env)
    settings = settings_from(config_env)
    assert settings.web_host == "0.0.0.0"
    assert config_env[BOOTSTRAP_ENV]


def test_k8s_container_env_names_are_settings(
    manifests: dict[tuple[str, str], dict[str, Any]],
) -> None:
    configmaps = {
        name: doc["data"] for (kind, name), doc in manifests.items() if kind == "ConfigMap"
    }
    workloads = [doc for doc in manifests.values() if "template" in doc.get("spec", {})]
    assert {doc["kind"] for doc in workloads} == {"Deployment", "Job"}
    for doc in workloads:
        for container in pod_containers(doc):
            env = container_env(container, configmaps)
            assert not unknown_settings(env), f"{doc['kind']}: {unknown_settings(env)}"
            settings_from(env)
            assert container["image"].startswith(DETECTOR_IMAGE + ":")


def test_k8s_deployment_replicas_within_partitions(
    deployment: dict[str, Any], config_env: dict[str, str]
) -> None:
    partitions = settings_from(config_env).partitions
    replicas = deployment["spec"]["replicas"]
    assert replicas == 2
    assert replicas <= partitions, "replicas beyond the partition count sit idle"
    surge = deployment["spec"]["strategy"]["rollingUpdate"]["maxSurge"]
    assert replicas + int(surge) <= partitions, "the surge pod would get no partition"


def probe_target(container: Mapping[str, Any], probe: str) -> tuple[str, int]:
    http = container[probe]["httpGet"]
    port = http["port"]
    if isinstance(port, str):  # a named container port
        (port,) = [p["containerPort"] for p in container["ports"] if p.get("name") == port]
    return http["path"], int(port)


def test_k8s_deployment_probes(deployment: dict[str, Any], config_env: dict[str, str]) -> None:
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    web_port = settings_from(config_env).web_port
    assert [p["containerPort"] for p in container["ports"]] == [web_port]
    assert probe_target(container, "livenessProbe") == ("/healthz", web_port)
    assert probe_target(container, "readinessProbe") == ("/readyz", web_port)
    assert probe_target(container, "startupProbe") == ("/healthz", web_port)
    startup = container["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 60


def test_k8s_deployment_pod(deployment: dict[str, Any], config_env: dict[str, str]) -> None:
    assert parse_cli(pod_containers(deployment)[0]["args"]) == "worker"
    template = deployment["spec"]["template"]
    pod = template["spec"]
    assert pod["terminationGracePeriodSeconds"] == 30
    selector = deployment["spec"]["selector"]["matchLabels"]
    assert selector.items() <= template["metadata"]["labels"].items()

    settings = settings_from(config_env)
    annotations = template["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/port"] == str(settings.web_port)
    assert annotations["prometheus.io/path"] == "/metrics"

    (container,) = pod["containers"]
    resources = container["resources"]
    for kind in ("requests", "limits"):
        assert {"cpu", "memory"} <= set(resources[kind]), kind
    assert resources["limits"]["memory"] == "1Gi"
    assert str(resources["limits"]["cpu"]) == "1"


def test_k8s_pods_are_hardened(
    manifests: dict[tuple[str, str], dict[str, Any]], config_env: dict[str, str]
) -> None:
    user = dockerfile_user_id()
    data_dir = str(settings_from(config_env).data_dir)
    for doc in manifests.values():
        if "template" not in doc.get("spec", {}):
            continue
        pod = doc["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True, doc["kind"]
        assert pod["securityContext"]["runAsUser"] == user, "must match the image's USER"
        volumes = {v["name"]: v for v in pod.get("volumes", [])}
        for container in pod["containers"]:
            context = container["securityContext"]
            assert context["readOnlyRootFilesystem"] is True, doc["kind"]
            assert context["allowPrivilegeEscalation"] is False, doc["kind"]
            assert context["capabilities"]["drop"] == ["ALL"], doc["kind"]
            writable = {m["mountPath"]: volumes[m["name"]] for m in container["volumeMounts"]}
            assert "emptyDir" in writable["/tmp"], f"{doc['kind']}: /tmp must be writable"
            if doc["kind"] == "Deployment":
                assert "emptyDir" in writable[data_dir], "DETECTOR_DATA_DIR must be an emptyDir"


def test_k8s_topics_job(manifests: dict[tuple[str, str], dict[str, Any]]) -> None:
    job = manifests[("Job", "detector-topics")]
    (container,) = pod_containers(job)
    assert parse_cli(container["args"]) == "topics"
    assert job["spec"]["template"]["spec"]["restartPolicy"] in {"OnFailure", "Never"}
    assert [s["configMapRef"]["name"] for s in container["envFrom"]] == ["detector-config"]


def test_k8s_service_and_pdb_select_the_workers(
    manifests: dict[tuple[str, str], dict[str, Any]],
    deployment: dict[str, Any],
    config_env: dict[str, str],
) -> None:
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    service = manifests[("Service", "detector-worker")]
    assert service["spec"]["selector"].items() <= labels.items()
    (port,) = service["spec"]["ports"]
    web_port = settings_from(config_env).web_port
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    named = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert named.get(port["targetPort"], port["targetPort"]) == web_port
    assert port["port"] == web_port

    pdb = manifests[("PodDisruptionBudget", "detector-worker")]
    assert pdb["apiVersion"] == "policy/v1"
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert pdb["spec"].get("maxUnavailable", 0) < deployment["spec"]["replicas"]


def test_k8s_readme_states_the_partition_cap() -> None:
    text = (K8S_DIR / "README.md").read_text()
    assert "replicas <= partitions" in text
    assert "DETECTOR_PARTITIONS" in text


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
    assert exposed == {settings.web_port} == {6066}

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


def test_dockerfile_model_and_data_dirs(config_env: dict[str, str]) -> None:
    env = dockerfile_env()
    model_dir = PurePosixPath(env["DETECTOR_MODEL_DIR"])
    (models_copy,) = [i for i in of("COPY") if i.args.split()[-1].rstrip("/") == "/app/models"]
    relative = model_dir.relative_to("/app/models")
    assert (REPO_ROOT / "models" / relative / "model.json").is_file()
    runs = " ".join(i.args for i in of("RUN"))
    assert f"chown 10001:10001 {env['DETECTOR_DATA_DIR']}" in runs, "data dir must be writable"
    assert dockerfile_user_id() == 10001
    assert "--from=builder" in models_copy.args
    # The Kubernetes ConfigMap points at the same places in the image.
    assert config_env["DETECTOR_MODEL_DIR"] == env["DETECTOR_MODEL_DIR"]
    assert config_env["DETECTOR_DATA_DIR"] == env["DETECTOR_DATA_DIR"]


def test_readme_documents_the_build_and_the_tools() -> None:
    text = (DEPLOY / "README.md").read_text()
    assert "docker build -f deploy/docker/Dockerfile ." in text or (
        "docker build -f deploy/docker/Dockerfile -t" in text
    )
    assert "kubectl apply -k deploy/k8s" in text
    assert "docker compose -f deploy/compose/compose.yaml up" in text
    assert "kubeconform" in text
    assert "tests/test_deploy_files.py" in text
