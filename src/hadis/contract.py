"""The wire contract between the parts: what the operator, the router, the workers and the
profiler must agree on, written once. Constants only (no I/O, no imports of the parts), so any
part may import it without pulling in another.

- The custom resource's API group and the labels on every object a cascade owns.
- The images this version ships and the non-root user they run as.
- Ports: Triton's HTTP, gRPC and metrics ports on a worker, the router's HTTP port.
- The router's ConfigMap keys and where its learned model is mounted; the workers' weights.
- The Triton model's tensors (names and the request/answer shapes the router sends and reads).
- Readiness and liveness paths.
"""

from __future__ import annotations

from hadis import __version__

# The custom resource and the labels on the objects a cascade owns.
GROUP = "serving.hadis.dev"
VERSION = "v1alpha1"
PLURAL = "diffusioncascades"
CASCADE_LABEL = f"{GROUP}/cascade"
MODEL_LABEL = f"{GROUP}/model"
# Scale to zero: a router sets this annotation (a time) on its cascade's wake Lease to ask the
# operator for workers; the operator watches the Leases labelled with the component "wake".
WAKE_ANNOTATION = f"{GROUP}/wake-requested-at"
WAKE_COMPONENT = "wake"

# The images this version ships (``make images``); the chart passes its own to the operator.
ROUTER_IMAGE = f"ghcr.io/hadis-serving/hadis:{__version__}"
WORKER_IMAGE = f"ghcr.io/hadis-serving/hadis-worker:{__version__}"
USER_ID = 65532  # the images' non-root user, with a passwd entry

# Ports: Triton's on a worker (PyTriton's defaults), the router's (inference; admin: metrics, OpenAPI).
WORKER_HTTP, WORKER_GRPC, WORKER_METRICS, ROUTER_PORT, ROUTER_ADMIN_PORT = 8000, 8001, 8002, 8080, 9090

# The router's ConfigMap and its learned model's; where the worker's weights are mounted.
ROUTER_CONFIG_KEY = "router.yaml"
ROUTER_MODEL_KEY = "router-model.json"
ROUTER_MODEL_DIR = "/etc/hadis-model"
ROUTER_KEYS_DIR = "/etc/hadis-api-keys"  # the cascade's API-key Secret, a file per key
WEIGHTS_DIR = "/models/weights"

# The Triton model's tensors: one prompt (BYTES) and one seed (INT64) per row in; one PNG
# (BYTES) per row out, with the discriminator's confidence (FP32) and its source (BYTES) from a
# worker that has one (the light tier).
IN_PROMPT, IN_SEED = "PROMPT", "SEED"
OUT_IMAGE, OUT_CONFIDENCE, OUT_DISCRIMINATOR = "IMAGE", "CONFIDENCE", "DISCRIMINATOR"

# Triton's server-level liveness; readiness is per model (``model_ready_path``).
LIVE_PATH = "/v2/health/live"


def model_ready_path(model: str) -> str:
    """Triton's model-level readiness endpoint: 200 only once ``model`` answers requests.

    The server-level ``/v2/health/ready`` answers while a model is still loading into the
    Python backend, and requests sent then fail with "unknown model"."""
    return f"/v2/models/{model}/ready"
