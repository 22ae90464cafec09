"""The encoder: preprocessing parity with transformers, pooling, loading, revisions, dtypes."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from helpers import make_checkpoint, scene_frames, write_video

from vidsearch.errors import ModelUnavailableError
from vidsearch.media.readers import iter_clips, open_video
from vidsearch.media.windows import plan_clips
from vidsearch.model.encoder import Encoder, cpu_has_native_bf16, load_encoder, resolve_device, resolve_dtype
from vidsearch.settings import IMAGENET_MEAN, IMAGENET_STD, EncoderSettings, FrameSize, Preprocessing


def preprocessing_encoder(pp: Preprocessing | None = None) -> Encoder:
    import torch

    pp = pp or Preprocessing()
    return Encoder(None, None, EncoderSettings("x", "r", 8, "mean", 16, pp.crop_height, pp), "cpu", torch.float32)


def clip_frames(seed: int, width: int = 80, height: int = 64, n: int = 16) -> np.ndarray:
    """A textured, moving 16-frame clip (not noise: edges and gradients, as in real video)."""
    return np.stack([f for _, f in scene_frames(seed, n / 16, 16, width, height, scene_seconds=0.5)])


def unit(x):
    import torch.nn.functional as F

    return F.normalize(x.float(), dim=-1).numpy()


# --- preprocessing -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def reference_processor():
    from transformers.image_utils import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
    from transformers.models.videomae.image_processing_pil_videomae import VideoMAEImageProcessorPil

    return VideoMAEImageProcessorPil(
        image_mean=IMAGENET_DEFAULT_MEAN,
        image_std=IMAGENET_DEFAULT_STD,
        size={"shortest_edge": 224},
        crop_size={"height": 224, "width": 224},
    )


@pytest.mark.parametrize("size", [(1280, 720), (640, 272), (176, 144)], ids=lambda s: f"{s[0]}x{s[1]}")
def test_preprocessing_matches_transformers(tmp_path, reference_processor, size):
    """The production path (decode resized to 224, then Encoder.preprocess) against the reference
    processor fed the same frames at full resolution."""
    import decord
    import torch  # noqa: F401  (before decord)

    width, height = size
    path = write_video(tmp_path / "v.mp4", seconds=1.0, fps=16, size=size, seed=3)
    enc = preprocessing_encoder()
    with open_video(path, FrameSize(224)) as reader:
        (plan,) = plan_clips(reader.frame_times, 16, 1.0, 1.0)
        (clip,) = list(iter_clips(reader, [plan]))
        source = (reader.info.width, reader.info.height)
    assert source == size
    ours = enc.preprocess(clip.frames, source_size=source)

    full = decord.VideoReader(str(path)).get_batch(list(plan.frame_indices)).asnumpy()
    assert full.shape == (16, height, width, 3)
    ref = reference_processor.preprocess([list(full)], return_tensors="pt")["pixel_values"][0]
    assert tuple(ours.shape) == tuple(ref.shape) == (16, 3, 224, 224)
    diff = (ours - ref).abs()
    print(f"{width}x{height}: mean abs diff {diff.mean().item():.2e}, max {diff.max().item():.4f}")
    assert diff.mean().item() < 0.01
    one_grey_level = 1 / 255 / min(IMAGENET_STD)
    assert diff.max().item() <= one_grey_level * 1.01

    # frames that were not resized by the reader are resized by preprocess itself
    direct = enc.preprocess(full)
    assert (direct - ref).abs().mean().item() < 0.01


def test_preprocessing_crops_the_centre_and_normalises():
    import torch

    enc = preprocessing_encoder(Preprocessing(shortest_edge=4, crop_height=4, crop_width=4))
    frames = np.zeros((16, 4, 8, 3), dtype=np.uint8)
    frames[:, :, 2:6] = 255  # the centre 4 columns are white
    x = enc.preprocess(frames)
    white = (torch.ones(3) - torch.tensor(IMAGENET_MEAN)) / torch.tensor(IMAGENET_STD)
    assert x.shape == (16, 3, 4, 4)
    assert torch.allclose(x, white.view(1, 3, 1, 1).expand_as(x), atol=1e-6)


def test_preprocessing_from_config_dict_size():
    pp = Preprocessing.from_config(
        {
            "size": {"shortest_edge": 224},
            "crop_size": {"height": 224, "width": 224},
            "resample": 2,
            "image_mean": [0.485, 0.456, 0.406],
            "image_std": [0.229, 0.224, 0.225],
        }
    )
    assert pp == Preprocessing()
    assert pp.frame_size() == FrameSize(224, "bilinear")


def test_preprocessing_from_config_old_int_size():
    pp = Preprocessing.from_config({"size": 160, "crop_size": 128, "resample": 3, "do_center_crop": False})
    assert (pp.shortest_edge, pp.crop_height, pp.crop_width) == (160, 128, 128)
    assert pp.resample == "bicubic"
    assert pp.do_center_crop is False
    assert pp.frame_size() == FrameSize(160, "bicubic")
    # no crop_size: crop to the shortest edge
    assert Preprocessing.from_config({"size": 256}).crop_height == 256


def test_preprocessing_defaults_are_imagenet_not_half():
    from transformers.image_utils import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD

    for pp in (Preprocessing(), Preprocessing.from_config({}), Preprocessing.from_config({"size": 224})):
        assert pp.image_mean == pytest.approx(tuple(IMAGENET_DEFAULT_MEAN))
        assert pp.image_std == pytest.approx(tuple(IMAGENET_DEFAULT_STD))
        assert pp.image_mean != (0.5, 0.5, 0.5)
        assert pp.rescale_factor == pytest.approx(1 / 255)


def test_preprocessing_validates():
    with pytest.raises(ValueError, match="resample"):
        Preprocessing(resample="lanczos")
    with pytest.raises(ValueError, match="positive"):
        Preprocessing(crop_height=0)


# --- loading and pooling -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def clips():
    return [clip_frames(1), clip_frames(2, width=96, height=64), clip_frames(3, width=64, height=100)]


def test_pretrained_checkpoint_pools_by_mean(tiny_model, encoder, clips):
    import torch
    from transformers import VideoMAEModel

    assert encoder.settings.pooling == "mean"
    assert encoder.fc_norm is None
    assert encoder.dim == 64
    assert (encoder.settings.num_frames, encoder.settings.image_size) == (16, 64)
    assert encoder.settings.preprocessing == Preprocessing(shortest_edge=64, crop_height=64, crop_width=64)
    assert encoder.settings.model == str(tiny_model)

    emb = encoder.embed(clips)
    assert emb.dtype == np.float32 and emb.shape == (3, 64)
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)

    reference = VideoMAEModel.from_pretrained(tiny_model).eval()
    pixels = torch.stack([encoder.preprocess(c) for c in clips])
    assert tuple(pixels.shape) == (3, 16, 3, 64, 64)
    with torch.no_grad():
        tokens = reference(pixel_values=pixels).last_hidden_state
    assert tokens.shape == (3, 8 * 4 * 4, 64)
    np.testing.assert_allclose(emb, unit(tokens.mean(1)), atol=1e-5)
    np.testing.assert_allclose(encoder.embed_pixels(pixels), emb, atol=1e-6)
    # VideoMAE has no [CLS] token: the first token is one patch, not the clip
    first_token = unit(tokens[:, 0])
    assert np.all(np.einsum("ij,ij->i", emb, first_token) < 0.99)
    # the three clips are different videos, and the embeddings tell them apart
    assert np.all((emb @ emb.T)[np.triu_indices(3, 1)] < 0.999)


def test_finetuned_checkpoint_pools_through_fc_norm(tiny_finetuned, clips):
    import torch
    from transformers import VideoMAEForVideoClassification

    enc = load_encoder(str(tiny_finetuned), device="cpu", dtype="float32")
    assert enc.settings.pooling == "fc_norm_mean"
    assert enc.fc_norm is not None
    emb = enc.embed(clips)
    assert emb.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)

    reference = VideoMAEForVideoClassification.from_pretrained(tiny_finetuned).eval()
    pixels = torch.stack([enc.preprocess(c) for c in clips])
    with torch.no_grad():
        mean = reference.videomae(pixel_values=pixels).last_hidden_state.mean(1)
        expected = unit(reference.fc_norm(mean))
    np.testing.assert_allclose(emb, expected, atol=1e-5)
    # fc_norm is not the identity: plain mean pooling gives other vectors
    assert np.abs(emb - unit(mean)).max() > 0.05


def test_embed_with_source_size_matches_full_resolution_frames(encoder):
    """A reader's pre-shrunk frames, told their source size, embed like the full frames do."""
    import torch

    full = clip_frames(4, width=160, height=96)
    small = (
        torch.nn.functional.interpolate(
            torch.from_numpy(full).permute(0, 3, 1, 2), size=FrameSize(64)(96, 160), mode="bilinear", antialias=True
        )
        .permute(0, 2, 3, 1)
        .contiguous()
        .numpy()
    )
    a = encoder.embed([full])
    b = encoder.embed([small], source_sizes=[(160, 96)])
    assert float(a[0] @ b[0]) > 0.9999


