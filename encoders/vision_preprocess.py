"""Image and video preprocessing for the Qwen2-VL / Qwen2.5-VL / Qwen2.5-Omni vision tower.

In: an RGB image (PIL or uint8 [H, W, 3]) or video frames (uint8 [T, H, W, 3]) and a `VisionPreprocessConfig`.
Out: `VisionInputs`: `pixel_values` [num_patches, 3 * temporal_patch_size * patch_size**2] float32 and
`grid_thw` (t, h, w) in patches, equal to transformers 5.24's `Qwen2VLImageProcessor` /
`Qwen2VLVideoProcessor` (the torchvision backend, which `AutoProcessor` picks for these checkpoints):
  1. smart_resize to multiples of factor = patch_size * merge_size within [min_pixels, max_pixels];
  2. torchvision resize of the uint8 tensor (bicubic, antialias=True), rounded back to uint8;
  3. fused rescale + normalize in float32: (x - mean * 255) / (std * 255);
  4. patchify: pad the frames to a multiple of temporal_patch_size by repeating the last one (an image is
     repeated temporal_patch_size times), then order patches block-major over merge groups.
Token counts come from sizes alone (`num_image_tokens`, `num_video_tokens`), without decoding pixels.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from omniserve.encoders.image_io import to_rgb
from omniserve.encoders.media_errors import MediaError
from omniserve.encoders.vision_config import VisionPreprocessConfig
from PIL import Image
from torchvision.transforms.v2 import functional as tvF

MAX_ASPECT_RATIO = 200  # smart_resize refuses longer/shorter side ratios above this, as HF does
_INTERPOLATION = {
    0: tvF.InterpolationMode.NEAREST_EXACT,  # HF maps PIL NEAREST to NEAREST_EXACT
    2: tvF.InterpolationMode.BILINEAR,
    3: tvF.InterpolationMode.BICUBIC,
}


@dataclass(frozen=True)
class VisionInputs:
    pixel_values: torch.Tensor  # [num_patches, 3 * temporal_patch_size * patch_size**2] float32
    grid_thw: tuple[int, int, int]  # (t, h, w) in patches; num_patches = t * h * w
    num_tokens: int  # placeholder tokens in the prompt: t * h * w // merge_size**2


def smart_resize(
    height: int, width: int, factor: int, min_pixels: int, max_pixels: int, *, item: str = "image"
) -> tuple[int, int]:
    """(height, width) -> the resized (height, width): multiples of `factor`, h*w within the bounds, aspect
    ratio kept as closely as possible. Same arithmetic as transformers' `smart_resize`."""
    if height < 1 or width < 1:
        raise MediaError(f"image has no pixels ({width}x{height})", item=item)
    if max(height, width) / min(height, width) > MAX_ASPECT_RATIO:
        raise MediaError(
            f"aspect ratio {max(height, width) / min(height, width):.1f} is over {MAX_ASPECT_RATIO} "
            f"({width}x{height})",
            item=item,
        )
    resized_height = round(height / factor) * factor
    resized_width = round(width / factor) * factor
    if resized_height * resized_width > max_pixels:
        beta = math.sqrt((height * width) / max_pixels)
        resized_height = max(factor, math.floor(height / beta / factor) * factor)
        resized_width = max(factor, math.floor(width / beta / factor) * factor)
    elif resized_height * resized_width < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        resized_height = math.ceil(height * beta / factor) * factor
        resized_width = math.ceil(width * beta / factor) * factor
    return resized_height, resized_width


def _max_pixels(config: VisionPreprocessConfig, num_frames: int | None) -> int:
    """The per-frame pixel cap; for videos with cap_pixels_per_frame, an even share of the video budget."""
    if num_frames is None or not config.cap_pixels_per_frame:
        return config.max_pixels
    total_pixels = int(config.max_video_tokens * config.factor * config.factor * 0.9)
    share = total_pixels * config.temporal_patch_size // num_frames
    return max(min(config.max_pixels, share), int(config.min_pixels * 1.05))


def resized_size(
    height: int,
    width: int,
    config: VisionPreprocessConfig,
    *,
    num_frames: int | None = None,
    item: str = "image",
) -> tuple[int, int]:
    """Frame size after preprocessing; `num_frames` (videos only) matters with cap_pixels_per_frame."""
    if not config.do_resize:
        if height % config.factor or width % config.factor:
            raise MediaError(
                f"{width}x{height} is not a multiple of {config.factor} and do_resize is off", item=item
            )
        return height, width
    max_pixels = _max_pixels(config, num_frames)
    return smart_resize(height, width, config.factor, config.min_pixels, max_pixels, item=item)


def image_grid_thw(height: int, width: int, config: VisionPreprocessConfig) -> tuple[int, int, int]:
    resized_height, resized_width = resized_size(height, width, config)
    return 1, resized_height // config.patch_size, resized_width // config.patch_size


