"""Build the diffusers pipeline and the discriminator a worker serves (torch, diffusers).

``load_pipeline`` follows diffusers conventions: ``from_pretrained`` on a Hugging Face id or a
local folder (a PVC mount in the chart), an optional UNet override, a scheduler from the
pipeline's config. ``tiny_pipeline`` builds the same pipeline classes from small configs with
random weights and an offline tokenizer, seeded, so tests and the CPU demo run without a hub.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from hadis.workers.spec import ModelSpec

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def quiet_libraries() -> None:
    """diffusers and transformers warn about configs on every tiny build; keep errors only."""
    import diffusers
    import transformers

    diffusers.utils.logging.set_verbosity_error()
    transformers.logging.set_verbosity_error()


def _bytes_to_unicode() -> dict[int, str]:
    """CLIP's byte-level alphabet: every byte maps to a printable character."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, (chr(c) for c in cs), strict=True))


def tiny_tokenizer():
    """A CLIPTokenizer with a character-level vocabulary, written to a temp folder (no hub)."""
    from transformers import CLIPTokenizer

    chars = list(_bytes_to_unicode().values())
    vocab = {"<|startoftext|>": 0, "!!pad": 1, "<|endoftext|>": 2}
    for c in chars:
        for tok in (c, c + "</w>"):
            vocab.setdefault(tok, len(vocab))
    folder = Path(tempfile.mkdtemp(prefix="hadis-tokenizer-"))
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    return CLIPTokenizer(
        vocab_file=str(folder / "vocab.json"), merges_file=str(folder / "merges.txt"), model_max_length=77
    )


def tiny_pipeline(spec: ModelSpec):
    """A StableDiffusionPipeline from tiny configs with random weights; wider for heavier specs."""
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    # the heavy tiny variant (more steps) gets a wider UNet so it is slower per step too
    width = 8 if spec.steps <= 2 else 16
    seed = int(hashlib.sha256(spec.name.encode()).hexdigest()[:8], 16)
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        block_out_channels=(width, width * 2),
        layers_per_block=1,
        sample_size=spec.height // 2,
        in_channels=4,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=32,
        norm_num_groups=2,
    )
    scheduler = DDIMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
    )
    torch.manual_seed(seed + 1)
    vae = AutoencoderKL(
        block_out_channels=[4, 8],
        in_channels=3,
        out_channels=3,
        down_block_types=["DownEncoderBlock2D", "DownEncoderBlock2D"],
        up_block_types=["UpDecoderBlock2D", "UpDecoderBlock2D"],
        latent_channels=4,
        norm_num_groups=2,
    )
    torch.manual_seed(seed + 2)
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            bos_token_id=0,
            eos_token_id=2,
            pad_token_id=1,
            hidden_size=32,
            intermediate_size=37,
            num_attention_heads=4,
            num_hidden_layers=2,
            vocab_size=1000,
            layer_norm_eps=1e-5,
        )
    )
    pipe = StableDiffusionPipeline(
        unet=unet,
        scheduler=scheduler,
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tiny_tokenizer(),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def load_pipeline(spec: ModelSpec, device: str = "cpu", weights: Path | None = None):
    """The spec's pipeline: ``from_pretrained`` on ``weights`` (a folder of the weight cache,
    ``hadis.workers.cache``) when given, else tiny and random, or on its source."""
    quiet_libraries()
    if spec.tiny and weights is None:
        return tiny_pipeline(spec).to(device)
    import diffusers

    cls = getattr(diffusers, spec.pipeline)
    dtype = DTYPES[spec.dtype]
    kwargs: dict = {"torch_dtype": dtype}
    source = str(weights) if weights is not None else spec.source
    if spec.unet is not None:
        from huggingface_hub import hf_hub_download
        from safetensors.torch import load_file

        unet_cls = diffusers.UNet2DConditionModel
        unet = unet_cls.from_config(unet_cls.load_config(source, subfolder="unet")).to(dtype)
        path = Path(spec.unet.source) / spec.unet.file
        if weights is not None:
            path = weights / "unet-override" / spec.unet.file
        elif not path.exists():
            path = Path(hf_hub_download(spec.unet.source, spec.unet.file))
        unet.load_state_dict(load_file(str(path)))
        kwargs["unet"] = unet
    if spec.tiny:
        kwargs.update(safety_checker=None, requires_safety_checker=False)
    pipe = cls.from_pretrained(source, **kwargs)
    if spec.scheduler:
        sched_cls = getattr(diffusers, spec.scheduler)
        pipe.scheduler = sched_cls.from_config(pipe.scheduler.config, timestep_spacing="trailing")
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device)


