"""Image feature networks for FID (torch), and reading images as uint8 arrays.

- ``inception``: the FID Inception-v3 (TensorFlow's 2015-12-05 graph, ported by torch-fidelity;
  the network clean-fid, torchmetrics and torch-fidelity all compute FID with), 2048 pool
  features, weights read from a local file or a mounted volume. Nothing is downloaded: without
  the file the run stops with an error that says where to get it.
- ``random-inception``: the same architecture with random weights (what a forward pass costs,
  for benchmarks); its FID values mean nothing.
- ``random``: a small randomly initialised convolutional network (64 features), for tests and
  CPU trials; its FID values mean nothing, the machinery around it is the real one.
"""

from __future__ import annotations

import io
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hadis.core.errors import DataError

NETWORKS = ("inception", "random-inception", "random")
WEIGHTS_ENV = "HADIS_INCEPTION_WEIGHTS"
WEIGHTS_FILE = "weights-inception-2015-12-05-6726825d.pth"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")


@dataclass
class FeatureNet:
    name: str  # what the output says the features are
    dim: int
    meaningful: bool  # False: random weights, the FID values mean nothing
    extract: Callable[[np.ndarray], np.ndarray]  # uint8 [B, H, W, 3] -> float32 [B, dim]


def missing_weights_message(path: str | None) -> str:
    where = f"not found at {path}" if path else f"not given (--inception-weights or ${WEIGHTS_ENV})"
    return (
        f"the FID Inception weights are {where}. FID needs torch-fidelity's {WEIGHTS_FILE} (the TensorFlow "
        "2015-12-05 Inception graph); nothing is downloaded at run time. Download it where there is network "
        "(https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/" + WEIGHTS_FILE + ") and pass "
        "its path, or mount it and set $" + WEIGHTS_ENV + ". For a trial run without it, --feature-net "
        "random (FID values then mean nothing)."
    )


def inception_weights(path: str | os.PathLike | None) -> Path:
    """The weights file, checked: present, and a plain tensor file (no code in it)."""
    import torch

    given = str(path) if path else os.environ.get(WEIGHTS_ENV)
    if not given or not Path(given).is_file():
        raise DataError(given or "--inception-weights", missing_weights_message(given))
    try:
        state = torch.load(given, map_location="cpu", weights_only=True)
    except Exception as e:  # not a state dict, or one that needs code to load: refuse it
        raise DataError(given, f"not a plain tensor state dict ({type(e).__name__}: {str(e)[:200]})") from None
    if not isinstance(state, dict) or "Mixed_7c.branch_pool.conv.weight" not in state:
        raise DataError(given, "not the FID Inception-v3 weights (no Mixed_7c layer)")
    return Path(given)


def _inception(weights: Path | None, device: str):
    """torch-fidelity's FID Inception; with ``weights`` None, the architecture with random weights."""
    import tempfile

    import torch
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    if weights is not None:
        return FeatureExtractorInceptionV3("inception-v3-compat", ["2048"], feature_extractor_weights_path=str(weights))

    class RandomInception(FeatureExtractorInceptionV3):
        def load_state_dict(self, state_dict, strict=True, assign=False):  # random weights: nothing to load
            return None

    torch.manual_seed(0)
    with tempfile.NamedTemporaryFile(suffix=".pt") as empty:
        torch.save({}, empty.name)
        return RandomInception("inception-v3-compat", ["2048"], feature_extractor_weights_path=empty.name)


def _small_random():
    import torch

    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Conv2d(3, 16, 3, stride=2, padding=1),
        torch.nn.ReLU(),
        torch.nn.Conv2d(16, 32, 3, stride=2, padding=1),
        torch.nn.ReLU(),
        torch.nn.Conv2d(32, 64, 3, stride=2, padding=1),
        torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d(1),
        torch.nn.Flatten(),
    ).eval()


def build(network: str, device: str = "cpu", weights: str | os.PathLike | None = None) -> FeatureNet:
    import torch

    if network not in NETWORKS:
        raise DataError("--feature-net", f"unknown feature network {network!r}; known: {', '.join(NETWORKS)}")
    if network == "random":
        net = _small_random().to(device)

        @torch.no_grad()
        def small(images: np.ndarray) -> np.ndarray:
            x = torch.from_numpy(np.ascontiguousarray(images)).to(device).permute(0, 3, 1, 2).float() / 127.5 - 1.0
            x = torch.nn.functional.interpolate(x, size=(64, 64), mode="bilinear", align_corners=False)
            return net(x).float().cpu().numpy()

        return FeatureNet("random-init test network (FID values mean nothing)", 64, False, small)
    path = inception_weights(weights) if network == "inception" else None
    net = _inception(path, "cpu").to(device)

    @torch.no_grad()
    def inception(images: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(np.ascontiguousarray(images)).to(device).permute(0, 3, 1, 2)
        return net(x)[0].float().cpu().numpy()

    if path is None:
        return FeatureNet("FID Inception-v3 architecture, random weights (FID values mean nothing)", 2048, False,
                          inception)  # fmt: skip
    return FeatureNet(f"FID Inception-v3 (torch-fidelity, {path.name})", 2048, True, inception)


def read_image(data: bytes | Path) -> np.ndarray:
    """RGB uint8 [H, W, 3] from PNG/JPEG bytes or a file."""
    from PIL import Image

    raw = data.read_bytes() if isinstance(data, Path) else data
    with Image.open(io.BytesIO(raw)) as im:
        return np.asarray(im.convert("RGB"), dtype=np.uint8)


def image_files(folder: Path) -> list[Path]:
    """The images of a folder (sorted by name), or a clear error when there are none."""
    if not folder.is_dir():
        raise DataError(str(folder), "not a folder of reference images")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if len(files) < 2:
        raise DataError(str(folder), f"needs at least 2 images ({', '.join(IMAGE_SUFFIXES)}), found {len(files)}")
    return files
