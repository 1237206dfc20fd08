# One entry point for humans and CI. `make test` on a fresh machine creates .venv, installs the
# project with its test tools, lints and runs every test.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DATA := data/hadis
OUT := out
PROMETHEUS := .cache/prometheus/usr/bin/prometheus

LIGHTS := sdxl-lightning-2step sd3.5-large-turbo sd3.5-medium

.PHONY: help install lint format gitops-tools test test-fast fuzz e1 bench profiles router-models lexicon route-eval up cluster-up cluster-down control-plane host-deps images demo demo-down sim-to-real clean

help:
	@echo "make demo      the product in real pods: cluster with a real node, images, helm install, tiny cascade, prompts, a load step"
	@echo "make demo-down stop what make demo left running (and the cluster)"
	@echo "make sim-to-real  the demo cluster and the replay on the same staircase and spike (needs make demo)"
	@echo "make images    build the control and worker images (debootstrap base, cached)"
	@echo "make e1        run the E1 comparison (all seven systems) and write $(OUT)/e1.{json,csv,png}"
	@echo "make test      lint and run the whole test suite"
	@echo "make test-fast lint and run the tests of pure logic (no cluster, no worker processes; about 2 minutes)"
	@echo "make fuzz      the router's API and the operator fuzzed, longer budgets than make test's"
	@echo "make bench     planner, simulator, surge, router, data-plane, profiling-grid and operator benchmarks (print figures)"
	@echo "make profiles  regenerate the shipped profiles/ from $(DATA)"
	@echo "make format    apply ruff formatting"
	@echo "make up        start the tiny local data plane (two Triton workers and the router)"
	@echo "make cluster-up / cluster-down  the local cluster: control plane, a real node, kwok nodes (prints export KUBECONFIG=...)"
	@echo "make route-eval  ROC-AUC of router scores and live-feature agreement"
	@echo "make router-models  retrain the shipped router models (profiles/router/, rule statistics)"
	@echo "make lexicon   rebuild the router lexicon (installs wordfreq)"

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev,worker]'
	touch $(STAMP)

install: $(STAMP) $(PROMETHEUS)

# Debian's Prometheus, unpacked into .cache (no system install, no service started); the
# end-to-end tests start it on loopback with a generated config.
$(PROMETHEUS):
	mkdir -p .cache
	cd .cache && (apt-get download prometheus || (apt-get update -qq && apt-get download prometheus))
	dpkg -x .cache/prometheus_*.deb .cache/prometheus
	touch $@

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks hack
	$(BIN)/ruff format --check src tests benchmarks hack

format: $(STAMP)
	$(BIN)/ruff format src tests benchmarks hack
	$(BIN)/ruff check --fix src tests benchmarks hack

# The cluster's binaries (built once from their Go modules, cached in ~/.cache/hadis): the control
# plane, kwok and helm, and the real node's kubelet, kube-proxy, CoreDNS and crictl.
control-plane:
	bash hack/build-control-plane.sh >/dev/null

# Debian packages of the real node and the images: docker.io, containerd, runc, CNI plugins, debootstrap.
host-deps:
	bash hack/host-deps.sh

images: host-deps
	bash hack/images.sh

# Lua 5.1 with lua-cjson (the Argo CD health check) and kstatus (sigs.k8s.io/cli-utils, what
# Flux and Helm 4 read status with), for the GitOps health tests.
gitops-tools:
	bash hack/gitops-tools.sh

test: lint $(PROMETHEUS) control-plane images gitops-tools
	HADIS_PROMETHEUS=$(PROMETHEUS) $(BIN)/python -m pytest

# The inner loop: everything but the tests marked cluster (the local control plane) or dataplane
# (real worker and router processes); see docs/testing.md.
test-fast: lint gitops-tools
	$(BIN)/python -m pytest -m "not cluster and not dataplane"

# The router's HTTP API fuzzed from its own /openapi.json (schemathesis), and the operator with
# generated cascades on the local API server: make test runs 60 examples an operation and 20
# cascades, this 1000 and 100.
fuzz: $(STAMP) $(PROMETHEUS) control-plane
	HADIS_FUZZ_EXAMPLES=1000 $(BIN)/python -m pytest tests/test_router_fuzz.py -s -W ignore::DeprecationWarning
	HADIS_OPERATOR_FUZZ_EXAMPLES=100 HADIS_PROMETHEUS=$(PROMETHEUS) $(BIN)/python -m pytest tests/test_operator_fuzz.py -s