def test_embed_checks_its_input(encoder):
    assert encoder.embed([]).shape == (0, 64)
    with pytest.raises(ValueError, match="16 frames, got 8"):
        encoder.embed([clip_frames(0, n=8)])


# --- checkpoints that cannot be loaded -----------------------------------------------------------


def test_missing_hub_checkpoint_offline_says_how_to_get_it():
    with pytest.raises(ModelUnavailableError) as err:
        load_encoder("nobody/does-not-exist", device="cpu", dtype="float32")
    msg = str(err.value)
    assert "'nobody/does-not-exist' is not available" in msg
    assert "hf download nobody/does-not-exist" in msg
    assert "--model /path/to/local/checkpoint" in msg


def test_missing_folder_says_it_is_missing(tmp_path):
    missing = tmp_path / "no-such-model"
    with pytest.raises(ModelUnavailableError) as err:
        load_encoder(str(missing), device="cpu", dtype="float32")
    msg = str(err.value)
    assert f"no checkpoint folder at {missing}" in msg
    assert "config.json" in msg
    assert "hf download" not in msg


def test_folder_without_config(tmp_path):
    with pytest.raises(ModelUnavailableError) as err:
        load_encoder(str(tmp_path), device="cpu", dtype="float32")
    assert f"cannot load the VideoMAE checkpoint in {tmp_path}: it has no config.json" in str(err.value)
    assert "save_pretrained" in str(err.value)