def video_grid_thw(
    num_frames: int, height: int, width: int, config: VisionPreprocessConfig
) -> tuple[int, int, int]:
    """Grid of a video of `num_frames` frames as given to the processor (after any frame sampling)."""
    if num_frames < 1:
        raise MediaError("video has no frames", item="video")
    resized_height, resized_width = resized_size(height, width, config, num_frames=num_frames, item="video")
    grid_t = -(-num_frames // config.temporal_patch_size)  # odd counts are padded with the last frame
    return grid_t, resized_height // config.patch_size, resized_width // config.patch_size


def num_image_tokens(height: int, width: int, config: VisionPreprocessConfig) -> int:
    """Placeholder tokens of an image of this (upright) size, without decoding it."""
    return math.prod(image_grid_thw(height, width, config)) // config.merge_size**2


def num_video_tokens(num_frames: int, height: int, width: int, config: VisionPreprocessConfig) -> int:
    """Placeholder tokens of a video of `num_frames` sampled frames, without decoding it."""
    return math.prod(video_grid_thw(num_frames, height, width, config)) // config.merge_size**2


def _resize_and_normalize(
    frames: torch.Tensor, config: VisionPreprocessConfig, num_frames: int | None, item: str
) -> torch.Tensor:
    """uint8 [T, 3, H, W] -> float32 [T, 3, H', W'], the HF torchvision backend's exact operations."""
    height, width = frames.shape[-2:]
    new_height, new_width = resized_size(height, width, config, num_frames=num_frames, item=item)
    if config.do_resize:
        frames = tvF.resize(
            frames, [new_height, new_width], interpolation=_INTERPOLATION[config.resample], antialias=True
        )
    if config.do_normalize:
        mean, std = torch.tensor(config.image_mean), torch.tensor(config.image_std)
        if config.do_rescale:  # fused: (x * r - m) / s == (x - m / r) / (s / r)
            mean, std = mean * (1.0 / config.rescale_factor), std * (1.0 / config.rescale_factor)
        return tvF.normalize(frames.to(torch.float32), mean.to(frames.device), std.to(frames.device))
    if config.do_rescale:
        return frames * config.rescale_factor
    return frames.to(torch.float32)


def patchify(
    frames: torch.Tensor, config: VisionPreprocessConfig
) -> tuple[torch.Tensor, tuple[int, int, int]]:
    """[T, C, H, W] (H, W multiples of patch_size * merge_size) -> ([gt*gh*gw, C*tp*p*p], (gt, gh, gw)).

    Rows run block-major: for each temporal patch, for each merge block (row-major over the h/m x w/m
    blocks), its m x m patches row-major; within a row the values run (channel, frame, y, x):

        [gt, tp, C, gh/m, m, p, gw/m, m, p] -> [gt, gh/m, gw/m, m, m, C, tp, p, p]
    """
    num_frames, channels, height, width = frames.shape
    tp, p, m = config.temporal_patch_size, config.patch_size, config.merge_size
    if pad := -num_frames % tp:  # repeat the last frame, as Qwen2VLVideoProcessor.patchify does
        frames = torch.cat((frames, frames[-1:].expand(pad, -1, -1, -1)), dim=0)
        num_frames += pad
    grid_t, grid_h, grid_w = num_frames // tp, height // p, width // p
    patches = frames.reshape(grid_t, tp, channels, grid_h // m, m, p, grid_w // m, m, p)
    patches = patches.permute(0, 3, 6, 4, 7, 2, 1, 5, 8)
    pixel_values = patches.reshape(grid_t * grid_h * grid_w, channels * tp * p * p)
    return pixel_values, (grid_t, grid_h, grid_w)


def _as_uint8_frames(array: np.ndarray | torch.Tensor, ndim: int, item: str) -> torch.Tensor:
    """uint8 [..., H, W, 3] (numpy or torch, channels last) -> torch uint8 [..., 3, H, W]."""
    if isinstance(array, np.ndarray):
        array = np.ascontiguousarray(array)
        tensor = torch.from_numpy(array if array.flags.writeable else array.copy())
    else:
        tensor = array
    if tensor.dtype != torch.uint8 or tensor.ndim != ndim or tensor.shape[-1] != 3:
        expected = "[T, H, W, 3]" if ndim == 4 else "[H, W, 3]"
        raise MediaError(f"expected uint8 {expected}, got {tensor.dtype} {tuple(tensor.shape)}", item=item)
    return tensor.movedim(-1, -3).contiguous()


def preprocess_image(
    image: Image.Image | np.ndarray | torch.Tensor,
    config: VisionPreprocessConfig,
    *,
    device: torch.device | str | None = None,
    item: str = "image",
) -> VisionInputs:
    """One RGB image (PIL, or uint8 [H, W, 3]) -> VisionInputs with grid (1, h, w)."""
    if isinstance(image, Image.Image):
        image = np.asarray(to_rgb(image))
    frames = _as_uint8_frames(image, 3, item)[None]  # [1, 3, H, W]
    if device is not None:
        frames = frames.to(device)
    frames = _resize_and_normalize(frames, config, None, item)
    frames = frames.expand(config.temporal_patch_size, -1, -1, -1)  # an image is tp identical frames
    pixel_values, grid_thw = patchify(frames, config)
    return VisionInputs(pixel_values, grid_thw, math.prod(grid_thw) // config.merge_size**2)


def preprocess_video(
    frames: np.ndarray | torch.Tensor,
    config: VisionPreprocessConfig,
    *,
    device: torch.device | str | None = None,
    item: str = "video",
) -> VisionInputs:
    """Sampled frames, uint8 [T, H, W, 3] -> VisionInputs with grid (ceil(T / tp), h, w)."""
    video = _as_uint8_frames(frames, 4, item)  # [T, 3, H, W]
    if video.shape[0] == 0:
        raise MediaError("video has no frames", item=item)
    if device is not None:
        video = video.to(device)
    video = _resize_and_normalize(video, config, video.shape[0], item)
    pixel_values, grid_thw = patchify(video, config)
    return VisionInputs(pixel_values, grid_thw, math.prod(grid_thw) // config.merge_size**2)
