"""The DiffusionCascade CRD on a real API server: install, explain, validation by the server."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CRD = ROOT / "crds" / "diffusioncascades.serving.hadis.dev.yaml"
EXAMPLES = ROOT / "crds" / "examples"


def test_explain_teaches_the_api(crd):
    out = " ".join(crd("explain", "diffusioncascade.spec.models").split())
    assert "ordered from lightest to heaviest" in out
    assert "workerSpec" in out
    assert "latency SLO of one request" in " ".join(crd("explain", "dcas.spec.sloSeconds").split())


def test_examples_are_accepted_and_show_printer_columns(crd, namespace):
    for name in ("cascade-e1.yaml", "cascade-tiny.yaml"):
        crd("apply", "-n", namespace, "-f", str(EXAMPLES / name))
    out = crd("get", "dcas", "-n", namespace)
    header = out.splitlines()[0].split()
    assert header[:5] == ["NAME", "PAIR", "REPLICAS", "SLO", "READY"]
    doc = json.loads(crd("get", "dcas", "tiny", "-n", namespace, "-o", "json"))
    # defaults filled in by the API server from the schema
    assert doc["spec"]["gpuBudget"]["min"] == 2
    planner = doc["spec"]["planner"]
    assert (planner["intervalSeconds"], planner["policy"]) == (10, "hadis")
    assert planner["objective"] == {"spareGpus": "Keep"}  # the tiny demo spends its budget
    e1 = json.loads(crd("get", "dcas", "e1", "-n", namespace, "-o", "json"))
    assert e1["spec"]["planner"]["objective"] == {"spareGpus": "Release"}  # the default
    assert planner["surge"] == {
        "enabled": True,
        "checkSeconds": 2,
        "window": "1m",  # four scrapes of a 15 s interval
        "riseRatio": 1.25,
        "minRiseRps": 1,
        "fallRatio": 0.8,
        "cooldownSeconds": 2,
        "scaleDownDelaySeconds": 60,
    }


@pytest.mark.parametrize(
    ("patch", "message"),
    [
        (
            {"models": [{"name": "a", "workerSpec": "a"}, {"name": "a", "workerSpec": "a"}]},
            "model names must be unique",
        ),
        ({"models": [{"name": "a", "workerSpec": "a"}]}, "should have at least 2 items"),
        ({"sloSeconds": 0}, "sloSeconds"),
        ({"gpuBudget": {"min": 4, "max": 2}}, "gpuBudget.max must be at least gpuBudget.min"),
        ({"gpuBudget": {"min": 0, "max": 1}}, "gpuBudget.max must be at least 2"),
        ({"router": {"scoring": "learned"}}, "router.scoring learned needs router.modelConfigMapName"),
        ({"planner": {"policy": "fastest"}}, "Unsupported value"),
        ({"planner": {"surge": {"riseRatio": 1.0}}}, "spec.planner.surge.riseRatio: Invalid value"),
        ({"planner": {"surge": {"fallRatio": 1.5}}}, "spec.planner.surge.fallRatio: Invalid value"),
        ({"planner": {"surge": {"window": "soon"}}}, "spec.planner.surge.window"),
        (
            {"modelCache": {"hostPath": {"path": "/a"}, "persistentVolumeClaim": {"claimName": "w"}}},
            "modelCache needs exactly one of hostPath and persistentVolumeClaim",
        ),
        ({"modelCache": {"hostPath": {"path": "relative"}}}, "spec.modelCache.hostPath.path"),
        (
            {"planner": {"objective": {"maxFid": 23.5, "spareGpus": "Keep"}}},
            "planner.objective.maxFid asks for the fewest GPUs: it cannot be combined with spareGpus: Keep",
        ),
        ({"planner": {"objective": {"maxFid": 0}}}, "spec.planner.objective.maxFid"),
        ({"planner": {"objective": {"spareGpus": "Hoard"}}}, "spec.planner.objective.spareGpus"),
        ({"router": {"resources": {"limits": {"memory": "lots"}}}}, "spec.router.resources.limits.memory"),
        ({"router": {"auth": {"requestsPerMinute": 60}}}, "spec.router.auth.apiKeySecretName: Required value"),
        ({"router": {"auth": {"apiKeySecretName": "Team_A"}}}, "spec.router.auth.apiKeySecretName"),
        ({"router": {"auth": {"apiKeySecretName": "k", "requestsPerMinute": 0}}}, "spec.router.auth.requestsPerMinute"),
        ({"router": {"allowFrom": []}}, "spec.router.allowFrom"),
        ({"router": {"allowFrom": [{"ipBlock": {}}]}}, "spec.router.allowFrom[0].ipBlock.cidr: Required value"),
        (
            {
                "models": [
                    {"name": "sd3.5-large", "workerSpec": "tiny-light"},
                    {"name": "sd3-5-large", "workerSpec": "x"},
                ]
            },
            "model names must differ once dots become dashes",
        ),
        (
            {
                "models": [
                    {"name": "tiny-light", "workerSpec": "tiny-light", "gpusPerReplica": 3},
                    {"name": "tiny-heavy", "workerSpec": "tiny-heavy", "gpusPerReplica": 3},
                ],
                "gpuBudget": {"min": 0, "max": 4},
            },
            "gpuBudget.max must hold one replica of two models",
        ),
        (
            {
                "models": [
                    {"name": "tiny-light", "workerSpec": "tiny-light"},
                    {"name": "router", "workerSpec": "tiny-heavy"},
                ]
            },
            "a model may not be named router",
        ),
        *[
            (
                {
                    "models": [
                        {"name": "tiny-light", "workerSpec": "tiny-light", "revision": rev},
                        {"name": "tiny-heavy", "workerSpec": "tiny-heavy"},
                    ]
                },
                "revision must have no '.' or '..' segment",
            )
            for rev in ("..", ".", "v1/../..", "./v1")
        ],
        *[
            ({"prometheus": {"url": url}}, "spec.prometheus.url")
            for url in (
                "http://169.254.169.254/latest/meta-data/#",
                "http://p:9090/?x=",
                "http://u:p@p:9090",
                "file:///etc",
            )
        ],
    ],
)
def test_invalid_cascades_are_refused_by_the_api_server(crd, namespace, patch, message):
    import yaml

    doc = yaml.safe_load((EXAMPLES / "cascade-tiny.yaml").read_text())
    doc["spec"].update(patch)
    with pytest.raises(subprocess.CalledProcessError) as err:
        crd("apply", "-n", namespace, "-f", "-", stdin=json.dumps(doc))
    assert message in err.value.stderr, err.value.stderr


def test_shipped_invalid_example_is_refused(crd, namespace):
    with pytest.raises(subprocess.CalledProcessError) as err:
        crd("apply", "-n", namespace, "-f", str(EXAMPLES / "invalid-duplicate-models.yaml"))
    assert "model names must be unique" in err.value.stderr


@pytest.mark.parametrize(
    "name, message",
    [
        ("a" * 50, "metadata.name and each spec.models[].name may have at most 62 characters together"),
        ("a" * 57, "metadata.name may have at most 56 characters"),
        ("9lives", "metadata.name must start with a letter"),
        ("e1.prod", "metadata.name must start with a letter and hold only a-z, 0-9 and '-'"),
    ],
)
def test_names_that_cannot_name_the_objects_are_refused(crd, namespace, name, message):
    """A worker Service is <cascade>-<model>: a name the API server would refuse for it is refused
    at the cascade, where the user sees why (the 50-character name made a 71-character Service)."""
    import yaml

    doc = yaml.safe_load((EXAMPLES / "cascade-e1.yaml").read_text())
    doc["metadata"]["name"] = name
    with pytest.raises(subprocess.CalledProcessError) as err:
        crd("apply", "-n", namespace, "-f", "-", stdin=json.dumps(doc))
    assert message in " ".join(err.value.stderr.split()), err.value.stderr
    longest = max(len(m["name"]) for m in doc["spec"]["models"])
    doc["metadata"]["name"] = "a" * (62 - longest)  # the longest name that fits is accepted
    crd("apply", "-n", namespace, "-f", "-", stdin=json.dumps(doc))


def test_the_charts_admission_policy_refuses_what_the_policy_forbids(crd, namespace, helm_bin, tmp_path):
    """The chart's policy values rendered as a ValidatingAdmissionPolicy and applied to the API
    server: each broken rule is refused at apply time with the rule named; a cascade within the
    policy is accepted; a namespace outside watchNamespaces is not bound."""
    import time

    import yaml

    policy = {
        "imagePrefixes": ["ghcr.io/hadis-serving/"],
        "hostPathRoots": ["/var/cache/hadis-node"],
        "prometheusUrlPrefixes": ["http://prometheus-operated:9090"],
        "tolerationKeys": ["node.hadis.dev/local"],
        "requireApiKeys": True,
    }
    values = tmp_path / "values.yaml"
    values.write_text(yaml.safe_dump({"policy": policy, "watchNamespaces": [namespace]}))
    rendered = subprocess.run(
        [helm_bin, "template", f"vap-{namespace[-6:]}", str(ROOT / "charts" / "hadis-operator"), "-n", "hadis-system",
         "--kube-version", "1.34.2", "-f", str(values), "--show-only", "templates/admissionpolicy.yaml"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    good = yaml.safe_load((EXAMPLES / "cascade-tiny.yaml").read_text())
    good["spec"]["router"]["auth"] = {"apiKeySecretName": "tiny-keys"}

    def dry_run(doc: dict, ns: str = namespace) -> str:
        """'' when the API server would accept ``doc``, else its refusal."""
        try:
            crd("apply", "--dry-run=server", "-n", ns, "-f", "-", stdin=json.dumps(doc))
        except subprocess.CalledProcessError as e:
            return " ".join(e.stderr.split())
        return ""

    def bad(**spec) -> dict:
        doc = json.loads(json.dumps(good))
        for key, value in spec.items():
            doc["spec"][key] = value
        return doc

    unkeyed = bad(router={"resources": good["spec"]["router"]["resources"]})
    crd("apply", "-f", "-", stdin=rendered)
    try:
        end = time.monotonic() + 60  # the API server compiles a new policy within moments
        while not dry_run(unkeyed):
            assert time.monotonic() < end, "the admission policy never took effect"
            time.sleep(0.5)
        assert dry_run(good) == ""
        assert "policy requireApiKeys asks every router for API keys" in dry_run(unkeyed)
        assert "image evil.io/miner:1: policy imagePrefixes allows ghcr.io/hadis-serving/" in dry_run(
            bad(workerImage="evil.io/miner:1")
        )
        for path in ("/etc", "/var/cache/hadis-node/../../etc", "/var/cache/hadis-node-other"):
            refusal = dry_run(bad(modelCache={"hostPath": {"path": path}}))
            assert f"spec.modelCache.hostPath.path {path}: policy hostPathRoots allows /var/cache/hadis-node" in refusal
        assert dry_run(bad(modelCache={"hostPath": {"path": "/var/cache/hadis-node/team-a"}})) == ""
        refusal = dry_run(bad(prometheus={"url": "http://prometheus-operated:9090.evil.example"}))
        assert "policy prometheusUrlPrefixes allows http://prometheus-operated:9090" in refusal
        refusal = dry_run(bad(placement={"tolerations": [{"operator": "Exists"}]}))
        assert "tolerations key(s) (none: every taint): policy tolerationKeys allows node.hadis.dev/local" in refusal
        crd("create", "namespace", f"{namespace}-x")
        try:
            assert dry_run(unkeyed, f"{namespace}-x") == ""  # not a watched namespace: not bound
        finally:
            crd("delete", "namespace", f"{namespace}-x", "--wait=false")
    finally:
        crd("delete", "-f", "-", stdin=rendered)
