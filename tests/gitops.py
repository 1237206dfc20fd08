"""What GitOps controllers say of a DiffusionCascade, from the tools they use: the shipped Argo CD
health check run by Lua 5.1 (with lua-cjson decoding the object, as Argo CD's Lua runtime is
handed it) and kstatus, the sigs.k8s.io/cli-utils library Flux and Helm 4 read status with
(built by hack/gitops-tools.sh).

``judged`` also records the object it was given under ``$HADIS_RECORD_STATUSES`` (a folder):
that is how tests/data/cascade-statuses/ was made from real cascades of the e2e suites."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HEALTH_LUA = ROOT / "charts" / "hadis-operator" / "argocd" / "health.lua"
KSTATUS = ROOT / ".cache" / "tools" / "kstatus"
RUNNER = """
local cjson = require("cjson")
obj = cjson.decode(io.read("*a"))
local hs = dofile(os.getenv("HEALTH_LUA"))
io.write(cjson.encode({status = hs.status, message = hs.message}))
"""


def _need(path: str | Path, what: str) -> str:
    found = shutil.which(str(path)) if not Path(path).is_absolute() else (str(path) if Path(path).exists() else None)
    if not found:
        raise AssertionError(f"{what} is missing: run `bash hack/gitops-tools.sh` (make test does)")
    return found


def argocd_health(obj: dict) -> dict:
    """``{"status": ..., "message": ...}`` as Argo CD's health check reports it."""
    lua = _need("lua5.1", "lua5.1 (Debian lua5.1, lua-cjson)")
    env = {**os.environ, "HEALTH_LUA": str(HEALTH_LUA)}
    out = subprocess.run(
        [lua, "-e", RUNNER], input=json.dumps(obj), capture_output=True, text=True, env=env, check=False
    )
    if out.returncode != 0:
        raise AssertionError(f"health.lua failed: {out.stderr}")
    return json.loads(out.stdout)


def kstatus(obj: dict) -> dict:
    """``{"status": "Current|InProgress|Failed|...", "message": ...}`` as kstatus computes it."""
    out = subprocess.run(
        [_need(KSTATUS, "kstatus")], input=json.dumps(obj), capture_output=True, text=True, check=False
    )
    if out.returncode != 0:
        raise AssertionError(f"kstatus failed: {out.stderr}")
    return json.loads(out.stdout)


def judged(obj: dict, label: str) -> tuple[dict, dict]:
    """(Argo CD's health, kstatus's status) of a live object; recorded when asked to."""
    record = os.environ.get("HADIS_RECORD_STATUSES")
    if record:
        slim = {k: obj[k] for k in ("apiVersion", "kind", "metadata", "spec", "status") if k in obj}
        meta = slim["metadata"]
        slim["metadata"] = {k: meta[k] for k in ("name", "namespace", "generation") if k in meta}
        Path(record).mkdir(parents=True, exist_ok=True)
        name = re.sub(r"[^a-z0-9-]+", "-", label.lower()).strip("-")
        (Path(record) / f"{name}.json").write_text(json.dumps(slim, indent=1, sort_keys=True) + "\n")
    return argocd_health(obj), kstatus(obj)
