#!/usr/bin/env python3
"""A real local Kubernetes cluster: ``make cluster-up``.

etcd, kube-apiserver, kube-controller-manager and kube-scheduler with generated certificates,
service-account keys and kubeconfigs; one real node (``hack/node.py``: containerd, kubelet,
kube-proxy, a CNI bridge, CoreDNS) whose pods really run from locally built images; and kwok's
fake nodes for scale tests. Both kinds advertise ``nvidia.com/gpu``. The real node is tainted
``node.hadis.dev/local=true:NoSchedule``, so only pods that tolerate it land there. Binaries come
from ``hack/build-control-plane.sh`` (built from their Go modules at pinned versions, cached).

    python hack/cluster.py up [--nodes 4 --gpus-per-node 4 --real-gpus 5]  # ends with: export KUBECONFIG=PATH
    python hack/cluster.py up --no-real-node      # control plane and kwok only, all on loopback
    python hack/cluster.py load IMAGE...          # docker image -> the node's containerd
    python hack/cluster.py restart kube-apiserver # stop one part, start it again as it was (fault tests)
    python hack/cluster.py down                   # stops it all and removes what it made
    python hack/cluster.py leftovers              # what a stopped cluster left behind (exit 1 if any)
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

sys.path.insert(0, str(Path(__file__).resolve().parent))
import node  # hack/node.py

ROOT = Path(__file__).resolve().parents[1]
STATE = Path(os.environ.get("HADIS_CLUSTER_DIR", ROOT / ".cache" / "cluster"))


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


CONTROL_PLANE = ["kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubectl", "etcd", "kwok", "helm"]
REAL_NODE = ["kubelet", "kube-proxy", "coredns", "crictl"]


def binaries(real_node: bool) -> Path:
    want = CONTROL_PLANE + (REAL_NODE if real_node else [])
    out = subprocess.run(
        ["bash", str(ROOT / "hack" / "build-control-plane.sh"), *want], check=True, capture_output=True, text=True
    )
    return Path(out.stdout.strip().splitlines()[-1])


def openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True)


PKI_REV = "2"  # bump when the set of certificates or their names change (2: the real node's)


def make_pki(d: Path) -> None:
    d.mkdir(parents=True, exist_ok=True)
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "3650", "-subj", "/CN=hadis-local-ca",
            "-keyout", str(d / "ca.key"), "-out", str(d / "ca.crt"))  # fmt: skip
    # the API server is reached on loopback, on the node's bridge address, and as the
    # kubernetes Service (10.96.0.1) from pods
    (d / "san.cnf").write_text(
        f"[req]\ndistinguished_name=dn\n[dn]\n[ext]\nsubjectAltName=IP:127.0.0.1,IP:{node.NODE_IP},IP:10.96.0.1,"
        "DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,"
        "DNS:kubernetes.default.svc.cluster.local\nextendedKeyUsage=serverAuth,clientAuth\n"
    )
    (d / "kubelet-san.cnf").write_text(
        f"[req]\ndistinguished_name=dn\n[dn]\n[ext]\nsubjectAltName=IP:{node.NODE_IP},DNS:{node.NODE_NAME}\n"
        "extendedKeyUsage=serverAuth\n"
    )

    def cert(name: str, subj: str, san: str | None = None) -> None:
        openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", subj, "-keyout", str(d / f"{name}.key"),
                "-out", str(d / f"{name}.csr"))  # fmt: skip
        extra = ["-extfile", str(d / san), "-extensions", "ext"] if san else []
        openssl("x509", "-req", "-in", str(d / f"{name}.csr"), "-CA", str(d / "ca.crt"), "-CAkey", str(d / "ca.key"),
                "-CAcreateserial", "-days", "3650", "-out", str(d / f"{name}.crt"), *extra)  # fmt: skip

    cert("apiserver", "/CN=kube-apiserver", "san.cnf")
    cert("admin", "/O=system:masters/CN=hadis-admin", None)
    cert("controller-manager", "/CN=system:kube-controller-manager", None)
    cert("scheduler", "/CN=system:kube-scheduler", None)
    cert("apiserver-kubelet-client", "/CN=kube-apiserver-kubelet-client", None)
    cert("node", f"/O=system:nodes/CN=system:node:{node.NODE_NAME}", None)
    cert("kube-proxy", "/CN=system:kube-proxy", None)
    cert("kubelet", f"/CN={node.NODE_NAME}", "kubelet-san.cnf")
    openssl("genrsa", "-out", str(d / "sa.key"), "2048")
    openssl("rsa", "-in", str(d / "sa.key"), "-pubout", "-out", str(d / "sa.pub"))
    (d / "rev").write_text(PKI_REV)


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


def spawn(name: str, cmd: list[str], state: dict, mode: str = "w") -> None:
    logf = (STATE / f"{name}.log").open(mode)
    proc = subprocess.Popen(cmd, stdout=logf, stderr=subprocess.STDOUT, start_new_session=True)
    state["pids"][name] = proc.pid
    state.setdefault("cmds", {})[name] = cmd  # ``restart`` starts it again as it was
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
        if all(_alive(p) for p in state.get("pids", {}).values()) and state.get("real_node", False) == args.real_node:
            print(f"export KUBECONFIG={state['kubeconfig']}")
            return 0
        if state.get("real_node") and node.other_node(node.paths(STATE)):
            node.refuse_second_node(node.paths(STATE))  # tearing this one down would take the other's bridge
        down(args)
    t0 = time.monotonic()
    log("building or finding the cluster's binaries ...")
    bin_dir = binaries(args.real_node)
    STATE.mkdir(parents=True, exist_ok=True)
    pki = STATE / "pki"
    if not (pki / "rev").exists() or (pki / "rev").read_text() != PKI_REV:
        make_pki(pki)
    ports = {
        "etcd": free_port(),
        "etcd_peer": free_port(),
        "apiserver": free_port(),
        "kcm": free_port(),
        "sched": free_port(),
    }
    host = "127.0.0.1"
    if args.real_node:
        node.refuse_second_node(node.paths(STATE))
        # the API server must be reachable from pods: it listens on the bridge address too
        node.network_up()
        host = node.NODE_IP
    server = f"https://{host}:{ports['apiserver']}"
    admin = kubeconfig(pki, "admin", server)
    cm_cfg = kubeconfig(pki, "controller-manager", server)
    sched_cfg = kubeconfig(pki, "scheduler", server)
    state = {
        "pids": {},
        "ports": ports,
        "kubeconfig": str(admin),
        "bin_dir": str(bin_dir),
        "real_node": args.real_node,
        "started": time.time(),
    }
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
    node_flags = [
        "--authorization-mode=Node,RBAC",
        f"--kubelet-client-certificate={pki / 'apiserver-kubelet-client.crt'}",
        f"--kubelet-client-key={pki / 'apiserver-kubelet-client.key'}",
        # never a name the machine's resolver must look up (kubectl logs, exec, port-forward)
        "--kubelet-preferred-address-types=InternalIP",
    ]
    spawn("kube-apiserver", [
        str(bin_dir / "kube-apiserver"), f"--etcd-servers=http://127.0.0.1:{ports['etcd']}",
        f"--bind-address={host}", f"--advertise-address={host}", f"--secure-port={ports['apiserver']}",
        f"--tls-cert-file={pki / 'apiserver.crt'}", f"--tls-private-key-file={pki / 'apiserver.key'}",
        f"--client-ca-file={pki / 'ca.crt'}", f"--service-account-key-file={pki / 'sa.pub'}",
        f"--service-account-signing-key-file={pki / 'sa.key'}",
        "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
        f"--service-cluster-ip-range={node.SERVICE_CIDR}", "--allow-privileged=true",
        *(node_flags if args.real_node else ["--authorization-mode=RBAC"]),
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
    if args.real_node:
        real_node_up(bin_dir, pki, admin, server, state, args.real_gpus)
    wait_for(
        lambda: kubectl(bin_dir, admin, "get", "serviceaccount", "default", "-n", "default") != "",
        "the default service account (controller-manager)",
    )
    real = f" and node {node.NODE_NAME} x {args.real_gpus} nvidia.com/gpu (real pods)" if args.real_node else ""
    log(
        f"cluster up in {time.monotonic() - t0:.1f}s: {args.nodes} fake nodes x {args.gpus_per_node} "
        f"nvidia.com/gpu{real}; logs in {STATE}"
    )
    print(f"export KUBECONFIG={admin}")
    return 0


def real_node_up(bin_dir: Path, pki: Path, admin: Path, server: str, state: dict, gpus: int) -> None:
    """containerd, the pause image, kubelet, kube-proxy and CoreDNS; returns when the node is Ready."""
    t0 = time.monotonic()
    p = node.paths(STATE)
    for d in (p["containerd_root"], p["containerd_state"], p["kubelet_root"], p["images"]):
        d.mkdir(parents=True, exist_ok=True)
    node.model_cache()
    kubectl(bin_dir, admin, "create", "clusterrolebinding", "hadis-apiserver-kubelet",
            "--clusterrole=system:kubelet-api-admin", "--user=kube-apiserver-kubelet-client")  # fmt: skip
    node.cni_config(p["cni_conf"])
    node.containerd_config(p)
    spawn("containerd", ["containerd", f"--config={p['containerd_config']}"], state)
    wait_for(lambda: node.ctr(p, "version").returncode == 0, "containerd")
    node.pause_image()
    node.load_image(p, node.SANDBOX_IMAGE)
    node_cfg = kubeconfig(pki, "node", server)
    proxy_cfg = kubeconfig(pki, "kube-proxy", server)
    node.kubelet_config(p, pki)
    node.kube_proxy_config(p, proxy_cfg)
    node.corefile(p, admin)
    spawn("kubelet", [
        str(bin_dir / "kubelet"), f"--config={p['kubelet_config']}", f"--kubeconfig={node_cfg}",
        f"--root-dir={p['kubelet_root']}", f"--hostname-override={node.NODE_NAME}", f"--node-ip={node.NODE_IP}",
        f"--node-labels={node.TAINT_KEY}=true", "--v=1",
    ], state)  # fmt: skip
    spawn("kube-proxy", [str(bin_dir / "kube-proxy"), f"--config={p['kube_proxy_config']}"], state)
    spawn("coredns", [str(bin_dir / "coredns"), "-conf", str(p["corefile"])], state)

    def node_ready() -> bool:
        doc = json.loads(kubectl(bin_dir, admin, "get", "node", node.NODE_NAME, "-o", "json"))
        return any(c["type"] == "Ready" and c["status"] == "True" for c in doc["status"]["conditions"])

    wait_for(node_ready, f"node {node.NODE_NAME} Ready", timeout_s=180)
    node.advertise_gpus(lambda *a: kubectl(bin_dir, admin, *a), gpus)
    wait_for(lambda: urllib.request.urlopen(f"http://{node.DNS_IP}:8181/ready", timeout=1).status == 200, "CoreDNS")
    log(f"  node {node.NODE_NAME} Ready in {time.monotonic() - t0:.1f}s")


def load(args: argparse.Namespace) -> int:
    """Import docker images into the real node's containerd (as ``kind load docker-image``)."""
    state = json.loads((STATE / "state.json").read_text()) if (STATE / "state.json").exists() else {}
    if not state.get("real_node"):
        raise SystemExit("error: no cluster with a real node is running (make cluster-up)")
    p = node.paths(STATE)
    for ref in args.images:
        t0 = time.monotonic()
        if not node.load_image(p, ref):
            log(f"  {ref}: already on the node ({time.monotonic() - t0:.1f}s)")
    return 0