e1: $(STAMP)
	mkdir -p $(OUT)
	$(BIN)/hadis sim --trace $(DATA)/traces/maf_1to64qps.csv --data-dir $(DATA) --system all \
		--gpus 16 --slo 6 --time-scale 0.1 \
		--json $(OUT)/e1.json --csv $(OUT)/e1.csv --plot $(OUT)/e1.png

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_planner.py
	$(BIN)/python benchmarks/bench_e1.py
	$(BIN)/python benchmarks/bench_surge.py
	$(BIN)/python benchmarks/bench_router.py
	$(BIN)/python benchmarks/bench_dataplane.py
	$(BIN)/python benchmarks/bench_profile_grid.py
	$(MAKE) control-plane
	$(BIN)/python benchmarks/bench_operator.py
	$(MAKE) images
	$(BIN)/python benchmarks/bench_dispatch.py

# A real local control plane (etcd, kube-apiserver, controller-manager, scheduler, kwok with
# fake GPU nodes), binaries built once from their Go modules into ~/.cache/hadis/bin.
cluster-up: host-deps control-plane
	@python3 hack/cluster.py up

cluster-down:
	@python3 hack/cluster.py down

# The main job: everything it needs is built or installed first (cached afterwards).
demo: $(STAMP) $(PROMETHEUS) control-plane images
	HADIS_PROMETHEUS=$(PROMETHEUS) $(BIN)/python hack/demo.py up

# The demo cluster against the replay on the same traces (needs `make demo` running).
sim-to-real: $(STAMP)
	$(BIN)/python benchmarks/bench_sim_to_real.py --data-dir $(DATA) --plot $(OUT)/sim-to-real.png

demo-down:
	-$(BIN)/python hack/demo.py down
	python3 hack/cluster.py down

up: $(STAMP)
	$(BIN)/hadis up --tiny

profiles: $(STAMP)
	$(BIN)/hadis profile convert $(DATA)/profiles/l40s_hadis_reference.yaml --out profiles/l40s-hadis-reference.yaml
	$(BIN)/hadis profile convert $(DATA)/profiles/l40s_hadis_reference.yaml --time-scale 0.1 --out profiles/l40s-hadis-e1.yaml
	$(BIN)/hadis profile convert $(DATA)/profiles/a100_diffserve.csv --out profiles/a100-diffserve.yaml
	$(BIN)/hadis table build --grid $(DATA)/tables/config_results_hybrid.csv \
		--profile profiles/l40s-hadis-reference.yaml --out profiles/pareto-l40s.csv
	$(BIN)/hadis table configmap --profile profiles/l40s-hadis-reference.yaml \
		--grid $(DATA)/tables/config_results_hybrid.csv --with-grid --name hadis-l40s --out profiles/configmap-l40s.yaml
	# the tiny cascade: the grid rows of the light/heavy pair 0,1 of the HADIS grid (see profiles/tiny.yaml)
	(head -1 $(DATA)/tables/config_results_hybrid.csv; grep '^0,1,' $(DATA)/tables/config_results_hybrid.csv) > profiles/tiny-grid.csv
	$(BIN)/hadis table configmap --profile profiles/tiny.yaml --grid profiles/tiny-grid.csv --with-grid \
		--name hadis-tiny --out profiles/configmap-tiny.yaml

route-eval: $(STAMP)
	$(BIN)/hadis route eval --data-dir $(DATA) --features
	$(BIN)/hadis route compare --data-dir $(DATA) --model-file profiles/router/learned-sdxl-lightning-2step.json

router-models: $(STAMP)
	mkdir -p profiles/router
	$(BIN)/hadis route train --mode rule --data-dir $(DATA) --out src/hadis/scoring/data/rule-hadis.json
	for m in $(LIGHTS); do \
		$(BIN)/hadis route train --data-dir $(DATA) --light $$m --out profiles/router/learned-$$m.json || exit 1; \
	done

lexicon: $(STAMP)
	$(BIN)/pip install --quiet -e '.[dev,lexicon]'
	$(BIN)/python -m hadis.scoring.build_lexicon --concreteness $(DATA)/router/concreteness.csv

clean:
	rm -rf $(VENV) $(OUT) .pytest_cache .ruff_cache .cache