def run_pipeline(pipe, spec: ModelSpec, prompts: list[str], seeds: list[int]) -> np.ndarray:
    """One batch as the spec says (steps, guidance, size), a CPU generator per image so the same
    seed gives the same image whatever the batch; float images in [0, 1], [B, H, W, 3]."""
    generators = [torch.Generator("cpu").manual_seed(int(s)) for s in seeds]
    with torch.inference_mode():
        return pipe(
            prompts,
            num_inference_steps=spec.steps,
            guidance_scale=spec.guidance,
            height=spec.height,
            width=spec.width,
            generator=generators,
            output_type="np",
        ).images


@dataclass
class Discriminator:
    """CLIP vision tower + Linear(512, 256), ReLU, Linear(256, 2); confidence = softmax P(real)."""

    vision: torch.nn.Module
    head: torch.nn.Module
    image_size: int
    source: str  # "random" or "safetensors:<sha256 prefix>"

    MEAN = (0.48145466, 0.4578275, 0.40821073)
    STD = (0.26862954, 0.26130258, 0.27577711)

    @property
    def device(self) -> torch.device:
        return next(self.head.parameters()).device

    @torch.no_grad()
    def confidence(self, images: np.ndarray) -> np.ndarray:
        """P(real) per image; ``images`` is uint8 [B, H, W, 3]. Runs where the model is (``to``)."""
        device = self.device
        x = torch.from_numpy(np.ascontiguousarray(images)).to(device).permute(0, 3, 1, 2).float() / 255.0
        x = torch.nn.functional.interpolate(x, size=(self.image_size, self.image_size), mode="bilinear")
        mean = torch.tensor(self.MEAN, device=device).view(1, 3, 1, 1)
        std = torch.tensor(self.STD, device=device).view(1, 3, 1, 1)
        embeds = self.vision(pixel_values=(x - mean) / std).image_embeds
        return torch.softmax(self.head(embeds), dim=-1)[:, 1].float().cpu().numpy().astype(np.float32)

    def to(self, device: str) -> Discriminator:
        """Move both parts to ``device`` (the pipeline's: a CUDA worker must not score on the CPU)."""
        self.vision.to(device)
        self.head.to(device)
        return self


def build_discriminator(architecture: str, weights: str | None = None, device: str = "cpu") -> Discriminator:
    """Random weights unless a safetensors file is given (data only: never pickle), on ``device``."""
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    torch.manual_seed(0)
    if architecture == "tiny":
        config = CLIPVisionConfig(
            hidden_size=32,
            intermediate_size=37,
            num_hidden_layers=2,
            num_attention_heads=4,
            image_size=32,
            patch_size=8,
            projection_dim=512,
        )
    else:  # CLIP ViT-B/32, the defaults of CLIPVisionConfig
        config = CLIPVisionConfig(projection_dim=512)
    vision = CLIPVisionModelWithProjection(config).eval()
    head = torch.nn.Sequential(torch.nn.Linear(512, 256), torch.nn.ReLU(), torch.nn.Linear(256, 2)).eval()
    source = "random"
    if weights:
        from safetensors.torch import load_file

        state = load_file(weights)
        head.load_state_dict({k.removeprefix("head."): v for k, v in state.items() if k.startswith("head.")})
        vision_state = {k.removeprefix("vision."): v for k, v in state.items() if k.startswith("vision.")}
        if vision_state:
            vision.load_state_dict(vision_state)
        source = "safetensors:" + hashlib.sha256(Path(weights).read_bytes()).hexdigest()[:12]
    return Discriminator(vision, head, config.image_size, source).to(device)
