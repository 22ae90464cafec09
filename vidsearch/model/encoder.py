"""The VideoMAE encoder: load a checkpoint, preprocess on the device, pool, L2-normalise.

VideoMAE has no [CLS] token. The clip embedding is the model's own pre-logit representation:
the mean of the final (already layer-normed) tokens for pretrained-only checkpoints, and
``fc_norm(mean(tokens))`` for fine-tuned ones (``use_mean_pooling: true``), whose bare
``VideoMAEModel`` would drop ``fc_norm``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from vidsearch.errors import InvalidArgumentError, ModelUnavailableError, first_line
from vidsearch.media.resize import resize_frames
from vidsearch.settings import DEFAULT_MODEL, EncoderSettings, Preprocessing

log = logging.getLogger(__name__)


def resolve_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ModelUnavailableError(f"device {device!r} asked for, but torch sees no CUDA device")
    if device != "cpu" and not device.startswith("cuda"):
        raise InvalidArgumentError(f"device must be auto, cpu or cuda[:N]; got {device!r}")
    return device


def cpu_has_native_bf16() -> bool:
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return bool(re.search(r"\b(avx512_bf16|amx_bf16)\b", flags))


def resolve_dtype(dtype: str, device: str):
    import torch

    names = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
    if dtype == "auto":
        if device.startswith("cuda"):
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.bfloat16 if cpu_has_native_bf16() else torch.float32
    if dtype not in names:
        raise ValueError(f"dtype must be auto, float32, bfloat16 or float16; got {dtype!r}")
    return names[dtype]


def _checkpoint_revision(model: str, config_path: str | None, revision: str | None) -> str:
    """The hub commit a cached checkpoint came from, or a content hash of a local folder."""
    if os.path.isdir(model):
        from vidsearch.media.discover import sampled_hash

        h = hashlib.blake2b(digest_size=16)
        for p in sorted(Path(model).iterdir()):
            if p.is_file() and (p.suffix in {".json", ".safetensors", ".bin"}):
                h.update(p.name.encode())
                h.update(sampled_hash(p).encode())
        return "sha:" + h.hexdigest()
    if config_path:
        m = re.search(r"snapshots[/\\]([0-9a-f]{40})[/\\]", config_path)
        if m:
            return m.group(1)
    return revision or "main"


class Encoder:
    """A loaded VideoMAE: ``embed`` turns decoded clips into unit float32 vectors."""

    def __init__(self, model, fc_norm, settings: EncoderSettings, device: str, dtype):
        self.model = model
        self.fc_norm = fc_norm
        self.settings = settings
        self.device = device
        self.dtype = dtype
        import torch

        pp = settings.preprocessing
        self._mean = torch.tensor(pp.image_mean, device=device).view(1, 3, 1, 1)
        self._std = torch.tensor(pp.image_std, device=device).view(1, 3, 1, 1)

    @property
    def dim(self) -> int:
        return self.settings.dim

    def preprocess(self, frames: np.ndarray, source_size: tuple[int, int] | None = None):
        """uint8 (T, H, W, 3) frames → normalised float (T, 3, crop_h, crop_w) on the device.

        Readers already deliver frames resized by ``preprocessing.frame_size()``; frames of any
        other size are resized here first. ``source_size`` (width, height) is the size the
        frames were decoded from, when they were already scaled down from it.
        """
        import torch

        pp = self.settings.preprocessing
        w0, h0 = source_size or (frames.shape[2], frames.shape[1])
        frames = resize_frames(np.ascontiguousarray(frames), pp.frame_size()(h0, w0), pp.resample)
        x = torch.from_numpy(frames).to(self.device, non_blocking=True).permute(0, 3, 1, 2).float()
        if pp.do_center_crop:
            x = _center_crop(x, pp.crop_height, pp.crop_width)
        if pp.do_rescale:
            x = x * pp.rescale_factor
        if pp.do_normalize:
            x = (x - self._mean) / self._std
        return x

    def embed(
        self, clips: Sequence[np.ndarray], source_sizes: Sequence[tuple[int, int] | None] | None = None
    ) -> np.ndarray:
        """Embed a batch of clips (each uint8 (T, H, W, 3), any size) → float32 (B, dim), unit norm."""
        import torch

        if not clips:
            return np.zeros((0, self.dim), dtype=np.float32)
        sizes = source_sizes or [None] * len(clips)
        nf = self.settings.num_frames
        with torch.inference_mode():
            batch = []
            for frames, size in zip(clips, sizes):
                if frames.shape[0] != nf:
                    raise ValueError(f"a clip must have {nf} frames, got {frames.shape[0]}")
                batch.append(self.preprocess(frames, size))
            pixel_values = torch.stack(batch)
            return self.embed_pixels(pixel_values)

    def embed_pixels(self, pixel_values) -> np.ndarray:
        """Embed preprocessed (B, T, 3, H, W) pixel values."""
        import torch
        import torch.nn.functional as F

        with torch.inference_mode():
            on_cpu = not str(self.device).startswith("cuda")
            if on_cpu and self.dtype != torch.float32:
                with torch.autocast("cpu", dtype=self.dtype):
                    tokens = self.model(pixel_values=pixel_values).last_hidden_state
            else:
                tokens = self.model(pixel_values=pixel_values.to(self.dtype)).last_hidden_state
            pooled = tokens.float().mean(dim=1)
            if self.fc_norm is not None:
                pooled = self.fc_norm(pooled)
            return F.normalize(pooled.float(), dim=-1).cpu().numpy().astype(np.float32)


def _center_crop(x, height: int, width: int):
    import torch.nn.functional as F

    h, w = x.shape[-2:]
    if h < height or w < width:
        ph, pw = max(height - h, 0), max(width - w, 0)
        x = F.pad(x, (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2))
        h, w = x.shape[-2:]
    top, left = (h - height) // 2, (w - width) // 2
    return x[..., top : top + height, left : left + width]


#: the weights files transformers looks for, in its order
_WEIGHTS = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json")


def _unreadable_weights(model: str, exc: Exception) -> ValueError:
    """Safetensors, torch's zip reader and pickle each fail differently on a damaged file
    (SafetensorError, RuntimeError, EOFError, struct.error, ...): one line naming the file."""
    name = next((w for w in _WEIGHTS if os.path.isfile(os.path.join(model, w))), "its weights file")
    detail = first_line(exc).split(". ")[0] if str(exc).strip() else "it ends too early"
    return ValueError(f"{name} cannot be read; it may be truncated or damaged ({type(exc).__name__}: {detail})")


def _unavailable(model: str, exc: Exception) -> ModelUnavailableError:
    if os.path.isdir(model):
        return ModelUnavailableError(
            f"cannot load the VideoMAE checkpoint in {model}: {exc}. The folder should hold config.json "
            "and model weights as written by save_pretrained."
        )
    if os.path.isabs(model) or model.startswith((".", "~")) or model.count("/") > 1:
        return ModelUnavailableError(
            f"no checkpoint folder at {model}. Pass a folder that holds config.json and model weights "
            "(as written by save_pretrained), or a hub id such as MCG-NJU/videomae-large."
        )
    return ModelUnavailableError(
        f"model {model!r} is not available: {first_line(exc)}. "
        f"Download it once on a machine with network access (`hf download {model}`, or any "
        "vidsearch run without HF_HUB_OFFLINE), or pass --model /path/to/local/checkpoint."
    )


def load_encoder(
    model: str = DEFAULT_MODEL,
    device: str = "auto",
    dtype: str = "auto",
    revision: str | None = None,
) -> Encoder:
    """Load a VideoMAE checkpoint from a hub id or a local folder, ready to embed."""
    import torch
    import transformers
    from transformers import VideoMAEConfig, VideoMAEForVideoClassification, VideoMAEModel
    from transformers.utils import cached_file

    model = os.fspath(model)
    device = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, device)
    try:
        config_path = cached_file(model, "config.json", revision=revision)
        if config_path is None:  # what cached_file returns for a local folder without the file
            raise FileNotFoundError("it has no config.json")
        with open(config_path) as f:
            raw_config = json.load(f)
        if not isinstance(raw_config, dict):
            raise ValueError("its config.json is not a JSON object")
    except json.JSONDecodeError as exc:
        raise _unavailable(model, ValueError(f"its config.json is not valid JSON ({exc})")) from exc
    except (OSError, ValueError) as exc:
        raise _unavailable(model, exc) from exc
    if raw_config.get("model_type") != "videomae":
        raise ModelUnavailableError(
            f"{model} is a {raw_config.get('model_type')!r} checkpoint; vidsearch needs a VideoMAE one"
        )
    config = VideoMAEConfig.from_dict(raw_config)
    try:
        pp_path = cached_file(
            model,
            "preprocessor_config.json",
            revision=revision,
            _raise_exceptions_for_missing_entries=False,
            _raise_exceptions_for_connection_errors=False,
        )
    except OSError:
        pp_path = None
    if pp_path:
        with open(pp_path) as f:
            preprocessing = Preprocessing.from_config(json.load(f))
    else:
        log.info("%s has no preprocessor_config.json; using ImageNet mean/std", model)
        size = int(config.image_size)  # type: ignore[arg-type]  # VideoMAE's is one int
        preprocessing = Preprocessing(shortest_edge=size, crop_height=size, crop_width=size)

    load_kwargs: dict[str, Any] = {"revision": revision, "attn_implementation": "sdpa", "output_loading_info": True}
    level = transformers.logging.get_verbosity()
    transformers.logging.set_verbosity_error()  # unused decoder/head weights are expected
    transformers.logging.disable_progress_bar()
    try:
        if config.use_mean_pooling:
            # with output_loading_info=True it returns (model, info), which its annotation does not say
            loaded: Any = VideoMAEForVideoClassification.from_pretrained(model, **load_kwargs)
            full, info = loaded
            backbone, fc_norm = full.videomae, full.fc_norm
            if any(k.startswith("fc_norm") for k in info.get("missing_keys", ())):
                log.warning("%s sets use_mean_pooling but has no fc_norm weights; pooling by mean only", model)
                fc_norm = None
        else:
            loaded = VideoMAEModel.from_pretrained(model, **load_kwargs)
            backbone, info = loaded
            fc_norm = None
    except (OSError, ValueError) as exc:  # no weights, or weights that do not fit the config
        raise _unavailable(model, exc) from exc
    except Exception as exc:  # a damaged weights file: each format's reader fails its own way
        raise _unavailable(model, _unreadable_weights(model, exc)) from exc
    finally:
        transformers.logging.set_verbosity(level)
        transformers.logging.enable_progress_bar()

    on_cuda = device.startswith("cuda")
    backbone = backbone.to(device=device, dtype=torch_dtype if on_cuda else torch.float32).eval()
    if fc_norm is not None:
        fc_norm = fc_norm.to(device=device, dtype=torch.float32).eval()
    settings = EncoderSettings(
        model=model if not os.path.isdir(model) else os.path.abspath(model),
        revision=_checkpoint_revision(model, config_path, revision),
        dim=config.hidden_size,
        pooling="fc_norm_mean" if fc_norm is not None else "mean",
        num_frames=config.num_frames,
        image_size=int(config.image_size),  # type: ignore[arg-type]
        preprocessing=preprocessing,
    )
    log.debug("loaded %s on %s (%s)", model, device, str(torch_dtype).removeprefix("torch."))
    return Encoder(backbone, fc_norm, settings, device, torch_dtype)
