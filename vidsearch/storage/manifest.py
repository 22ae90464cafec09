"""The index directory's manifest: what built the index, and how it must be opened."""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import asdict, dataclass, field

from vidsearch import __version__
from vidsearch.errors import CorruptIndexError, IncompatibleIndexError
from vidsearch.settings import ClipSettings, EncoderSettings, Preprocessing
from vidsearch.storage.faiss_spec import DEFAULT_SPEC

FORMAT_VERSION = 1


@dataclass(frozen=True)
class Manifest:
    encoder: EncoderSettings
    clips: ClipSettings
    index_uid: str = field(default_factory=lambda: uuid.uuid4().hex)
    faiss_spec: str = DEFAULT_SPEC
    faiss_pinned: bool = False
    faiss_params: dict = field(default_factory=dict)
    duplicate_threshold: float | None = None
    calibration: dict | None = None
    format_version: int = FORMAT_VERSION
    created_by: str = f"vidsearch {__version__}"
    created_at: str = field(default_factory=lambda: dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"))

    def to_json(self) -> dict:
        enc = self.encoder
        return {
            "format_version": self.format_version,
            "created_by": self.created_by,
            "created_at": self.created_at,
            "index_uid": self.index_uid,
            "model": {"id": enc.model, "revision": enc.revision},
            "dim": enc.dim,
            "pooling": enc.pooling,
            "num_frames": enc.num_frames,
            "image_size": enc.image_size,
            "preprocessing": enc.preprocessing.to_dict(),
            "clip_seconds": self.clips.clip_seconds,
            "hop_seconds": self.clips.hop_seconds,
            "faiss": {"spec": self.faiss_spec, "pinned": self.faiss_pinned, "params": self.faiss_params},
            "duplicate_threshold": self.duplicate_threshold,
            "calibration": self.calibration,
        }

    @classmethod
    def from_json(cls, d: dict, where: str) -> Manifest:
        version = d.get("format_version")
        if not isinstance(version, int):
            raise CorruptIndexError(f"{where}: no format_version; not a vidsearch manifest")
        if version > FORMAT_VERSION:
            raise IncompatibleIndexError(
                f"{where} is format {version}, made by a newer vidsearch ({d.get('created_by', '?')}); "
                f"this vidsearch {__version__} reads format {FORMAT_VERSION}: upgrade vidsearch"
            )
        try:
            pp = d["preprocessing"]
            pp["image_mean"], pp["image_std"] = tuple(pp["image_mean"]), tuple(pp["image_std"])
            encoder = EncoderSettings(
                model=d["model"]["id"],
                revision=d["model"]["revision"],
                dim=int(d["dim"]),
                pooling=d["pooling"],
                num_frames=int(d["num_frames"]),
                image_size=int(d["image_size"]),
                preprocessing=Preprocessing(**pp),
            )
            return cls(
                encoder=encoder,
                clips=ClipSettings(float(d["clip_seconds"]), float(d["hop_seconds"])),
                index_uid=d["index_uid"],
                faiss_spec=d["faiss"]["spec"],
                faiss_pinned=bool(d["faiss"].get("pinned", False)),
                faiss_params=dict(d["faiss"].get("params") or {}),
                duplicate_threshold=d.get("duplicate_threshold"),
                calibration=d.get("calibration"),
                format_version=version,
                created_by=d.get("created_by", "?"),
                created_at=d.get("created_at", "?"),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise CorruptIndexError(f"{where} is damaged: bad or missing field {exc}") from exc


def describe_differences(
    have: EncoderSettings, clips: ClipSettings, want: EncoderSettings | None, want_clips: ClipSettings | None
) -> list[str]:
    """Human-readable list of what differs between an index and the settings asked for."""
    diffs = []
    if want is not None:
        if have.revision != want.revision or (
            have.model != want.model and not (have.revision.startswith("sha:") and have.revision == want.revision)
        ):
            diffs.append(f"model: index has {have.model} @ {have.revision}, asked for {want.model} @ {want.revision}")
        for name in ("dim", "pooling", "num_frames", "image_size"):
            a, b = getattr(have, name), getattr(want, name)
            if a != b:
                diffs.append(f"{name}: index has {a}, asked for {b}")
        if have.preprocessing != want.preprocessing:
            a, b = asdict(have.preprocessing), asdict(want.preprocessing)
            diffs += [f"preprocessing.{k}: index has {a[k]}, asked for {b[k]}" for k in a if a[k] != b[k]]
    if want_clips is not None:
        for name in ("clip_seconds", "hop_seconds"):
            a, b = getattr(clips, name), getattr(want_clips, name)
            if abs(a - b) > 1e-9:
                diffs.append(f"{name}: index has {a}, asked for {b}")
    return diffs
