"""Shared helpers: the PromQL of the dashboard and of the Prometheus rules, and metric names.

Import as ``import promql`` from a test module in ``tests/`` (pytest's default ``prepend``
import mode puts ``tests/`` on ``sys.path`` since it has no ``__init__.py``).

* :func:`panel_queries` / :func:`rule_queries`: every query of the Grafana dashboard and every
  alert/recording rule expression, with where it comes from.
* :func:`grafana_to_promql`: replaces Grafana's variables (``$instance``,
  ``$__rate_interval``...) so a panel query can be sent to Prometheus as is, e.g. by a live
  test that checks every panel returns data against a Prometheus scraping a real worker::

      for q in promql.panel_queries():
          resp = http_get(f"{prom}/api/v1/query", query=q.promql())
* :func:`metric_names`: the metric names a PromQL expression selects (a small tokenizer,
  enough for our expressions; not a full PromQL parser).
* :func:`declared_metrics`: the sample names a ``CollectorRegistry`` exposes, per family.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from prometheus_client import CollectorRegistry

__all__ = [
    "DASHBOARD_PATH",
    "PROMETHEUS_CONFIG",
    "PROMETHEUS_DIR",
    "REPO_ROOT",
    "RULES_DIR",
    "RULE_TESTS_DIR",
    "PanelQuery",
    "RuleQuery",
    "declared_metrics",
    "grafana_to_promql",
    "iter_panels",
    "load_dashboard",
    "metric_names",
    "panel_queries",
    "recording_rule_names",
    "rule_files",
    "rule_queries",
]

REPO_ROOT = Path(__file__).resolve().parents[1]
PROMETHEUS_DIR = REPO_ROOT / "deploy" / "prometheus"
PROMETHEUS_CONFIG = PROMETHEUS_DIR / "prometheus.yml"
RULES_DIR = PROMETHEUS_DIR / "rules"
RULE_TESTS_DIR = PROMETHEUS_DIR / "tests"
DASHBOARD_PATH = REPO_ROOT / "deploy" / "grafana" / "dashboards" / "detector.json"


@dataclass(frozen=True, slots=True)
class PanelQuery:
    """One query (target) of a dashboard panel."""

    panel: str  # panel title
    panel_type: str
    ref_id: str
    expr: str  # as written in the dashboard, with Grafana variables
    instant: bool

    def promql(self, **variables: str) -> str:
        """The expression with Grafana's variables replaced (see :func:`grafana_to_promql`)."""
        return grafana_to_promql(self.expr, **variables)


@dataclass(frozen=True, slots=True)
class RuleQuery:
    """One rule of a Prometheus rule file."""

    file: str  # file name
    group: str
    kind: str  # "alert" or "record"
    name: str  # alert name or recorded metric name
    expr: str
    rule: Mapping[str, Any]  # the whole rule (labels, annotations, for...)


# Dashboard ------------------------------------------------------------------------------


def load_dashboard(path: Path = DASHBOARD_PATH) -> dict[str, Any]:
    with path.open(encoding="utf-8") as f:
        dashboard: dict[str, Any] = json.load(f)
    return dashboard


def iter_panels(panels: Iterable[Mapping[str, Any]]) -> Iterator[Mapping[str, Any]]:
    """Every panel, rows included, descending into the panels of (collapsed) rows."""
    for panel in panels:
        yield panel
        yield from iter_panels(panel.get("panels", ()))


def panel_queries(path: Path = DASHBOARD_PATH) -> list[PanelQuery]:
    """Every target of every non-row panel of the dashboard (empty ``expr`` kept as "")."""
    queries = []
    for panel in iter_panels(load_dashboard(path)["panels"]):
        if panel.get("type") == "row":
            continue
        for target in panel.get("targets", ()):
            queries.append(
                PanelQuery(
                    panel=str(panel.get("title", "")),
                    panel_type=str(panel.get("type", "")),
                    ref_id=str(target.get("refId", "")),
                    expr=str(target.get("expr", "")),
                    instant=bool(target.get("instant", False)),
                )
            )
    return queries


_GRAFANA_DEFAULTS = {
    "__rate_interval": "1m",
    "__interval": "15s",
    "__range": "1h",
    "instance": ".*",
    "review_instance": ".*",
}


