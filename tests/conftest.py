"""Shared fixtures: the shipped E1 data and the shared reference data beside the checkout."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "data" / "hadis"
SHARED = ROOT.parent / "shared" / "data" / "hadis"


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The project's own copy of the E1 data (the tests must not depend on ../shared)."""
    return DATA


@pytest.fixture(scope="session")
def sim_data(data_dir):
    from hadis.sim.data import load_data_dir

    return load_data_dir(data_dir, time_scale=0.1)


@pytest.fixture(scope="session")
def reference_profile(data_dir):
    from hadis.core.profile import load_profile

    return load_profile(data_dir / "profiles" / "l40s_hadis_reference.yaml")


# ---------------------------------------------------------------- markers


def pytest_collection_modifyitems(config, items) -> None:
    """Every test that needs the local control plane (the ``kube`` fixture, directly or through
    ``crd`` or ``namespace``) is marked ``cluster``: ``-m "not cluster"`` leaves them out."""
    for item in items:
        if "kube" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.cluster)


# ---------------------------------------------------------------- the local control plane


@pytest.fixture(scope="session")
def kube():
    """A real API server (``hack/cluster.py up``, reused when running); returns a kubectl runner."""
    state_dir = Path(os.environ.get("HADIS_CLUSTER_DIR", ROOT / ".cache" / "cluster"))
    was_running = (state_dir / "state.json").exists()
    out = subprocess.run(
        [sys.executable, str(ROOT / "hack" / "cluster.py"), "up"], capture_output=True, text=True, check=False
    )
    if out.returncode != 0:
        raise RuntimeError(f"the local control plane did not start:\n{out.stderr[-3000:]}")
    kubeconfig = out.stdout.strip().splitlines()[-1].split("=", 1)[1]
    state = json.loads((state_dir / "state.json").read_text())
    kubectl_bin = str(Path(state["bin_dir"]) / "kubectl")

    def run(*args: str, stdin: str | None = None) -> str:
        res = subprocess.run(
            [kubectl_bin, f"--kubeconfig={kubeconfig}", *args], input=stdin, capture_output=True, text=True
        )
        if res.returncode != 0:
            raise subprocess.CalledProcessError(res.returncode, args, res.stdout, res.stderr)
        return res.stdout

    run.kubeconfig = kubeconfig  # type: ignore[attr-defined]
    run.kubectl = kubectl_bin  # type: ignore[attr-defined]
    yield run
    if not was_running:  # leave a cluster the developer started; stop the one started here
        subprocess.run([sys.executable, str(ROOT / "hack" / "cluster.py"), "down"], capture_output=True, check=False)


@pytest.fixture
def namespace(kube, request):
    """A namespace of its own per test, deleted afterwards."""
    name = re.sub(r"[^a-z0-9-]", "-", request.node.name.lower())[:40].strip("-") + "-" + uuid.uuid4().hex[:6]
    kube("create", "namespace", name)
    yield name
    # Its pods hold fake GPUs that the next test's pods need: remove them at once (namespace
    # deletion alone takes the namespace controller tens of seconds), then the rest.
    kube("delete", "deployments,replicasets,pods", "--all", "-n", name, "--force", "--grace-period=0", "--wait=true")
    kube("delete", "namespace", name, "--wait=false")


@pytest.fixture(scope="session")
def crd(kube):
    kube("apply", "--server-side", "-f", str(ROOT / "crds" / "diffusioncascades.serving.hadis.dev.yaml"))
    kube("wait", "--for=condition=Established", "crd/diffusioncascades.serving.hadis.dev", "--timeout=60s")
    end = time.monotonic() + 60  # the API server publishes the schema for explain a moment later
    while True:
        try:
            kube("explain", "diffusioncascade.spec")
            break
        except subprocess.CalledProcessError:
            if time.monotonic() > end:
                raise
            time.sleep(1)
    return kube


@pytest.fixture(scope="module")
def stack(kube, tmp_path_factory):
    """The product as deployed on the real node, one per test module (``tests/realpods.py``)."""
    from realpods import running_stack

    with running_stack(kube, tmp_path_factory.mktemp("realpods")) as s:
        yield s


@pytest.fixture(scope="session")
def helm_bin() -> str:
    """Helm, built from its Go module at the pinned version by the control-plane script (cached)."""
    out = subprocess.run(
        ["bash", str(ROOT / "hack" / "build-control-plane.sh"), "helm"], capture_output=True, text=True, check=False
    )
    if out.returncode != 0:
        raise RuntimeError(f"helm could not be built:\n{out.stderr[-3000:]}")
    return str(Path(out.stdout.strip().splitlines()[-1]) / "helm")


# ---------------------------------------------------------------- Prometheus: hadis.local.running_prometheus


@pytest.fixture
def operator(crd, namespace, monkeypatch):
    """The operator in this process (kopf's runner), watching the test's namespace."""
    from kopf.testing import KopfRunner

    monkeypatch.setenv("KUBECONFIG", crd.kubeconfig)
    args = ["run", "--standalone", "--namespace", namespace, "-m", "hadis.operator.handlers", "--verbose"]
    with KopfRunner(args, timeout=60) as runner:
        yield runner
    assert runner.exception is None, runner.output[-3000:]


IDLE_CASCADES = ("e1", "tiny", "demo")


@pytest.fixture
def idle_prometheus(tmp_path, namespace):
    """A real Prometheus scraping idle routers' metrics (the router's own ``RouterMetrics``, every
    series at zero for the cascades of ``IDLE_CASCADES``) with the test's namespace as the target
    label: every cascade's arrival rate there is 0 req/s. Without a series the operator says
    MetricsUnavailable instead of planning, so a test of plans at no load needs one."""
    from hadis.local import running_prometheus
    from support import idle_router

    with (
        idle_router(*IDLE_CASCADES) as (address, _metrics),
        running_prometheus(tmp_path / "prometheus", [address], "1s", {"namespace": namespace}) as url,
    ):
        yield url
