#!/usr/bin/env python3
"""A real local Kubernetes control plane without a container runtime: ``make cluster-up``.

etcd, kube-apiserver, kube-controller-manager, kube-scheduler and kwok (fake nodes that
advertise ``nvidia.com/gpu``, so pods schedule and "run" within the GPU budget), all on
loopback, with generated certificates, service-account keys and kubeconfigs. Binaries come from
``hack/build-control-plane.sh`` (built from their Go modules at pinned versions, cached).

    python hack/cluster.py up [--nodes 4 --gpus-per-node 4]   # ends with: export KUBECONFIG=PATH
    python hack/cluster.py down
    python hack/cluster.py status
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STATE = Path(os.environ.get("HADIS_CLUSTER_DIR", ROOT / ".cache" / "cluster"))


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def binaries() -> Path:
    out = subprocess.run(
        ["bash", str(ROOT / "hack" / "build-control-plane.sh")], check=True, capture_output=True, text=True
    )
    return Path(out.stdout.strip().splitlines()[-1])


def openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True)


def make_pki(d: Path) -> None:
    d.mkdir(parents=True, exist_ok=True)
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "3650", "-subj", "/CN=hadis-local-ca",
            "-keyout", str(d / "ca.key"), "-out", str(d / "ca.crt"))  # fmt: skip
    (d / "san.cnf").write_text(
        "[req]\ndistinguished_name=dn\n[dn]\n[ext]\nsubjectAltName=IP:127.0.0.1,DNS:localhost,DNS:kubernetes,"
        "DNS:kubernetes.default,DNS:kubernetes.default.svc\nextendedKeyUsage=serverAuth,clientAuth\n"
    )

    def cert(name: str, subj: str, ext: bool) -> None:
        openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", subj, "-keyout", str(d / f"{name}.key"),
                "-out", str(d / f"{name}.csr"))  # fmt: skip
        extra = ["-extfile", str(d / "san.cnf"), "-extensions", "ext"] if ext else []
        openssl("x509", "-req", "-in", str(d / f"{name}.csr"), "-CA", str(d / "ca.crt"), "-CAkey", str(d / "ca.key"),
                "-CAcreateserial", "-days", "3650", "-out", str(d / f"{name}.crt"), *extra)  # fmt: skip

    cert("apiserver", "/CN=kube-apiserver", True)
    cert("admin", "/O=system:masters/CN=hadis-admin", False)
    cert("controller-manager", "/CN=system:kube-controller-manager", False)
    cert("scheduler", "/CN=system:kube-scheduler", False)
    openssl("genrsa", "-out", str(d / "sa.key"), "2048")
    openssl("rsa", "-in", str(d / "sa.key"), "-pubout", "-out", str(d / "sa.pub"))


def kubeconfig(d: Path, user: str, server: str) -> Path:
    doc = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {"name": "hadis-local", "cluster": {"server": server, "certificate-authority": str(d / "ca.crt")}}
        ],
        "users": [
            {"name": user, "user": {"client-certificate": str(d / f"{user}.crt"), "client-key": str(d / f"{user}.key")}}
        ],
        "contexts": [{"name": "hadis-local", "context": {"cluster": "hadis-local", "user": user}}],
        "current-context": "hadis-local",
    }
    path = d / f"{user}.kubeconfig"
    path.write_text(json.dumps(doc, indent=2))
    return path


def spawn(name: str, cmd: list[str], state: dict) -> None:
    logf = (STATE / f"{name}.log").open("w")
    proc = subprocess.Popen(cmd, stdout=logf, stderr=subprocess.STDOUT, start_new_session=True)
    state["pids"][name] = proc.pid
    (STATE / "state.json").write_text(json.dumps(state, indent=2))


def wait_for(check, what: str, timeout_s: float = 120.0) -> None:
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        try:
            if check():
                return
        except Exception:
            pass
        time.sleep(0.5)
    raise SystemExit(f"error: {what} did not come up in {timeout_s:.0f}s; logs in {STATE}")


def kubectl(bin_dir: Path, kcfg: Path, *args: str, stdin: str | None = None) -> str:
    out = subprocess.run([str(bin_dir / "kubectl"), f"--kubeconfig={kcfg}", *args], input=stdin, capture_output=True,
                         text=True)  # fmt: skip
    if out.returncode != 0:
        raise RuntimeError(out.stderr.strip())
    return out.stdout


def fake_node(name: str, gpus: int) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "annotations": {"kwok.x-k8s.io/node": "fake", "node.alpha.kubernetes.io/ttl": "0"},
            "labels": {"type": "kwok", "kubernetes.io/hostname": name, "nvidia.com/gpu.present": "true"},
        },
        "spec": {"taints": []},
        "status": {
            "allocatable": {"cpu": "32", "memory": "256Gi", "pods": "110", "nvidia.com/gpu": str(gpus)},
            "capacity": {"cpu": "32", "memory": "256Gi", "pods": "110", "nvidia.com/gpu": str(gpus)},
        },
    }


def up(args: argparse.Namespace) -> int:
    if (STATE / "state.json").exists():
        state = json.loads((STATE / "state.json").read_text())
        if all(_alive(p) for p in state.get("pids", {}).values()):
            print(f"export KUBECONFIG={state['kubeconfig']}")
            return 0
        down(args)
    t0 = time.monotonic()
    log("building or finding the control-plane binaries ...")
    bin_dir = binaries()
    STATE.mkdir(parents=True, exist_ok=True)
    pki = STATE / "pki"
    if not (pki / "sa.key").exists():
        make_pki(pki)
    ports = {
        "etcd": free_port(),
        "etcd_peer": free_port(),
        "apiserver": free_port(),
        "kcm": free_port(),
        "sched": free_port(),
    }
    server = f"https://127.0.0.1:{ports['apiserver']}"
    admin = kubeconfig(pki, "admin", server)
    cm_cfg = kubeconfig(pki, "controller-manager", server)
    sched_cfg = kubeconfig(pki, "scheduler", server)
    state = {"pids": {}, "ports": ports, "kubeconfig": str(admin), "bin_dir": str(bin_dir)}
    spawn("etcd", [
        str(bin_dir / "etcd"), f"--data-dir={STATE / 'etcd'}", f"--listen-client-urls=http://127.0.0.1:{ports['etcd']}",
        f"--advertise-client-urls=http://127.0.0.1:{ports['etcd']}",
        f"--listen-peer-urls=http://127.0.0.1:{ports['etcd_peer']}",
        f"--initial-advertise-peer-urls=http://127.0.0.1:{ports['etcd_peer']}",
        f"--initial-cluster=default=http://127.0.0.1:{ports['etcd_peer']}", "--quota-backend-bytes=4294967296",
    ], state)  # fmt: skip
    wait_for(
        lambda: urllib.request.urlopen(f"http://127.0.0.1:{ports['etcd']}/health", timeout=1).status == 200, "etcd"
    )
    spawn("kube-apiserver", [
        str(bin_dir / "kube-apiserver"), f"--etcd-servers=http://127.0.0.1:{ports['etcd']}",
        "--bind-address=127.0.0.1", "--advertise-address=127.0.0.1", f"--secure-port={ports['apiserver']}",
        f"--tls-cert-file={pki / 'apiserver.crt'}", f"--tls-private-key-file={pki / 'apiserver.key'}",
        f"--client-ca-file={pki / 'ca.crt'}", f"--service-account-key-file={pki / 'sa.pub'}",
        f"--service-account-signing-key-file={pki / 'sa.key'}",
        "--service-account-issuer=https://kubernetes.default.svc.cluster.local", "--authorization-mode=RBAC",
        "--service-cluster-ip-range=10.96.0.0/16", "--allow-privileged=true",
    ], state)  # fmt: skip
    wait_for(lambda: kubectl(bin_dir, admin, "get", "--raw=/readyz").strip() == "ok", "kube-apiserver")
    spawn("kube-controller-manager", [
        str(bin_dir / "kube-controller-manager"), f"--kubeconfig={cm_cfg}", "--bind-address=127.0.0.1",
        f"--secure-port={ports['kcm']}", f"--service-account-private-key-file={pki / 'sa.key'}",
        f"--root-ca-file={pki / 'ca.crt'}", "--use-service-account-credentials=true", "--leader-elect=false",
        "--controllers=*,-nodeipam,-cloud-node-lifecycle,-route,-service",
        # kwok's nodes are never really down; a slow heartbeat on a busy machine must not mark
        # them NotReady and start evicting pods mid-test
        "--node-monitor-grace-period=180s",
    ], state)  # fmt: skip
    spawn("kube-scheduler", [
        str(bin_dir / "kube-scheduler"), f"--kubeconfig={sched_cfg}", "--bind-address=127.0.0.1",
        f"--secure-port={ports['sched']}", "--leader-elect=false",
    ], state)  # fmt: skip
    spawn("kwok", [
        str(bin_dir / "kwok"), f"--kubeconfig={admin}", "--manage-all-nodes=false",
        "--manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake", "--cidr=10.244.0.0/16",
        "--node-ip=127.0.0.9", "--node-lease-duration-seconds=40",  # heartbeats as kubelets send them
    ], state)  # fmt: skip
    nodes = {
        "apiVersion": "v1",
        "kind": "List",
        "items": [fake_node(f"gpu-node-{i}", args.gpus_per_node) for i in range(args.nodes)],
    }
    wait_for(lambda: kubectl(bin_dir, admin, "apply", "-f", "-", stdin=json.dumps(nodes)) is not None, "fake nodes")
    wait_for(
        lambda: kubectl(bin_dir, admin, "get", "serviceaccount", "default", "-n", "default") != "",
        "the default service account (controller-manager)",
    )
    log(
        f"cluster up in {time.monotonic() - t0:.1f}s: {args.nodes} fake nodes x {args.gpus_per_node} "
        f"nvidia.com/gpu; logs in {STATE}"
    )
    print(f"export KUBECONFIG={admin}")
    return 0


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    return True


def down(_args: argparse.Namespace) -> int:
    path = STATE / "state.json"
    if not path.exists():
        log("no local cluster is running")
        return 0
    state = json.loads(path.read_text())
    order = ["kwok", "kube-scheduler", "kube-controller-manager", "kube-apiserver", "etcd"]
    for name in order:
        pid = state["pids"].get(name)
        if pid and _alive(pid):
            os.killpg(pid, signal.SIGTERM)
    end = time.monotonic() + 15
    for name in order:
        pid = state["pids"].get(name)
        while pid and _alive(pid) and time.monotonic() < end:
            time.sleep(0.2)
        if pid and _alive(pid):
            os.killpg(pid, signal.SIGKILL)
    path.unlink()
    subprocess.run(["rm", "-rf", str(STATE / "etcd")], check=False)
    log("cluster stopped")
    return 0


def status(_args: argparse.Namespace) -> int:
    path = STATE / "state.json"
    if not path.exists():
        print("down")
        return 1
    state = json.loads(path.read_text())
    for name, pid in state["pids"].items():
        print(f"{name}: {'running' if _alive(pid) else 'stopped'} (pid {pid})")
    print(f"export KUBECONFIG={state['kubeconfig']}")
    return 0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    u = sub.add_parser("up")
    u.add_argument("--nodes", type=int, default=4)
    u.add_argument("--gpus-per-node", type=int, default=4)
    u.set_defaults(func=up)
    sub.add_parser("down").set_defaults(func=down)
    sub.add_parser("status").set_defaults(func=status)
    args = p.parse_args()
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