def test_folder_without_weights(tiny_model, tmp_path):
    shutil.copy(tiny_model / "config.json", tmp_path / "config.json")
    with pytest.raises(ModelUnavailableError) as err:
        load_encoder(str(tmp_path), device="cpu", dtype="float32")
    assert f"cannot load the VideoMAE checkpoint in {tmp_path}" in str(err.value)
    assert "save_pretrained" in str(err.value)


def _truncated(tiny_model, folder, name, legacy=False):
    """``folder`` with the tiny model's config and the first 1,000 bytes of its weights as ``name``."""
    import io

    import torch
    from safetensors.torch import load_file

    folder.mkdir()
    shutil.copy(tiny_model / "config.json", folder / "config.json")
    if name == "model.safetensors":
        data = (tiny_model / name).read_bytes()
    else:  # the same weights as torch.save writes them: a zip archive, or the legacy pickle stream
        buf = io.BytesIO()
        torch.save(load_file(tiny_model / "model.safetensors"), buf, _use_new_zipfile_serialization=not legacy)
        data = buf.getvalue()
    (folder / name).write_bytes(data[:1000])
    return folder


@pytest.mark.parametrize(
    "name, legacy, reason",
    [
        ("model.safetensors", False, "SafetensorError: Error while deserializing header: invalid header length"),
        ("pytorch_model.bin", False, "RuntimeError: PytorchStreamReader failed reading zip archive"),
        ("pytorch_model.bin", True, "error: unpack requires a buffer of 4 bytes"),
    ],
    ids=["safetensors", "bin", "legacy-bin"],
)
def test_folder_with_truncated_weights(tiny_model, tmp_path, vs, name, legacy, reason):
    folder = _truncated(tiny_model, tmp_path / "ckpt", name, legacy)
    with pytest.raises(ModelUnavailableError) as err:
        load_encoder(str(folder), device="cpu", dtype="float32")
    said = f"cannot load the VideoMAE checkpoint in {folder}: {name} cannot be read; it may be truncated or damaged"
    assert f"{said} ({reason}" in str(err.value)
    (tmp_path / "videos").mkdir()
    r = vs("index", tmp_path / "videos", "--index", tmp_path / "idx", "--model", folder)
    assert r.exit_code == 3 and r.output.count("\n") == 1 and r.output.startswith("Error: cannot load the VideoMAE")
    assert not (tmp_path / "idx").exists()


