"""deploy/prometheus and deploy/grafana: promtool checks and unit tests, dashboard consistency.

Needs Debian's ``prometheus`` package for ``promtool`` (CI installs it); without it these
tests fail rather than skip, so a missing tool cannot hide broken rules.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import promql
import pytest
import yaml
from prometheus_client import CollectorRegistry

from detector.stream.metrics import DetectorMetrics, declare_all, render

pytestmark = pytest.mark.prometheus

PROMTOOL_TIMEOUT_S = 300  # the verdict-spike tests replay 25 h of samples (~10 s)
SEVERITIES = {"critical", "warning"}
REQUIRED_ANNOTATIONS = {"summary", "description", "runbook"}
RUNBOOK = promql.REPO_ROOT / "docs" / "runbook.md"
ALWAYS_ALLOWED_METRICS = {"up"}  # synthesised by Prometheus for every target


@pytest.fixture(scope="module")
def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.fail(
            "promtool not found on PATH: install Debian's prometheus package "
            "(apt-get install -y prometheus), which CI installs; these tests do not skip.",
            pytrace=False,
        )
    return path


def run(args: Sequence[str], *, stdin: bytes | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        list(args),
        input=stdin.decode() if stdin is not None else None,
        capture_output=True,
        text=True,
        timeout=PROMTOOL_TIMEOUT_S,
        check=False,
        cwd=promql.REPO_ROOT,
    )


def assert_ok(result: subprocess.CompletedProcess[str]) -> None:
    assert result.returncode == 0, (
        f"{' '.join(result.args)} exited {result.returncode}\n{result.stdout}\n{result.stderr}"
    )


def rule_test_files() -> list[Path]:
    return sorted(promql.RULE_TESTS_DIR.glob("*.test.yml"))


@pytest.fixture(scope="module")
def declared() -> dict[str, set[str]]:
    return promql.declared_metrics(declare_all(CollectorRegistry()))


def all_declared_names(declared: dict[str, set[str]]) -> set[str]:
    return set().union(*declared.values())


# promtool -------------------------------------------------------------------------------


def test_check_config(promtool: str) -> None:
    result = run([promtool, "check", "config", str(promql.PROMETHEUS_CONFIG)])
    assert_ok(result)
    assert f"SUCCESS: {len(promql.rule_files())} rule files found" in result.stdout


def test_check_rules(promtool: str) -> None:
    files = promql.rule_files()
    assert {f.name for f in files} >= {"detector-alerts.yml", "detector-recording.yml"}
    assert_ok(run([promtool, "check", "rules", *map(str, files)]))


@pytest.mark.parametrize("test_file", rule_test_files(), ids=lambda p: p.name)
def test_rule_unit_tests(promtool: str, test_file: Path) -> None:
    assert_ok(run([promtool, "test", "rules", str(test_file)]))


def test_exposition_passes_promtool_lint(promtool: str) -> None:
    metrics = DetectorMetrics(CollectorRegistry(), dlq_reasons=["invalid_json"])
    metrics.observe_verdict("allow", 0.4, 0.01)
    metrics.set_model("v1")
    metrics.set_lag("withdrawals", 0, 3)
    metrics.observe_send_error("decisions")
    payload, _ = render(metrics.registry)
    assert_ok(run([promtool, "check", "metrics"], stdin=payload))


def test_dashboard_queries_are_valid_promql(promtool: str, tmp_path: Path) -> None:
    """Every panel query, with Grafana's variables substituted, parses as PromQL."""
    queries = promql.panel_queries()
    rules = [{"record": f"dashboard:query:{i}", "expr": q.promql()} for i, q in enumerate(queries)]
    path = tmp_path / "dashboard-queries.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    assert_ok(run([promtool, "check", "rules", str(path)]))


# Alert rules ----------------------------------------------------------------------------


def alerts() -> list[promql.RuleQuery]:
    return [q for q in promql.rule_queries() if q.kind == "alert"]


def test_the_required_alerts_exist() -> None:
    assert {a.name for a in alerts()} >= {
        "DetectorWorkerDown",
        "DetectorConsumerLagGrowing",
        "DetectorNoVerdicts",
        "DetectorDecisionLatencyHigh",
        "DetectorDlqSpike",
        "DetectorRefuseRateSpike",
        "DetectorDelayRateSpike",
        "DetectorCommitsStuck",
    }


@pytest.mark.parametrize("alert", alerts(), ids=lambda a: a.name)
def test_alert_has_severity_annotations_and_runbook_section(alert: promql.RuleQuery) -> None:
    assert alert.rule.get("labels", {}).get("severity") in SEVERITIES
    annotations = alert.rule.get("annotations", {})
    assert set(annotations) >= REQUIRED_ANNOTATIONS, alert.name
    anchor = alert.name.lower()
    assert annotations["runbook"] == f"docs/runbook.md#{anchor}"
    headings = re.findall(r"^## (\S+)\s*$", RUNBOOK.read_text(encoding="utf-8"), re.MULTILINE)
    assert alert.name in headings, f"docs/runbook.md has no '## {alert.name}' section"


