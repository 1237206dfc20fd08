"""``hadis up --tiny``: a local data plane (two tiny Triton workers and the router) as real processes.

Each part runs as its own ``hadis`` process on loopback, as in a cluster: the router reaches
the workers over the Triton HTTP protocol. Prints ``router: http://127.0.0.1:PORT`` once every
part is ready; Ctrl-C or SIGTERM stops all of them. ``running_prometheus`` runs Debian's
Prometheus beside it for the tests and benchmarks.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from hadis.contract import model_ready_path
from hadis.router.config import Limits, RouterConfig, Scoring, Tier, dump_config
from hadis.workers.spec import SPECS_DIR  # parsing only: no torch

T = TypeVar("T")


def wait_until(check: Callable[[], T], what: str, timeout_s: float = 60.0, every_s: float = 0.5) -> T:
    """``check()``'s first truthy value, polled every ``every_s``; an exception counts as not yet.
    TimeoutError naming ``what`` and the last value seen when ``timeout_s`` passes first. The
    one wait of the demo, the benchmarks and the tests: on conditions, never fixed sleeps."""
    end = time.monotonic() + timeout_s
    last: Any = None
    while time.monotonic() < end:
        try:
            last = check()
            if last:
                return last
        except Exception as e:  # not there yet
            last = e
        time.sleep(every_s)
    raise TimeoutError(f"{what}: not reached in {timeout_s:.0f}s (last: {last})")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http_ok(
    url: str, timeout_s: float, proc: subprocess.Popen | None = None, context: ssl.SSLContext | None = None
) -> bool:
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        if proc is not None and proc.poll() is not None:
            return False
        try:
            with urllib.request.urlopen(url, timeout=1.0, context=context) as r:
                if r.status == 200:
                    return True
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.3)
    return False


@dataclass
class LocalPlane:
    """The processes of a local data plane and where they listen."""

    workdir: Path
    router_port: int
    admin_port: int  # the router's /metrics, /openapi.json and detailed /readyz
    worker_ports: dict[str, int]  # model -> Triton HTTP port
    metrics_ports: dict[str, int]  # model -> Triton metrics port
    config_path: Path
    procs: dict[str, subprocess.Popen] = field(default_factory=dict)

    @property
    def router_url(self) -> str:
        return f"http://127.0.0.1:{self.router_port}"

    @property
    def admin_url(self) -> str:
        return f"http://127.0.0.1:{self.admin_port}"

    def stop(self, timeout_s: float = 15.0) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        end = time.monotonic() + timeout_s
        for proc in self.procs.values():
            try:
                proc.wait(max(0.1, end - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _hadis(*args: str) -> list[str]:
    return [sys.executable, "-m", "hadis.cli", *args]


def start_worker(plane: LocalPlane, model: str, spec: str, min_batch_s: float = 0.0) -> None:
    http = plane.worker_ports[model]
    cmd = _hadis(
        "worker", "serve", "--model", spec, "--http-port", str(http), "--grpc-port", str(free_port()),
        "--metrics-port", str(plane.metrics_ports[model]), "--min-batch-seconds", f"{min_batch_s:g}",
    )  # fmt: skip
    # Several workers share this machine's cores: one intra-op thread each. With torch's default
    # (a thread per core) their OpenMP threads oversubscribe the cores, and a tiny batch took
    # 2 to 4 times longer (heavy, batch of 4: 1.76 s against 0.49 s with both cores busy).
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    logf = (plane.workdir / f"{model}.log").open("w")
    plane.procs[model] = subprocess.Popen(cmd, stdout=logf, stderr=subprocess.STDOUT, env=env, start_new_session=True)


def start_router(plane: LocalPlane) -> None:
    cmd = _hadis(
        "router", "serve", "--config", str(plane.config_path), "--port", str(plane.router_port),
        "--admin-port", str(plane.admin_port),
    )  # fmt: skip
    logf = (plane.workdir / "router.log").open("w")
    plane.procs["router"] = subprocess.Popen(cmd, stdout=logf, stderr=subprocess.STDOUT, start_new_session=True)


def tiny_config(
    light_port: int,
    heavy_port: int,
    router_ratio: float = 0.2,
    disc_ratio: float = 0.3,
    slo_s: float = 6.0,
    scoring: Scoring | None = None,
    cascade: str = "tiny",
) -> RouterConfig:
    return RouterConfig(
        cascade=cascade,
        slo_s=slo_s,
        size="64x64",
        light=Tier("tiny-light", (f"127.0.0.1:{light_port}",)),
        heavy=Tier("tiny-heavy", (f"127.0.0.1:{heavy_port}",)),
        router_ratio=router_ratio,
        disc_ratio=disc_ratio,
        scoring=scoring or Scoring(),
        limits=Limits(),
    )


def up_tiny(
    workdir: Path | None = None,
    router_port: int | None = None,
    router_ratio: float = 0.2,
    disc_ratio: float = 0.3,
    slo_s: float = 6.0,
    progress=print,
    ready_timeout_s: float = 240.0,
    min_batch_s: Mapping[str, float] | None = None,
) -> LocalPlane:
    """Start the tiny plane and return once every part is ready (or raise, having stopped it).

    Ready means a request sent now is served: each worker's model answers (Triton's model-level
    readiness) and the router's probe has seen the light one. ``min_batch_s`` (model -> seconds)
    holds each batch of a worker to at least that long, so a test can fix the service time."""
    wd = Path(workdir or tempfile.mkdtemp(prefix="hadis-up-"))
    wd.mkdir(parents=True, exist_ok=True)
    models = {"tiny-light": str(SPECS_DIR / "tiny-light.yaml"), "tiny-heavy": str(SPECS_DIR / "tiny-heavy.yaml")}
    plane = LocalPlane(
        workdir=wd,
        router_port=router_port or free_port(),
        admin_port=free_port(),
        worker_ports={m: free_port() for m in models},
        metrics_ports={m: free_port() for m in models},
        config_path=wd / "router.yaml",
    )
    cfg = tiny_config(
        plane.worker_ports["tiny-light"], plane.worker_ports["tiny-heavy"], router_ratio, disc_ratio, slo_s
    )
    plane.config_path.write_text(dump_config(cfg))
    try:
        for model, spec in models.items():
            progress(f"starting worker {model} on 127.0.0.1:{plane.worker_ports[model]} (log: {wd / (model + '.log')})")
            start_worker(plane, model, spec, (min_batch_s or {}).get(model, 0.0))
        for model in models:
            url = f"http://127.0.0.1:{plane.worker_ports[model]}{model_ready_path(model)}"
            if not wait_http_ok(url, ready_timeout_s, plane.procs[model]):
                raise RuntimeError(f"worker {model} did not become ready; see {wd / (model + '.log')}")
            progress(f"worker {model} ready")
        progress(f"starting the router on 127.0.0.1:{plane.router_port} (log: {wd / 'router.log'})")
        start_router(plane)
        if not wait_http_ok(f"{plane.router_url}/readyz", 60.0, plane.procs["router"]):
            raise RuntimeError(f"the router did not become ready; see {wd / 'router.log'}")
    except BaseException:
        plane.stop()
        raise
    return plane


def run_up_tiny(args) -> int:
    def progress(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    stop = {"signal": None}

    def on_signal(signum, _frame):
        stop["signal"] = signum

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        plane = up_tiny(args.workdir, args.port, args.router_ratio, args.disc_ratio, args.slo, progress=progress)
    except RuntimeError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"router: {plane.router_url}", flush=True)
    progress(f"metrics and OpenAPI: {plane.admin_url}/metrics, {plane.admin_url}/openapi.json")
    progress(f"config: {plane.config_path} (edit it: the router reloads it); Ctrl-C stops everything")
    code = 0
    while stop["signal"] is None:
        dead = [name for name, p in plane.procs.items() if p.poll() is not None]
        if dead:
            progress(f"error: {', '.join(dead)} exited; stopping")
            code = 1
            break
        time.sleep(0.5)
    progress("stopping")
    plane.stop()
    progress("stopped")
    return code


# ---------------------------------------------------------------- Prometheus (tests, benchmarks)


def scraped_value(base_url: str, name: str, **labels: str) -> float:
    """The sum of the samples ``name`` at ``base_url``/metrics whose labels include ``labels``
    (a counter's ``_total`` name as exposed; 0 when none is there yet)."""
    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(f"{base_url}/metrics", timeout=5) as r:
        text = r.read().decode()
    return sum(
        s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
    )


_REQUEST_LINE = re.compile(r"^apiserver_request_total\{([^}]*)\} ([0-9.e+]+)$")


def api_request_counts(metrics_text: str) -> Counter:
    """The API server's ``apiserver_request_total`` from its /metrics text, summed by
    (verb, resource[/subresource])."""
    out: Counter = Counter()
    for line in metrics_text.splitlines():
        m = _REQUEST_LINE.match(line)
        if not m:
            continue
        labels = {k: v for k, v in re.findall(r'(\w+)="([^"]*)"', m.group(1))}
        res = labels.get("resource", "") + ("/" + labels["subresource"] if labels.get("subresource") else "")
        out[(labels.get("verb", "?"), res)] += float(m.group(2))
    return out


REPO = Path(__file__).resolve().parents[2]


def prometheus_binary() -> str:
    candidates = [os.environ.get("HADIS_PROMETHEUS"), str(REPO / ".cache/prometheus/usr/bin/prometheus")]
    candidates.append(shutil.which("prometheus"))
    for c in candidates:
        if c and Path(c).exists():
            return c
    raise RuntimeError("Prometheus not found: run 'make install' (it unpacks Debian's prometheus into .cache)")


@contextlib.contextmanager
def running_prometheus(
    directory: Path,
    targets: Sequence[str] | Mapping[str, Mapping[str, str]],
    scrape_interval: str = "1s",
    labels: Mapping[str, str] | None = None,
    tls: tuple[Path, Path] | None = None,
) -> Iterator[str]:
    """Debian's Prometheus on a free loopback port, scraping ``targets`` (with target ``labels``,
    such as the ``namespace`` kube-prometheus-stack's monitors add; a mapping of target to its
    own labels scrapes each with those, as routers in several namespaces); yields its URL.
    ``tls`` (certificate, key): it serves https with them (its web config file)."""
    directory.mkdir(parents=True, exist_ok=True)
    port = free_port()
    own = targets if isinstance(targets, Mapping) else {t: {} for t in targets}
    static = [{"targets": [t], "labels": {**(labels or {}), **extra}} for t, extra in own.items()]
    config = {
        "global": {"scrape_interval": scrape_interval, "evaluation_interval": scrape_interval},
        "scrape_configs": [{"job_name": "hadis", "static_configs": static}] if static else [],
    }
    (directory / "prometheus.yml").write_text(json.dumps(config))  # JSON is YAML
    web, scheme, context = [], "http", None
    if tls is not None:
        (directory / "web.yml").write_text(
            json.dumps({"tls_server_config": {"cert_file": str(tls[0]), "key_file": str(tls[1])}})
        )
        web, scheme, context = (
            [f"--web.config.file={directory / 'web.yml'}"],
            "https",
            ssl.create_default_context(cafile=str(tls[0])),
        )
    proc = subprocess.Popen(
        [
            prometheus_binary(), f"--config.file={directory / 'prometheus.yml'}", *web,
            f"--storage.tsdb.path={directory / 'data'}", f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=(directory / "log").open("w"), stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        ready = wait_http_ok(f"{scheme}://127.0.0.1:{port}/-/ready", 30, proc, context)
        assert ready, (directory / "log").read_text()[-2000:]
        yield f"{scheme}://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(10)
