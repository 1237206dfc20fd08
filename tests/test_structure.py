"""The code's shape, checked as farm-studio would: no import cycle in src/, short functions in
the operator and the router, one typed spec whose defaults are the CRD's."""

from __future__ import annotations

import ast
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"
CRD = ROOT / "crds" / "diffusioncascades.serving.hadis.dev.yaml"


def _module(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """Module -> the project modules it imports (at any depth of the file: a function's import
    is an edge too)."""
    modules = {_module(p): p for p in SRC.rglob("*.py")}
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for mod, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text())):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            for name in names:
                if name in modules and name != mod:
                    graph[mod].add(name)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan's)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_no_import_cycle_in_src():
    graph = import_graph()
    assert len(graph) > 50  # the walk found the package
    assert cycles(graph) == []


def test_the_parts_meet_only_through_the_wire_contract():
    """The workers and the profiler agree with the operator and the router through
    ``hadis.contract`` (labels, ports, keys, tensor names, paths, images), never by importing
    them; the contract imports no part."""
    graph = import_graph()
    parts = ("hadis.operator", "hadis.router")
    for mod, deps in graph.items():
        if mod.startswith(("hadis.workers", "hadis.profiling", "hadis.contract")):
            assert not [d for d in deps if d.startswith(parts)], (mod, deps)
    assert graph["hadis.contract"] <= {"hadis"}


def test_the_cycle_check_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


@pytest.mark.parametrize("part", ["operator", "router"])
def test_no_function_over_80_lines(part):
    long = []
    for path in (SRC / "hadis" / part).glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                n = node.end_lineno - node.lineno + 1
                if n > 80:
                    long.append(f"{path.name}:{node.name} ({n} lines)")
    assert long == []


def crd_defaults(schema: dict, path: tuple[str, ...] = ()) -> dict[tuple[str, ...], object]:
    """Every ``default:`` under a schema, by path (``[]`` for an array's items); ``{}`` defaults
    of objects are left out (they only make the API server fill the fields below)."""
    out: dict[tuple[str, ...], object] = {}
    if "default" in schema and schema["default"] != {}:
        out[path] = schema["default"]
    for key, sub in (schema.get("properties") or {}).items():
        out.update(crd_defaults(sub, (*path, key)))
    if "items" in schema:
        out.update(crd_defaults(schema["items"], (*path, "[]")))
    return out


def test_no_schema_key_is_written_twice_in_the_crd_or_the_charts_copy():
    """kustomize (and so Flux and Argo CD) refuses a mapping key written twice; PyYAML keeps the
    last one silently, so this is checked here without a cluster too."""

    class Strict(yaml.SafeLoader):
        pass

    def mapping(loader, node, deep=False):
        keys = [loader.construct_object(k) for k, _ in node.value]
        twice = sorted({k for k in keys if keys.count(k) > 1})
        assert not twice, f"line {node.start_mark.line + 1}: {twice} written twice"
        return yaml.SafeLoader.construct_mapping(loader, node, deep)

    Strict.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, mapping)
    for path in (CRD, ROOT / "charts" / "hadis-operator" / "crds" / CRD.name):
        yaml.load(path.read_text(), Strict)  # a SafeLoader: no arbitrary objects


def test_every_crd_default_is_the_typed_specs():
    from hadis.operator.spec import DEFAULTS, MODEL_DEFAULTS

    crd = yaml.safe_load(CRD.read_text())
    spec = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    found = crd_defaults(spec)
    assert len(found) >= 20
    for path, value in found.items():
        where = MODEL_DEFAULTS if path[:2] == ("models", "[]") else DEFAULTS
        keys = path[2:] if where is MODEL_DEFAULTS else path
        for key in keys:
            assert key in where, f"the CRD defaults spec.{'.'.join(path)}; spec.DEFAULTS lacks it"
            where = where[key]
        assert where == value, f"spec.{'.'.join(path)}: CRD {value!r}, code {where!r}"


def test_a_minimal_spec_reads_as_the_crds_defaults():
    from hadis.operator.spec import CascadeSpec

    minimal = {
        "models": [{"name": "a", "workerSpec": "a"}, {"name": "b", "workerSpec": "b"}],
        "sloSeconds": 5,
        "gpuBudget": {"max": 4},
        "profile": {"configMapName": "p"},
    }
    s = CascadeSpec.parse(minimal)
    assert (s.gpu_min, s.prometheus.window, s.surge.window, s.interval_s) == (2, "2m", "1m", 10.0)
    assert s.models[0].gpus_per_replica == 1 and s.router.replicas == 1 and s.network_policy
    nulls = {**minimal, "prometheus": None, "planner": {"surge": None}}  # null reads as the default
    assert CascadeSpec.parse(nulls) == s


@pytest.mark.cluster
def test_kustomize_builds_the_crd_and_the_charts_copy(kube, tmp_path):
    """One schema key twice (profileDrift was) makes kustomize, and so Flux and Argo CD through
    it, refuse the file."""
    for source in (CRD, ROOT / "charts" / "hadis-operator" / "crds" / CRD.name):
        d = tmp_path / source.parent.parent.name
        d.mkdir()
        (d / CRD.name).write_text(source.read_text())
        (d / "kustomization.yaml").write_text(yaml.safe_dump({"resources": [CRD.name]}))
        out = subprocess.run([kube.kubectl, "kustomize", str(d)], capture_output=True, text=True, check=False)
        assert out.returncode == 0, out.stderr
        (doc,) = [x for x in yaml.safe_load_all(out.stdout) if x]
        assert doc["kind"] == "CustomResourceDefinition"
