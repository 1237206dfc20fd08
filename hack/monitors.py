"""The chart's PodMonitors as a plain Prometheus's scrape jobs.

The local cluster has no Prometheus Operator and Debian's Prometheus is built without Kubernetes
service discovery, so the demo and the real-pod tests apply the chart's own rendered PodMonitors
here: the same selectors, namespaces, port names, paths, intervals, ``honorLabels`` and
``keep``/``drop`` relabelings, turned into one file-discovered job per monitor endpoint. A
monitor whose selector or port name no longer matches the pods the operator creates scrapes
nothing here, as it would in a user's cluster.

Pure: pods in, target groups out (``hack/demo.py`` lists the pods and writes the files).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class ScrapeJob:
    """One PodMonitor endpoint: what Prometheus Operator would make one scrape job of."""

    name: str  # podMonitor/<namespace>/<name>/<index>, as Prometheus Operator names it
    monitor: Mapping
    endpoint: Mapping
    interval: str
    path: str
    honor_labels: bool


def scrape_jobs(monitors: Sequence[Mapping]) -> list[ScrapeJob]:
    """One job per endpoint of each PodMonitor (other kinds are not scraped here)."""
    jobs = []
    for m in monitors:
        if m.get("kind") != "PodMonitor":
            continue
        meta = m["metadata"]
        for i, ep in enumerate(m["spec"].get("podMetricsEndpoints") or []):
            jobs.append(
                ScrapeJob(
                    name=f"podMonitor/{meta['namespace']}/{meta['name']}/{i}",
                    monitor=m,
                    endpoint=ep,
                    interval=ep.get("interval") or "30s",
                    path=ep.get("path") or "/metrics",
                    honor_labels=bool(ep.get("honorLabels")),
                )
            )
    return jobs


def monitored_namespaces(monitor: Mapping, namespaces: Sequence[str]) -> list[str]:
    """Of ``namespaces`` (those this cluster's pods are listed in), the ones the monitor selects."""
    sel = monitor["spec"].get("namespaceSelector") or {}
    if sel.get("any"):
        return list(namespaces)
    names = sel.get("matchNames") or [monitor["metadata"]["namespace"]]
    return [n for n in namespaces if n in names]


def selects(selector: Mapping, labels: Mapping[str, str]) -> bool:
    """A Kubernetes label selector (matchLabels and matchExpressions) against a pod's labels."""
    if any(labels.get(k) != v for k, v in (selector.get("matchLabels") or {}).items()):
        return False
    for ex in selector.get("matchExpressions") or []:
        key, op, values = ex["key"], ex["operator"], ex.get("values") or []
        ok = {
            "In": key in labels and labels[key] in values,
            "NotIn": key not in labels or labels[key] not in values,
            "Exists": key in labels,
            "DoesNotExist": key not in labels,
        }.get(op)
        if ok is None:
            raise ValueError(f"selector operator {op!r} is not a Kubernetes one")
        if not ok:
            return False
    return True


def _meta_labels(pod: Mapping) -> dict[str, str]:
    """The ``__meta_kubernetes_*`` labels relabelings may read, as Kubernetes discovery sets them."""
    meta = pod["metadata"]
    out = {"__meta_kubernetes_namespace": meta["namespace"], "__meta_kubernetes_pod_name": meta["name"]}
    for k, v in (meta.get("labels") or {}).items():
        out["__meta_kubernetes_pod_label_" + re.sub(r"[^a-zA-Z0-9_]", "_", k)] = v
    return out


def kept(relabelings: Sequence[Mapping], pod: Mapping) -> bool:
    """Whether the endpoint's ``keep``/``drop`` relabelings keep the pod's target. Any other
    action is refused: it would change labels, which this file-based discovery cannot mirror."""
    meta = _meta_labels(pod)
    for r in relabelings:
        action = r.get("action", "replace")
        if action not in ("keep", "drop"):
            raise ValueError(f"relabeling action {action!r}: the local Prometheus applies keep and drop only")
        value = r.get("separator", ";").join(meta.get(s, "") for s in r.get("sourceLabels") or [])
        matched = re.fullmatch(r.get("regex", "(.*)"), value) is not None
        if matched != (action == "keep"):
            return False
    return True


def _port(pod: Mapping, name: str) -> tuple[str, int] | None:
    """(container, port number) of the pod's container port called ``name``."""
    for c in pod["spec"].get("containers") or []:
        for p in c.get("ports") or []:
            if p.get("name") == name:
                return c["name"], int(p["containerPort"])
    return None


def job_targets(job: ScrapeJob, pods: Mapping[str, Sequence[Mapping]]) -> list[dict]:
    """file_sd target groups of ``job`` among ``pods`` (namespace -> its pods): Running pods with
    an IP that the monitor selects, at the endpoint's named port, labelled as Prometheus
    Operator labels them (namespace, pod, container)."""
    groups = []
    for ns in monitored_namespaces(job.monitor, list(pods)):
        for pod in pods[ns]:
            ip = (pod.get("status") or {}).get("podIP")
            if not ip or pod["status"].get("phase") != "Running":
                continue
            if not selects(job.monitor["spec"].get("selector") or {}, pod["metadata"].get("labels") or {}):
                continue
            if not kept(job.endpoint.get("relabelings") or [], pod):
                continue
            port = _port(pod, job.endpoint["port"])
            if port is None:
                continue
            labels = {"namespace": ns, "pod": pod["metadata"]["name"], "container": port[0]}
            groups.append({"targets": [f"{ip}:{port[1]}"], "labels": labels})
    return groups


def prometheus_config(jobs: Sequence[ScrapeJob], target_files: Sequence[str], evaluation_interval: str) -> dict:
    """A Prometheus configuration with one file-discovered scrape job per monitor endpoint."""
    return {
        "global": {"evaluation_interval": evaluation_interval},
        "scrape_configs": [
            {
                "job_name": job.name,
                "scrape_interval": job.interval,
                "metrics_path": job.path,
                "honor_labels": job.honor_labels,
                "file_sd_configs": [{"files": [f]}],
            }
            for job, f in zip(jobs, target_files, strict=True)
        ],
    }