def grafana_to_promql(expr: str, **variables: str) -> str:
    """Replace ``$name`` / ``${name}`` Grafana variables; defaults: every instance (``.*``),
    ``$__rate_interval`` = 1m, ``$__interval`` = 15s, ``$__range`` = 1h, every review queue
    (``$review_instance``). Pass e.g.
    ``instance="w1:6066"`` or ``__rate_interval="30s"`` to override."""
    values = {**_GRAFANA_DEFAULTS, **variables}

    def replace(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        if name not in values:
            raise KeyError(f"no value for Grafana variable ${name} in {expr!r}")
        return values[name]

    return re.sub(r"\$\{(\w+)\}|\$(\w+)", replace, expr)


# Rules ----------------------------------------------------------------------------------


def rule_files(rules_dir: Path = RULES_DIR) -> list[Path]:
    """The rule files Prometheus loads (``rule_files: [rules/*.yml]``)."""
    return sorted(rules_dir.glob("*.yml"))


def rule_queries(files: Iterable[Path] | None = None) -> list[RuleQuery]:
    """Every alerting and recording rule of ``files`` (default: all of :func:`rule_files`)."""
    queries = []
    for path in rule_files() if files is None else files:
        with path.open(encoding="utf-8") as f:
            document = yaml.safe_load(f)
        for group in document["groups"]:
            for rule in group["rules"]:
                kind = "alert" if "alert" in rule else "record"
                queries.append(
                    RuleQuery(
                        file=path.name,
                        group=str(group["name"]),
                        kind=kind,
                        name=str(rule[kind]),
                        expr=str(rule["expr"]),
                        rule=rule,
                    )
                )
    return queries


def recording_rule_names(files: Iterable[Path] | None = None) -> set[str]:
    return {q.name for q in rule_queries(files) if q.kind == "record"}


# Metric names ---------------------------------------------------------------------------

_STRING = re.compile(r'"(?:[^"\\]|\\.)*"' r"|'(?:[^'\\]|\\.)*'" r"|`[^`]*`")
_BRACES = re.compile(r"\{[^{}]*\}")  # label matchers (strings are gone, so no nesting)
_BRACKETS = re.compile(r"\[[^\[\]]*\]")  # range and subquery selectors
_GROUPING = re.compile(
    r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)", re.IGNORECASE
)
# An identifier not glued to a preceding word, number, `.` or `$` (durations such as `15m`,
# numbers such as `1e-9`, Grafana's `$var`).
_IDENT = re.compile(r"(?<![\w:.$])([a-zA-Z_:][\w:]*)(\s*\()?")
_KEYWORDS = frozenset(
    {
        "and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring",
        "group_left", "group_right", "inf", "nan", "atan2",
    }
)  # fmt: skip


def metric_names(expr: str) -> set[str]:
    """The metric names ``expr`` selects, e.g. ``{"detector_verdicts_total", "up"}``.

    Strips strings, label matchers, ranges and grouping clauses, then keeps the identifiers
    that are neither keywords nor function/aggregation calls.
    """
    text = _STRING.sub(" ", expr)
    text = _BRACES.sub(" ", text)
    text = _BRACKETS.sub(" ", text)
    text = _GROUPING.sub(" ", text)
    names = set()
    for match in _IDENT.finditer(text):
        name, call = match.group(1), match.group(2)
        if call or name.lower() in _KEYWORDS:
            continue
        names.add(name)
    return names


# Sample name suffixes each metric type exposes (`_created` only while created series are on).
_SUFFIXES: Mapping[str, tuple[str, ...]] = {
    "counter": ("_total", "_created"),
    "histogram": ("_bucket", "_count", "_sum", "_created"),
    "summary": ("", "_count", "_sum", "_created"),
    "gauge": ("",),
    "info": ("_info",),
    "stateset": ("",),
    "enum": ("",),
    "gaugehistogram": ("_bucket", "_gcount", "_gsum"),
    "unknown": ("",),
}


def declared_metrics(registry: CollectorRegistry) -> dict[str, set[str]]:
    """``{family name: sample names}`` of every metric registered on ``registry``.

    Taken from the families, not the samples: a labelled metric with no child yet exposes no
    sample but is declared all the same.
    """
    return {
        family.name: {family.name + suffix for suffix in _SUFFIXES[family.type]}
        for family in registry.collect()
    }
