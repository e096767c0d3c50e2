"""The monitoring files in ``deploy/`` and the operator docs agree with the metrics the code
exports: every metric an alert or a dashboard panel queries exists, every alert the issue asks
for is there, and the docs say what to do about each."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from scheduler_infrastructure.telemetry import PrometheusMetrics

ROOT = Path(__file__).resolve().parents[3]
DEPLOY = ROOT / "deploy"
REQUIRED_ALERTS = {
    "SchedulerDispatcherDown",
    "SchedulerScheduleLatenessHigh",
    "SchedulerDeadLettersRising",
    "SchedulerNoLiveWorkers",
    "SchedulerQueueDepthGrowing",
}
_METRIC = re.compile(r"\bscheduler_[a-z_]+\b")


def exported_names() -> set[str]:
    """Every sample name the registry can produce (counters' ``_total``, histograms' parts)."""
    names: set[str] = set()
    for family in PrometheusMetrics(process_metrics=False).registry.collect():
        names.add(family.name)
        names.update(sample.name for sample in family.samples)
        if family.type == "counter":
            names.add(f"{family.name}_total")
        if family.type == "histogram":
            names.update(f"{family.name}_{part}" for part in ("bucket", "count", "sum"))
    return names


def alert_rules() -> list[dict]:  # type: ignore[type-arg]
    config = yaml.safe_load((DEPLOY / "alerts.yml").read_text())
    return [rule for group in config["groups"] for rule in group["rules"]]


def dashboard_exprs() -> list[str]:
    dashboard = json.loads((DEPLOY / "grafana-dashboard.json").read_text())
    return [
        target["expr"]
        for panel in dashboard["panels"]
        if panel["type"] != "row"
        for target in panel["targets"]
    ]


def test_prometheus_loads_the_alert_rules_and_scrapes_every_component() -> None:
    config = yaml.safe_load((DEPLOY / "prometheus.yml").read_text())
    assert config["rule_files"] == ["/etc/prometheus/alerts.yml"]
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert {"scheduler-api", "scheduler-dispatcher", "scheduler-worker"} <= set(jobs)


def test_the_alerts_the_issue_asks_for_exist_and_query_exported_metrics() -> None:
    rules = alert_rules()
    names = {rule["alert"] for rule in rules}
    assert names >= REQUIRED_ALERTS
    exported = exported_names()
    for rule in rules:
        assert rule["labels"]["severity"] in {"critical", "warning"}
        assert rule["annotations"]["runbook"].startswith("docs/operations.md#")
        for metric in _METRIC.findall(rule["expr"]):
            assert metric in exported, f"{rule['alert']} queries unknown {metric}"


def test_the_dashboard_queries_only_exported_metrics_and_shows_them_all() -> None:
    exprs = dashboard_exprs()
    assert exprs
    used = {metric for expr in exprs for metric in _METRIC.findall(expr)}
    exported = exported_names()
    assert used <= exported
    families = {
        family.name
        for family in PrometheusMetrics(process_metrics=False).registry.collect()
        if family.name.startswith("scheduler_")
    }
    shown = {name for name in families if any(name in metric for metric in used)}
    assert shown == families


def test_operations_doc_lists_every_metric_and_every_alert() -> None:
    text = (ROOT / "docs" / "operations.md").read_text()
    section = text[text.index("## Metrics and alerts") :]
    for family in PrometheusMetrics(process_metrics=False).registry.collect():
        if family.name.startswith("scheduler_"):
            sample_name = family.name + ("_total" if family.type == "counter" else "")
            assert sample_name in section, sample_name
    for rule in alert_rules():
        assert f"#### {rule['alert']}" in section, rule["alert"]


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool is not installed")
def test_promtool_accepts_the_rules() -> None:
    result = subprocess.run(
        ["promtool", "check", "rules", str(DEPLOY / "alerts.yml")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
