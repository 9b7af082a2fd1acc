"""Vision preprocessing settings of a checkpoint (Qwen2-VL, Qwen2.5-VL, Qwen2.5-Omni images and videos).

In: a checkpoint folder. Out: a frozen `VisionPreprocessConfig` for images and one for videos, read the way
transformers 5.24 resolves them, falling back to the class defaults of `Qwen2VLImageProcessor` /
`Qwen2VLVideoProcessor`:
  image: processor_config.json["image_processor"] -> preprocessor_config.json -> defaults
  video: processor_config.json["video_processor"] -> video_preprocessor_config.json
         -> preprocessor_config.json (yes, the image file) -> defaults
transformers >= 5 saves one nested processor_config.json; released checkpoints carry the flat
preprocessor_config.json (image and audio keys together). A top-level `min_pixels` / `max_pixels` wins over
`size`, as in the HF constructors. `Qwen2_5OmniProcessor` then overrides the video size at call time with
its class-level `videos_kwargs` (100352..602112 pixels), whatever the files say: applied here too.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

# Class defaults of transformers 5.24: Qwen2VLImageProcessor.size and Qwen2VLVideoProcessor.size.
IMAGE_MIN_PIXELS = 56 * 56
IMAGE_MAX_PIXELS = 28 * 28 * 1280
VIDEO_MIN_PIXELS = 128 * 28 * 28
VIDEO_MAX_PIXELS = 768 * 28 * 28
# Qwen2_5OmniProcessor.videos_kwargs["size"]: overrides the saved video size on every call.
OMNI_VIDEO_MIN_PIXELS = 128 * 28 * 28
OMNI_VIDEO_MAX_PIXELS = 768 * 28 * 28
OMNI_PROCESSOR_CLASS = "Qwen2_5OmniProcessor"
DEFAULT_VIDEO_FPS = 2.0  # Qwen2_5OmniProcessor hardcodes 2.0 when no fps is given
SUPPORTED_RESAMPLE = {0: "nearest", 2: "bilinear", 3: "bicubic"}  # PIL resample codes we reproduce


@dataclass(frozen=True)
class VisionPreprocessConfig:
    min_pixels: int  # size["shortest_edge"]: smart_resize grows h*w to at least this
    max_pixels: int  # size["longest_edge"]: smart_resize shrinks h*w to at most this
    patch_size: int = 14  # spatial patch side of the vision tower, pixels
    temporal_patch_size: int = 2  # frames per temporal patch; an image is repeated to this many frames
    merge_size: int = 2  # merge_size x merge_size patches become one LLM token
    image_mean: tuple[float, ...] = OPENAI_CLIP_MEAN  # per-channel mean on the 0..1 scale
    image_std: tuple[float, ...] = OPENAI_CLIP_STD  # per-channel std on the 0..1 scale
    rescale_factor: float = 1 / 255  # uint8 -> 0..1
    do_resize: bool = True  # smart_resize to multiples of patch_size * merge_size
    do_rescale: bool = True  # multiply by rescale_factor (fused into normalize when both are on)
    do_normalize: bool = True  # (x - mean) / std
    resample: int = 3  # PIL resample code (3 = bicubic); resized with torchvision, antialias on
    # Video only (ignored for images):
    min_frames: int = 4  # fewest frames fps sampling keeps
    max_frames: int = 768  # most frames fps sampling keeps
    fps: float | None = None  # sampling rate saved in the checkpoint; None: callers use DEFAULT_VIDEO_FPS
    do_sample_frames: bool = False  # whether the HF video processor samples frames itself (Omni: no)
    cap_pixels_per_frame: bool = False  # qwen-vl-utils' total-pixel budget per frame (HF: None -> False)
    max_video_tokens: int = 128000  # budget behind cap_pixels_per_frame

    @property
    def factor(self) -> int:
        """Resized sides are multiples of this: one merged token covers factor x factor pixels."""
        return self.patch_size * self.merge_size

    @property
    def patch_dim(self) -> int:
        """Length of one row of pixel_values: channels * temporal_patch_size * patch_size**2."""
        return 3 * self.temporal_patch_size * self.patch_size * self.patch_size

    def __post_init__(self) -> None:
        if self.resample not in SUPPORTED_RESAMPLE:
            raise ValueError(f"resample={self.resample} is not supported (use one of {SUPPORTED_RESAMPLE})")
        if not 0 < self.min_pixels <= self.max_pixels:
            raise ValueError(f"need 0 < min_pixels <= max_pixels, got {self.min_pixels}, {self.max_pixels}")
        if min(self.patch_size, self.temporal_patch_size, self.merge_size) < 1:
            raise ValueError("patch_size, temporal_patch_size and merge_size must be positive")
        if len(self.image_mean) != 3 or len(self.image_std) != 3:
            raise ValueError("image_mean and image_std need 3 channels")

    @classmethod
    def image_defaults(cls) -> VisionPreprocessConfig:
        return cls(min_pixels=IMAGE_MIN_PIXELS, max_pixels=IMAGE_MAX_PIXELS)

    @classmethod
    def video_defaults(cls) -> VisionPreprocessConfig:
        return cls(min_pixels=VIDEO_MIN_PIXELS, max_pixels=VIDEO_MAX_PIXELS)

    @classmethod
    def from_hf_dict(cls, values: dict[str, Any], defaults: VisionPreprocessConfig) -> VisionPreprocessConfig:
        """A saved HF processor dict (any of the three file layouts) over `defaults`; unknown keys ignored."""
        size = values.get("size") or {}
        min_pixels = _first(values.get("min_pixels"), size.get("shortest_edge"), size.get("min_pixels"))
        max_pixels = _first(values.get("max_pixels"), size.get("longest_edge"), size.get("max_pixels"))
        fields: dict[str, Any] = {
            "min_pixels": min_pixels if min_pixels is not None else defaults.min_pixels,
            "max_pixels": max_pixels if max_pixels is not None else defaults.max_pixels,
        }
        int_fields = ("patch_size", "temporal_patch_size", "merge_size", "min_frames", "max_frames")
        for name in (*int_fields, "resample", "max_video_tokens"):
            if values.get(name) is not None:
                fields[name] = int(values[name])
        for name in ("do_resize", "do_rescale", "do_normalize", "do_sample_frames", "cap_pixels_per_frame"):
            if values.get(name) is not None:
                fields[name] = bool(values[name])
        for name in ("image_mean", "image_std"):
            if values.get(name) is not None:
                value = values[name]
                fields[name] = tuple(float(v) for v in (value if isinstance(value, list) else [value] * 3))
        if values.get("rescale_factor") is not None:
            fields["rescale_factor"] = float(values["rescale_factor"])
        if values.get("fps") is not None:
            fields["fps"] = float(values["fps"])
        return replace(defaults, **fields)


def _first(*values: Any) -> Any:
    return next((value for value in values if value is not None), None)


def _read_json(path: Path) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    with open(path, encoding="utf-8") as file:
        return json.load(file)


def _processor_class(folder: Path) -> str | None:
    for name in ("processor_config.json", "preprocessor_config.json", "video_preprocessor_config.json"):
        values = _read_json(folder / name)
        if values and values.get("processor_class"):
            return str(values["processor_class"])
    config = _read_json(folder / "config.json") or {}
    return OMNI_PROCESSOR_CLASS if config.get("model_type") == "qwen2_5_omni" else None


def load_image_preprocess_config(checkpoint_dir: str | Path) -> VisionPreprocessConfig:
    """The image settings `AutoProcessor.from_pretrained(checkpoint_dir)` would use (5.24 resolution)."""
    folder = Path(checkpoint_dir)
    nested = (_read_json(folder / "processor_config.json") or {}).get("image_processor")
    values = nested if isinstance(nested, dict) else _read_json(folder / "preprocessor_config.json")
    defaults = VisionPreprocessConfig.image_defaults()
    return defaults if values is None else VisionPreprocessConfig.from_hf_dict(values, defaults)


def load_video_preprocess_config(checkpoint_dir: str | Path) -> VisionPreprocessConfig:
    """The video settings the checkpoint's processor applies on a call, Omni's size override included."""
    folder = Path(checkpoint_dir)
    nested = (_read_json(folder / "processor_config.json") or {}).get("video_processor")
    values = nested if isinstance(nested, dict) else None
    for name in ("video_preprocessor_config.json", "preprocessor_config.json"):
        if values is None:
            values = _read_json(folder / name)
    defaults = VisionPreprocessConfig.video_defaults()
    config = defaults if values is None else VisionPreprocessConfig.from_hf_dict(values, defaults)
    if _processor_class(folder) == OMNI_PROCESSOR_CLASS:
        config = replace(config, min_pixels=OMNI_VIDEO_MIN_PIXELS, max_pixels=OMNI_VIDEO_MAX_PIXELS)
    return config