def test_every_alert_has_a_firing_and_a_quiet_test_case() -> None:
    fires: set[str] = set()
    quiet: set[str] = set()
    for path in rule_test_files():
        document: dict[str, Any] = yaml.safe_load(path.read_text(encoding="utf-8"))
        for group in document["tests"]:
            for case in group.get("alert_rule_test", ()):
                (fires if case.get("exp_alerts") else quiet).add(case["alertname"])
    names = {a.name for a in alerts()}
    assert names - fires == set(), "alerts without a test case where they fire"
    assert names - quiet == set(), "alerts without a test case where they do not fire"


# Metric names: rules and dashboard against DetectorMetrics ------------------------------


def test_rules_reference_only_declared_metrics(declared: dict[str, set[str]]) -> None:
    allowed = all_declared_names(declared) | promql.recording_rule_names() | ALWAYS_ALLOWED_METRICS
    for rule in promql.rule_queries():
        names = promql.metric_names(rule.expr)
        assert names, f"{rule.name}: no metric found in {rule.expr!r}"
        assert names <= allowed, f"{rule.name} references undeclared {names - allowed}"


def test_dashboard_references_only_declared_metrics(declared: dict[str, set[str]]) -> None:
    allowed = all_declared_names(declared) | promql.recording_rule_names() | ALWAYS_ALLOWED_METRICS
    for query in promql.panel_queries():
        names = promql.metric_names(query.expr)
        assert names, f"panel {query.panel!r}: no metric found in {query.expr!r}"
        assert names <= allowed, f"panel {query.panel!r} references undeclared {names - allowed}"


def test_every_metric_is_on_the_dashboard(declared: dict[str, set[str]]) -> None:
    on_dashboard = set().union(*(promql.metric_names(q.expr) for q in promql.panel_queries()))
    missing = {family for family, samples in declared.items() if not samples & on_dashboard}
    assert missing == set(), f"metrics with no dashboard panel: {sorted(missing)}"


def test_worker_up_is_on_the_dashboard() -> None:
    assert any("up" in promql.metric_names(q.expr) for q in promql.panel_queries())


# Grafana --------------------------------------------------------------------------------


def test_dashboard_json_is_a_templated_provisionable_dashboard() -> None:
    dashboard = promql.load_dashboard()
    assert dashboard["uid"] and dashboard["title"]
    assert 36 <= dashboard["schemaVersion"] <= 41
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    instance = variables["instance"]
    assert instance["type"] == "query"
    assert instance["multi"] is True and instance["includeAll"] is True
    assert instance["query"]["query"] == (
        "label_values(detector_withdrawals_consumed_total, instance)"
    )
    panel_ids = [p["id"] for p in promql.iter_panels(dashboard["panels"])]
    assert len(panel_ids) == len(set(panel_ids)), "duplicate panel ids"


def test_every_panel_has_queries_on_the_templated_datasource() -> None:
    dashboard = promql.load_dashboard()
    panels = [p for p in promql.iter_panels(dashboard["panels"]) if p.get("type") != "row"]
    assert len(panels) >= 15
    for panel in panels:
        title = panel.get("title")
        assert panel.get("targets"), f"panel {title!r} has no targets"
        assert panel["datasource"]["uid"] == "${datasource}", title
        for target in panel["targets"]:
            assert target.get("expr", "").strip(), f"panel {title!r} has an empty query"
            assert target["datasource"]["uid"] == "${datasource}", title
            expr = target["expr"]
            if "detector_review_" in expr:  # the review queue's own variable
                assert '$review_instance"' in expr, f"panel {title!r} ignores $review_instance"
            elif "detector_" in expr:
                assert '$instance"' in expr, f"panel {title!r} ignores the instance variable"


def test_grafana_provisioning_files() -> None:
    grafana = promql.REPO_ROOT / "deploy" / "grafana" / "provisioning"
    providers = yaml.safe_load((grafana / "dashboards" / "detector.yml").read_text())
    assert providers["apiVersion"] == 1
    assert providers["providers"][0]["type"] == "file"
    datasources = yaml.safe_load((grafana / "datasources" / "prometheus.yml").read_text())
    assert datasources["datasources"][0]["type"] == "prometheus"


# The helpers themselves -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("expr", "names"),
    [
        ('up{job="detector"} == 0', {"up"}),
        (
            'sum by (verdict) (rate(detector_verdicts_total{instance=~"$instance"}'
            "[$__rate_interval])) / ignoring (verdict) group_left () sum(rate(x_total[5m]))",
            {"detector_verdicts_total", "x_total"},
        ),
        ("histogram_quantile(0.99, sum by (le) (rate(a_bucket[5m]))) > 1e-3", {"a_bucket"}),
        (
            "avg_over_time(job:a:share15m[1d] offset 15m) and on (job) b > bool 2",
            {"job:a:share15m", "b"},
        ),
        ('absent(up{job="detector"}) or vector(0)', {"up"}),
    ],
)
def test_metric_names(expr: str, names: set[str]) -> None:
    assert promql.metric_names(expr) == names


def test_grafana_to_promql() -> None:
    expr = 'rate(a{instance=~"$instance"}[$__rate_interval]) + b{i=~"${instance}"}'
    assert promql.grafana_to_promql(expr) == 'rate(a{instance=~".*"}[1m]) + b{i=~".*"}'
    assert promql.grafana_to_promql(expr, instance="w1:6066", __rate_interval="30s") == (
        'rate(a{instance=~"w1:6066"}[30s]) + b{i=~"w1:6066"}'
    )
    with pytest.raises(KeyError):
        promql.grafana_to_promql("rate(a[$unknown])")