def leftovers(_args: argparse.Namespace) -> int:
    found = node.leftovers(STATE)
    for f in found:
        print(f)
    return 1 if found else 0


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
    if state.get("real_node"):
        node.teardown(STATE, Path(state["bin_dir"]), state["pids"])
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


def restart(args: argparse.Namespace) -> int:
    """Stop one part of the running cluster and start it again, as it was (its data kept): the
    fault tests restart the API server and etcd under traffic. Returns once it serves again."""
    path = STATE / "state.json"
    if not path.exists():
        raise SystemExit("error: no local cluster is running (make cluster-up)")
    state = json.loads(path.read_text())
    cmd = state.get("cmds", {}).get(args.name)
    if cmd is None:
        raise SystemExit(f"error: cannot restart {args.name}: one of {', '.join(state.get('cmds', {}))}")
    t0 = time.monotonic()
    pid = state["pids"][args.name]
    if _alive(pid):
        os.killpg(pid, signal.SIGTERM)
    end = time.monotonic() + 30
    while _alive(pid) and time.monotonic() < end:
        time.sleep(0.1)
    if _alive(pid):
        os.killpg(pid, signal.SIGKILL)
    stopped = time.monotonic() - t0
    time.sleep(args.down_seconds)
    spawn(args.name, cmd, state, mode="a")
    bin_dir, admin = Path(state["bin_dir"]), Path(state["kubeconfig"])
    if args.name == "etcd":
        port = state["ports"]["etcd"]
        wait_for(lambda: urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1).status == 200, "etcd")
    # every restart ends when the API server serves again (on etcd too: it must reconnect)
    wait_for(lambda: kubectl(bin_dir, admin, "get", "--raw=/readyz").strip() == "ok", "kube-apiserver")
    log(f"{args.name} restarted: stopped in {stopped:.1f}s, down {time.monotonic() - t0:.1f}s in all")
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
    u.add_argument("--real-node", action=argparse.BooleanOptionalAction, default=True,
                   help="also start the real node (containerd, kubelet, kube-proxy, CNI, CoreDNS)")  # fmt: skip
    u.add_argument("--real-gpus", type=int, default=5,
                   help="nvidia.com/gpu the real node advertises (the demo: a budget of 4, maxSurge 1)")  # fmt: skip
    u.set_defaults(func=up)
    ld = sub.add_parser("load", help="import docker images into the real node's containerd")
    ld.add_argument("images", nargs="+")
    ld.set_defaults(func=load)
    rs = sub.add_parser("restart", help="stop one part (kube-apiserver, etcd, ...) and start it again as it was")
    rs.add_argument("name")
    rs.add_argument("--down-seconds", type=float, default=0.0, help="stay stopped this long before starting")
    rs.set_defaults(func=restart)
    sub.add_parser("leftovers").set_defaults(func=leftovers)
    sub.add_parser("down").set_defaults(func=down)
    sub.add_parser("status").set_defaults(func=status)
    args = p.parse_args()
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
