"""Plain settings data shared by every layer: how frames are sized, how the checkpoint
preprocesses them, what identifies an encoder's vectors, and how videos are cut into clips."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

DEFAULT_MODEL = "MCG-NJU/videomae-large"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
_RESAMPLE = {2: "bilinear", 3: "bicubic"}


@dataclass(frozen=True)
class FrameSize:
    """How decoded frames are resized: shortest edge to ``short_edge``, long edge truncated.

    ``short_edge=None`` keeps the decoded size.
    """

    short_edge: int | None = 224
    mode: str = "bilinear"

    def __call__(self, height: int, width: int) -> tuple[int, int]:
        s = self.short_edge
        if s is None:
            return height, width
        if width <= height:
            return int(s * height / width), s
        return s, int(s * width / height)


def _rgb(values) -> tuple[float, float, float]:
    r, g, b = (float(x) for x in values)
    return r, g, b


@dataclass(frozen=True)
class Preprocessing:
    """The checkpoint's image preprocessing, as its ``preprocessor_config.json`` says."""

    shortest_edge: int = 224
    crop_height: int = 224
    crop_width: int = 224
    resample: str = "bilinear"
    do_resize: bool = True
    do_center_crop: bool = True
    do_rescale: bool = True
    rescale_factor: float = 1 / 255
    do_normalize: bool = True
    image_mean: tuple[float, float, float] = IMAGENET_MEAN
    image_std: tuple[float, float, float] = IMAGENET_STD

    def __post_init__(self) -> None:
        if self.resample not in _RESAMPLE.values():
            raise ValueError(f"resample must be one of {sorted(_RESAMPLE.values())}, got {self.resample!r}")
        if min(self.shortest_edge, self.crop_height, self.crop_width) < 1:
            raise ValueError("preprocessing sizes must be positive")

    @classmethod
    def from_config(cls, cfg: dict) -> Preprocessing:
        """Read a ``preprocessor_config.json`` dict (old int and new dict size forms)."""
        size: Any = cfg.get("size", 224)
        if isinstance(size, dict):
            size = size.get("shortest_edge", size.get("height", 224))
        shortest = int(size)
        crop = cfg.get("crop_size", {"height": shortest, "width": shortest})
        if not isinstance(crop, dict):
            crop = {"height": int(crop), "width": int(crop)}
        resample = cfg.get("resample", 2)
        return cls(
            shortest_edge=int(shortest),
            crop_height=int(crop["height"]),
            crop_width=int(crop["width"]),
            resample=_RESAMPLE.get(resample, "bilinear") if isinstance(resample, int) else "bilinear",
            do_resize=bool(cfg.get("do_resize", True)),
            do_center_crop=bool(cfg.get("do_center_crop", True)),
            do_rescale=bool(cfg.get("do_rescale", True)),
            rescale_factor=float(cfg.get("rescale_factor", 1 / 255)),
            do_normalize=bool(cfg.get("do_normalize", True)),
            image_mean=_rgb(cfg.get("image_mean", IMAGENET_MEAN)),
            image_std=_rgb(cfg.get("image_std", IMAGENET_STD)),
        )

    def frame_size(self) -> FrameSize:
        """The resize this preprocessing starts with, done by the decoder's reader."""
        return FrameSize(self.shortest_edge if self.do_resize else None, self.resample)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class EncoderSettings:
    """What identifies an encoder's vectors; recorded in, and checked against, the manifest."""

    model: str
    revision: str
    dim: int
    pooling: str
    num_frames: int
    image_size: int
    preprocessing: Preprocessing = field(default_factory=Preprocessing)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["preprocessing"] = self.preprocessing.to_dict()
        return d


@dataclass(frozen=True)
class ClipSettings:
    clip_seconds: float = 2.0
    hop_seconds: float = 2.0

    def __post_init__(self) -> None:
        if not (self.clip_seconds > 0 and self.hop_seconds > 0):
            raise ValueError(f"clip and hop seconds must be positive, got {self.clip_seconds}, {self.hop_seconds}")
