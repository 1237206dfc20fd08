"""The local cluster's real node: containerd, kubelet, kube-proxy, a CNI bridge and CoreDNS.

Used by ``hack/cluster.py``. Pod traffic never leaves this machine:

- pods live on the bridge ``hadis-br0`` (``10.85.0.0/24``, gateway ``10.85.0.1``, which is also
  the node's InternalIP and where the API server and CoreDNS listen);
- ``FORWARD`` drops anything from the bridge to another interface and accepts bridge to bridge
  (docker sets the policy to DROP); there is no masquerade;
- the service range is routed to the bridge, so an unknown ClusterIP never takes the default
  route; CoreDNS answers ``cluster.local`` only (no upstream).

The node is tainted ``node.hadis.dev/local=true:NoSchedule`` and labelled
``node.hadis.dev/local=true``: pods that must really run tolerate the taint, pods meant for
kwok's fake nodes (scale tests) cannot land on it. It advertises ``nvidia.com/gpu`` as an
extended resource; no device reaches a pod, so tiny variants run on the CPU.

Images persist in ``~/.cache/hadis/node/containerd`` across clusters and clones; ``load``
imports a docker image the way ``kind load docker-image`` does, and skips it when the same
image ID is already there. ``teardown`` removes everything else it made.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

NODE_NAME = "hadis-node"
BRIDGE = "hadis-br0"
POD_CIDR = "10.85.0.0/24"
NODE_IP = "10.85.0.1"
SERVICE_CIDR = "10.96.0.0/16"
DNS_IP = NODE_IP  # CoreDNS runs on the node, beside the kubelet
TAINT_KEY = "node.hadis.dev/local"
SANDBOX_IMAGE = "registry.k8s.io/pause:3.10"
CACHE = Path(os.environ.get("HADIS_NODE_CACHE", Path.home() / ".cache" / "hadis" / "node"))
ROOT = Path(__file__).resolve().parents[1]
# The node's model weight cache (a cascade's spec.modelCache.hostPath, as in the tiny example):
# a fixed path, since cascades name it, owned by the images' user; kept like the image cache.
MODEL_CACHE = Path("/var/cache/hadis-node/models")
IMAGE_USER = 65532
DOCKER = os.environ.get("DOCKER", "/usr/bin/docker")


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def sh(*cmd: str, check: bool = True, stdin: bytes | None = None) -> subprocess.CompletedProcess:
    out = subprocess.run(cmd, input=stdin, capture_output=True, check=False)
    if check and out.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)}: {out.stderr.decode(errors='replace').strip()}")
    return out


def paths(state: Path) -> dict[str, Path]:
    # Socket paths must stay under 108 bytes; the CI clone's path is not known in advance.
    run = Path("/run/hadis-node")
    return {
        "containerd_root": CACHE / "containerd",
        "containerd_state": run / "containerd",
        "containerd_sock": run / "containerd.sock",
        "containerd_config": state / "containerd.toml",
        "cni_conf": state / "cni",
        "kubelet_root": CACHE / "kubelet",
        "kubelet_config": state / "kubelet.yaml",
        "kube_proxy_config": state / "kube-proxy.yaml",
        "corefile": state / "Corefile",
        "resolv": state / "resolv.conf",
        "images": CACHE / "images",
    }


# ---------------------------------------------------------------- network


FORWARD_RULES = (
    ["-i", BRIDGE, "!", "-o", BRIDGE, "-j", "DROP"],  # nothing from pods leaves through another interface
    ["-i", BRIDGE, "-o", BRIDGE, "-j", "ACCEPT"],  # pod to pod, and service traffic DNATed back to the bridge
)


def network_up() -> None:
    if sh("ip", "link", "show", BRIDGE, check=False).returncode != 0:
        sh("ip", "link", "add", BRIDGE, "type", "bridge")
    sh("ip", "addr", "replace", f"{NODE_IP}/24", "dev", BRIDGE)
    sh("ip", "link", "set", BRIDGE, "up")
    sh("ip", "route", "replace", SERVICE_CIDR, "dev", BRIDGE, "src", NODE_IP)
    for rule in FORWARD_RULES:  # inserted in order at the top: ACCEPT ends up above DROP
        if sh("iptables", "-C", "FORWARD", *rule, check=False).returncode != 0:
            sh("iptables", "-I", "FORWARD", "1", *rule)
    # bridged frames must traverse iptables, or a reply from a pod behind a ClusterIP is not un-NATed
    bridge_nf = Path("/proc/sys/net/bridge/bridge-nf-call-iptables")
    if not bridge_nf.exists():
        sh("modprobe", "br_netfilter", check=False)
    if bridge_nf.exists() and bridge_nf.read_text().strip() != "1":
        bridge_nf.write_text("1")


def network_down() -> None:
    for rule in FORWARD_RULES:
        while sh("iptables", "-C", "FORWARD", *rule, check=False).returncode == 0:
            sh("iptables", "-D", "FORWARD", *rule, check=False)
    sh("ip", "route", "del", SERVICE_CIDR, check=False)
    sh("ip", "link", "del", BRIDGE, check=False)


def cni_config(dir_: Path) -> None:
    dir_.mkdir(parents=True, exist_ok=True)
    conf = {
        "cniVersion": "1.0.0",
        "name": "hadis",
        "plugins": [
            {
                "type": "bridge",
                "bridge": BRIDGE,
                "isGateway": True,
                "ipMasq": False,
                "hairpinMode": True,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": POD_CIDR, "gateway": NODE_IP}]],
                    "routes": [{"dst": "0.0.0.0/0"}],
                    "dataDir": str(Path("/run/hadis-node/cni-ipam")),
                },
            },
            {"type": "loopback"},
        ],
    }
    (dir_ / "10-hadis.conflist").write_text(json.dumps(conf, indent=2))


# ---------------------------------------------------------------- containerd


def other_node(p: dict[str, Path]) -> list[int]:
    """The containerd processes of a real node that another checkout (a CI clone beside the
    developer's) started: their configs are in another state folder, their socket is the same."""
    own = str(p["containerd_config"])
    others = []
    for pid in _pids_of(r"containerd --config=[^ ]*/containerd\.toml"):
        with contextlib.suppress(OSError):
            if f"--config={own}".encode() not in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0"):
                others.append(pid)
    return others


def refuse_second_node(p: dict[str, Path]) -> None:
    """One real node per machine: its bridge, addresses and /run paths are fixed, so a second
    would take the first's bridge address, and its teardown would delete the first's bridge."""
    if _pids_of(str(p["containerd_sock"])) or other_node(p):
        raise SystemExit(
            "error: another local cluster's real node is running on this machine; stop it first "
            "(python hack/cluster.py down, from the checkout that started it)"
        )


def containerd_config(p: dict[str, Path]) -> None:
    p["containerd_config"].write_text(f"""version = 2
root = "{p["containerd_root"]}"
state = "{p["containerd_state"]}"
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs",
                    "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper"]
[grpc]
  address = "{p["containerd_sock"]}"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{SANDBOX_IMAGE}"
  # root here lacks CAP_SYS_RESOURCE: without this every sandbox fails in runc
  restrict_oom_score_adj = true
  enable_selinux = false
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "{p["cni_conf"]}"
""")


def ctr(p: dict[str, Path], *args: str, stdin: bytes | None = None, check: bool = True) -> subprocess.CompletedProcess:
    return sh("ctr", f"--address={p['containerd_sock']}", "-n", "k8s.io", *args, stdin=stdin, check=check)


def image_id(ref: str) -> str | None:
    out = sh(DOCKER, "image", "inspect", "-f", "{{.Id}}", ref, check=False)
    return out.stdout.decode().strip() or None if out.returncode == 0 else None


def model_cache() -> None:
    MODEL_CACHE.mkdir(parents=True, exist_ok=True)
    os.chown(MODEL_CACHE, IMAGE_USER, IMAGE_USER)


def tag_image(p: dict[str, Path], ref: str, new_ref: str) -> None:
    """A second name for an image already in the node (a "new" image to roll out, for free)."""
    ctr(p, "images", "tag", "--force", ref, new_ref)


def load_image(p: dict[str, Path], ref: str) -> bool:
    """Import a docker image into the node's containerd unless that image ID is already there."""
    docker_id = image_id(ref)
    if docker_id is None:
        raise RuntimeError(f"no docker image {ref}; build it first (make images)")
    stamp = p["images"] / (ref.replace("/", "_").replace(":", "_") + ".id")
    present = ctr(p, "images", "ls", "-q", check=False).stdout.decode().split()
    if stamp.exists() and stamp.read_text() == docker_id and ref in present:
        return False
    t0 = time.monotonic()
    # Keep the image this tag pointed at referenced until the new one is unpacked: otherwise
    # containerd's GC removes its snapshots while the import is reusing them as parents
    # ("parent snapshot ... does not exist", seen on a re-import of a rebuilt image).
    keep = f"{ref}-hadis-previous"
    if ref in present:
        ctr(p, "images", "tag", "--force", ref, keep, check=False)
    try:
        save = subprocess.Popen([DOCKER, "save", ref], stdout=subprocess.PIPE)
        imp = subprocess.run(
            ["ctr", f"--address={p['containerd_sock']}", "-n", "k8s.io", "images", "import", "-"],
            stdin=save.stdout,
            capture_output=True,
            check=False,
        )
        save.wait()
    finally:
        ctr(p, "images", "rm", keep, check=False)
    if imp.returncode != 0 or save.returncode != 0:
        raise RuntimeError(f"import of {ref} failed: {imp.stderr.decode(errors='replace').strip()}")
    discard_layers(p, ref)
    p["images"].mkdir(parents=True, exist_ok=True)
    stamp.write_text(docker_id)
    log(f"  loaded {ref} into the node in {time.monotonic() - t0:.1f}s")
    return True


def discard_layers(p: dict[str, Path], ref: str) -> None:
    """Drop the compressed-or-not layer blobs once unpacked: containers run from the snapshots,
    and keeping both would hold the worker image twice (as CRI's discard_unpacked_layers does
    for pulled images). The manifest and config stay, so the image is still listed and used."""
    refs = {ln.split()[0]: ln.split()[2] for ln in ctr(p, "images", "ls").stdout.decode().splitlines()[1:] if ln}
    digest = refs.get(ref) or refs.get(f"docker.io/{ref}")
    if not digest:
        return
    manifest = json.loads(ctr(p, "content", "get", digest).stdout)
    if "manifests" in manifest:  # an index: its first manifest is this platform's
        manifest = json.loads(ctr(p, "content", "get", manifest["manifests"][0]["digest"]).stdout)
    for layer in manifest.get("layers", []):
        ctr(p, "content", "rm", layer["digest"], check=False)


def pause_image() -> None:
    """The sandbox image: a static C program FROM scratch, tagged as containerd's config names it."""
    if image_id(SANDBOX_IMAGE):
        return
    build = CACHE / "pause-build"
    build.mkdir(parents=True, exist_ok=True)
    sh("gcc", "-static", "-O2", "-o", str(build / "pause"), str(ROOT / "hack" / "pause" / "pause.c"))
    shutil.copy(ROOT / "hack" / "pause" / "Dockerfile", build / "Dockerfile")
    sh(DOCKER, "build", "-q", "-t", SANDBOX_IMAGE, str(build))


# ---------------------------------------------------------------- kubelet, kube-proxy, CoreDNS


def kubelet_config(p: dict[str, Path], pki: Path) -> None:
    p["resolv"].write_text("# no upstream: pods resolve cluster names only\n")
    cfg = {
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        "address": NODE_IP,
        "port": 10250,
        "readOnlyPort": 0,
        "failCgroupV1": False,  # these VMs have cgroup v1
        "cgroupDriver": "cgroupfs",
        "failSwapOn": False,
        "containerRuntimeEndpoint": f"unix://{p['containerd_sock']}",
        "authentication": {
            "anonymous": {"enabled": False},
            "webhook": {"enabled": True},
            "x509": {"clientCAFile": str(pki / "ca.crt")},
        },
        "authorization": {"mode": "Webhook"},
        "clusterDNS": [DNS_IP],
        "clusterDomain": "cluster.local",
        "resolvConf": str(p["resolv"]),
        "tlsCertFile": str(pki / "kubelet.crt"),
        "tlsPrivateKeyFile": str(pki / "kubelet.key"),
        # nothing can be pulled again: never garbage-collect images, never evict for disk
        "imageGCHighThresholdPercent": 100,
        "imageGCLowThresholdPercent": 99,
        "evictionHard": {"memory.available": "100Mi", "nodefs.available": "1%", "imagefs.available": "1%"},
        "registerWithTaints": [{"key": TAINT_KEY, "value": "true", "effect": "NoSchedule"}],
        "serializeImagePulls": False,
        "maxPods": 60,
        "syncFrequency": "10s",
        "fileCheckFrequency": "10s",
        "nodeStatusUpdateFrequency": "5s",
    }
    p["kubelet_config"].write_text(json.dumps(cfg, indent=2))


def kube_proxy_config(p: dict[str, Path], kubeconfig: Path) -> None:
    cfg = {
        "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
        "kind": "KubeProxyConfiguration",
        "mode": "iptables",
        "clientConnection": {"kubeconfig": str(kubeconfig)},
        "hostnameOverride": NODE_NAME,
        "clusterCIDR": POD_CIDR,
        "bindAddress": "127.0.0.1",
        "healthzBindAddress": "127.0.0.1:10256",
        "metricsBindAddress": "127.0.0.1:10249",
        "nodePortAddresses": [f"{NODE_IP}/32"],
        "conntrack": {"maxPerCore": 0, "min": 0},  # it may not change sysctls here
        "iptables": {"localhostNodePorts": False},
    }
    p["kube_proxy_config"].write_text(json.dumps(cfg, indent=2))


def corefile(p: dict[str, Path], kubeconfig: Path) -> None:
    p["corefile"].write_text(f""".:53 {{
    bind {DNS_IP}
    errors
    health {DNS_IP}:8053
    ready {DNS_IP}:8181
    kubernetes cluster.local in-addr.arpa ip6.arpa {{
        kubeconfig {kubeconfig} hadis-local
        pods insecure
        fallthrough in-addr.arpa ip6.arpa
        ttl 5
    }}
    cache 5
}}
""")


def advertise_gpus(kubectl, gpus: int) -> None:
    patch = [{"op": "add", "path": "/status/capacity/nvidia.com~1gpu", "value": str(gpus)}]
    kubectl("patch", "node", NODE_NAME, "--subresource=status", "--type=json", "-p", json.dumps(patch))


# ---------------------------------------------------------------- teardown


def _mounts_under(prefixes: list[str]) -> list[str]:
    out = []
    for line in Path("/proc/mounts").read_text().splitlines():
        target = line.split()[1].replace("\\040", " ")
        if any(target == p or target.startswith(p.rstrip("/") + "/") for p in prefixes):
            out.append(target)
    return sorted(set(out), key=len, reverse=True)


def _pids_of(pattern: str) -> list[int]:
    out = sh("pgrep", "-f", pattern, check=False).stdout.decode().split()
    return [int(x) for x in out if int(x) != os.getpid()]


def leftovers(state: Path) -> list[str]:
    """What a torn-down node must not leave behind; empty when clean."""
    p = paths(state)
    found: list[str] = []
    prefixes = [str(p["kubelet_root"]), "/run/hadis-node", str(p["containerd_root"])]
    found += [f"mount {m}" for m in _mounts_under(prefixes)]
    netns = Path("/var/run/netns")
    if netns.exists():
        found += [f"netns {n.name}" for n in netns.iterdir() if n.name.startswith("cni-")]
    for table in ("filter", "nat", "mangle"):
        rules = sh("iptables-save", "-t", table, check=False).stdout.decode()
        found += [f"iptables {table} {ln}" for ln in rules.splitlines() if ln.startswith(":KUBE-")]
        found += [f"iptables {table} {ln}" for ln in rules.splitlines() if BRIDGE in ln]
    if sh("ip", "link", "show", BRIDGE, check=False).returncode == 0:
        found.append(f"bridge {BRIDGE}")
    if SERVICE_CIDR.split("/")[0] in sh("ip", "route", "show", check=False).stdout.decode():
        found.append(f"route {SERVICE_CIDR}")
    found += [f"veth {ln}" for ln in sh("ip", "-o", "link", "show", "master", BRIDGE, check=False).stdout.decode()
              .splitlines()]  # fmt: skip
    found += [f"process {pid}" for pid in _pids_of(str(p["containerd_sock"]))]
    return found


def teardown(state: Path, bin_dir: Path | None, pids: dict[str, int]) -> None:
    """Stop pods through the CRI, then the node's daemons; unmount and delete what they made."""
    p = paths(state)
    sock = f"unix://{p['containerd_sock']}"
    kubelet = pids.get("kubelet")
    if kubelet:  # first the kubelet, so it does not restart what is being removed
        _kill_group(kubelet)
    if bin_dir and (bin_dir / "crictl").exists() and p["containerd_sock"].exists():
        crictl = [str(bin_dir / "crictl"), f"--runtime-endpoint={sock}", "--timeout=20s"]
        sh(*crictl, "rmp", "--all", "--force", check=False)
    for name in ("kube-proxy", "coredns", "containerd"):
        if pids.get(name):
            _kill_group(pids[name])
    for pid in _pids_of(str(p["containerd_sock"])):  # shims outlive containerd by design
        _kill(pid)
    if bin_dir and (bin_dir / "kube-proxy").exists():
        sh(str(bin_dir / "kube-proxy"), "--cleanup", check=False)
    for table in ("filter", "nat", "mangle"):  # what --cleanup leaves (chains of a newer layout)
        rules = sh("iptables-save", "-t", table, check=False).stdout.decode()
        for ln in rules.splitlines():
            if ln.startswith("-A") and ("KUBE-" in ln.split()[1] or " KUBE-" in ln):
                sh("iptables", "-t", table, *ln.replace("-A", "-D", 1).split(), check=False)
        for ln in rules.splitlines():
            if ln.startswith(":KUBE-"):
                chain = ln[1:].split()[0]
                sh("iptables", "-t", table, "-F", chain, check=False)
                sh("iptables", "-t", table, "-X", chain, check=False)
    for m in _mounts_under([str(p["kubelet_root"]), "/run/hadis-node", str(p["containerd_root"])]):
        sh("umount", "-l", m, check=False)
    netns = Path("/var/run/netns")
    if netns.exists():
        for n in netns.iterdir():
            if n.name.startswith("cni-"):
                sh("ip", "netns", "del", n.name, check=False)
    for ln in sh("ip", "-o", "link", "show", "master", BRIDGE, check=False).stdout.decode().splitlines():
        sh("ip", "link", "del", ln.split(":")[1].strip().split("@")[0], check=False)
    network_down()
    shutil.rmtree("/run/hadis-node", ignore_errors=True)
    # pod volumes and logs go; the image store (containerd root) stays as a cache
    shutil.rmtree(p["kubelet_root"], ignore_errors=True)
    shutil.rmtree(Path("/var/log/pods"), ignore_errors=True)
    shutil.rmtree(Path("/var/log/containers"), ignore_errors=True)


def _kill(pid: int) -> None:
    with contextlib.suppress(OSError):
        os.kill(pid, signal.SIGKILL)


def _kill_group(pid: int, grace_s: float = 10.0) -> None:
    try:
        os.killpg(pid, signal.SIGTERM)
    except OSError:
        return
    end = time.monotonic() + grace_s
    while time.monotonic() < end:
        try:
            os.kill(pid, 0)
        except OSError:
            return
        time.sleep(0.1)
    with contextlib.suppress(OSError):
        os.killpg(pid, signal.SIGKILL)