@pytest.mark.parametrize(
    "text, problem", [('{"model_type": "videomae", ', "is not valid JSON"), ("[1, 2]", "is not a JSON object")]
)
def test_folder_whose_config_is_not_json(tiny_model, tmp_path, text, problem):
    shutil.copy(tiny_model / "model.safetensors", tmp_path / "model.safetensors")
    (tmp_path / "config.json").write_text(text)
    with pytest.raises(ModelUnavailableError) as err:
        load_encoder(str(tmp_path), device="cpu", dtype="float32")
    assert f"cannot load the VideoMAE checkpoint in {tmp_path}: its config.json {problem}" in str(err.value)


def test_folder_with_another_model_type(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert", "hidden_size": 8}))
    with pytest.raises(ModelUnavailableError) as err:
        load_encoder(str(tmp_path), device="cpu", dtype="float32")
    assert "'bert' checkpoint" in str(err.value)
    assert "VideoMAE" in str(err.value)


def test_model_unavailable_error_exit_code():
    assert ModelUnavailableError.exit_code == 3


# --- revision ------------------------------------------------------------------------------------


def test_local_revision_is_a_content_hash(tiny_model, encoder, tmp_path):
    first = encoder.settings.revision
    assert first.startswith("sha:") and len(first) == len("sha:") + 32
    assert load_encoder(str(tiny_model), device="cpu", dtype="float32").settings.revision == first
    copy = shutil.copytree(tiny_model, tmp_path / "copy")
    assert load_encoder(str(copy), device="cpu", dtype="float32").settings.revision == first
    make_checkpoint(copy, seed=5)  # same files, other weights
    assert load_encoder(str(copy), device="cpu", dtype="float32").settings.revision != first


# --- devices and dtypes --------------------------------------------------------------------------


def test_resolve_dtype():
    import torch

    expected_auto = torch.bfloat16 if cpu_has_native_bf16() else torch.float32
    assert resolve_dtype("auto", "cpu") == expected_auto
    assert resolve_dtype("float32", "cpu") == torch.float32
    assert resolve_dtype("bfloat16", "cpu") == torch.bfloat16
    assert resolve_dtype("float16", "cuda") == torch.float16
    for bad in ("fp32", "half", "int8", ""):
        with pytest.raises(ValueError, match="dtype must be"):
            resolve_dtype(bad, "cpu")


def test_cpu_has_native_bf16_reads_cpu_flags():
    from pathlib import Path

    flags = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    assert cpu_has_native_bf16() == any(f in flags.split() for f in ("avx512_bf16", "amx_bf16"))


def test_resolve_device():
    import torch

    assert resolve_device("cpu") == "cpu"
    assert resolve_device("auto") == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ValueError, match="device must be"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ModelUnavailableError, match="no CUDA device"):
            resolve_device("cuda")


def test_bfloat16_on_cpu_is_close_to_float32(tiny_model, encoder, clips):
    import torch

    bf16 = load_encoder(str(tiny_model), device="cpu", dtype="bfloat16")
    assert bf16.dtype == torch.bfloat16
    a, b = encoder.embed(clips), bf16.embed(clips)
    assert b.dtype == np.float32
    cosine = np.einsum("ij,ij->i", a, b)
    print(f"bf16 vs fp32 on CPU: cosine {cosine.min():.5f}")
    assert np.all(cosine > 0.99)


@pytest.mark.gpu
@pytest.mark.parametrize("fixture", ["tiny_model", "tiny_finetuned"])
def test_cuda_bfloat16_matches_cpu_float32(fixture, request, clips):
    import torch

    path = request.getfixturevalue(fixture)
    cpu = load_encoder(str(path), device="cpu", dtype="float32")
    gpu = load_encoder(str(path), device="cuda", dtype="bfloat16")
    assert gpu.dtype == torch.bfloat16
    assert next(gpu.model.parameters()).device.type == "cuda"
    a, b = cpu.embed(clips), gpu.embed(clips)
    assert b.dtype == np.float32 and b.shape == a.shape
    cosine = np.einsum("ij,ij->i", a, b)
    print(f"{fixture}: cuda bf16 vs cpu fp32 cosine {cosine.min():.5f}")
    assert np.all(cosine > 0.99)
