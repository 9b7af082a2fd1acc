"""Image loading: encoded bytes, a `data:` URL, a path or a PIL image in; an RGB PIL image out.

In: `ImageSource` (bytes, data URL, path, or `PIL.Image.Image`). Out: a fully decoded `PIL.Image.Image` in
mode "RGB", upright (EXIF orientation applied), transparency composited onto white the way transformers'
`convert_to_rgb` does. `image_size` reads only the header (for placeholder counts before decoding).
Every failure (unknown or disallowed format, corrupt or truncated data, over the pixel cap) is a
`MediaError`. The pixel cap is checked from the header, before any pixel is decoded.
"""

from __future__ import annotations

import warnings

import numpy as np
from omniserve.encoders.media_errors import MediaError
from omniserve.encoders.media_source import MediaSource, resolve_source
from PIL import Image, ImageOps, UnidentifiedImageError

ImageSource = MediaSource | Image.Image

DEFAULT_MAX_IMAGE_PIXELS = 50_000_000  # width * height of the stored image; 50 MP
# Formats PIL may decode. Others (EPS runs Ghostscript, PSD, ICNS, ...) are refused on purpose.
ALLOWED_IMAGE_FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF", "MPO", "AVIF")
_ORIENTATION_TAG = 0x0112  # EXIF Orientation; values 5..8 swap width and height
_WHITE = (255, 255, 255, 255)


def _open(source: MediaSource, item: str) -> Image.Image:
    """Open lazily (header only) with the allowed decoders; MediaError when nothing recognises the data."""
    resolved = resolve_source(source, item=item)
    Image.init()  # register every plugin once, so that `formats` may name MPO, AVIF, ...
    formats = [name for name in ALLOWED_IMAGE_FORMATS if name in Image.OPEN]
    stream = resolved.open()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # our own cap decides
            return Image.open(stream, formats=formats)
    except UnidentifiedImageError as error:
        stream.close()
        raise MediaError(
            f"unsupported or unrecognized image format (allowed: {', '.join(ALLOWED_IMAGE_FORMATS)})",
            item=item,
        ) from error
    except Image.DecompressionBombError as error:
        stream.close()
        raise MediaError(f"image is too large to decode safely ({error})", item=item) from error
    except (OSError, ValueError, SyntaxError) as error:
        stream.close()
        raise MediaError(f"corrupt image data ({error})", item=item) from error


def _check_pixels(image: Image.Image, max_pixels: int, item: str) -> None:
    width, height = image.size
    if width <= 0 or height <= 0:
        raise MediaError(f"image has no pixels ({width}x{height})", item=item)
    if width * height > max_pixels:
        raise MediaError(
            f"image has {width}x{height} = {width * height} pixels, over the limit of {max_pixels}", item=item
        )


def _orientation(image: Image.Image) -> int:
    """The EXIF orientation from what is parsed at open. PNG's `getexif` would decode the whole image to
    look for an eXIf chunk after the pixel data: only one before it (where the PNG spec puts it) counts."""
    try:
        if getattr(image, "format", None) == "PNG":
            raw = image.info.get("exif")
            if raw is None:
                return 1
            exif = Image.Exif()
            exif.load(raw)
            return int(exif.get(_ORIENTATION_TAG, 1))
        return int(image.getexif().get(_ORIENTATION_TAG, 1))
    except Exception:  # a broken EXIF block is ignored, like ImageOps.exif_transpose does
        return 1


def _oriented_size(image: Image.Image) -> tuple[int, int]:
    """(height, width) after EXIF orientation, from the header alone."""
    width, height = image.size
    orientation = _orientation(image)
    return (width, height) if orientation in (5, 6, 7, 8) else (height, width)


def _high_bit_depth_to_8bit(image: Image.Image) -> Image.Image:
    """16-bit and 32-bit grayscale ("I;16*", "I", "F") -> "L". PIL's own convert would clip at 255."""
    values = np.asarray(image)
    if image.mode.startswith("I;16") or (image.mode == "I" and values.max(initial=0) > 255):
        scaled = values.astype(np.float64) / 257.0  # 0..65535 -> 0..255
    else:
        scaled = values.astype(np.float64)
    return Image.fromarray(np.clip(np.rint(scaled), 0, 255).astype(np.uint8), mode="L")


def to_rgb(image: Image.Image) -> Image.Image:
    """Any PIL mode -> "RGB": alpha (RGBA, LA, PA, P or L/RGB with a transparent colour) composited on
    white, as transformers' `convert_to_rgb` does; CMYK, YCbCr, grayscale, bilevel and 16-bit converted."""
    if image.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
        image = _high_bit_depth_to_8bit(image)
    has_alpha = "A" in image.getbands() or image.info.get("transparency") is not None
    if has_alpha:
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, _WHITE)
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image if image.mode == "RGB" else image.convert("RGB")


def load_image(
    source: ImageSource, *, max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS, item: str = "image"
) -> Image.Image:
    """Decode `source` into an upright RGB image; MediaError for anything that is not a usable image.

    The first frame of an animated GIF/WebP is used. `max_pixels` caps width * height of the stored image.
    """
    opened = source if isinstance(source, Image.Image) else _open(source, item)
    try:
        _check_pixels(opened, max_pixels, item)
        opened.load()  # full decode: truncated or corrupt pixel data fails here
        upright = ImageOps.exif_transpose(opened) or opened
        rgb = to_rgb(upright)
        return rgb.copy() if rgb is opened and opened is not source else rgb
    except MediaError:
        raise
    except (OSError, ValueError, SyntaxError, EOFError) as error:
        raise MediaError(f"corrupt or truncated image data ({error})", item=item) from error
    finally:
        if opened is not source:
            opened.close()


def image_size(source: ImageSource, *, item: str = "image") -> tuple[int, int]:
    """(height, width) of the upright image, read from the header without decoding pixels.

    For scheduling: `vision_preprocess.num_image_tokens(*image_size(src), config)` gives the placeholder
    count before the image is decoded. No pixel cap is applied here; `load_image` applies it.
    """
    if isinstance(source, Image.Image):
        return _oriented_size(source)
    image = _open(source, item)
    try:
        return _oriented_size(image)
    finally:
        image.close()


def probe_image(
    source: MediaSource, *, max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS, item: str = "image"
) -> tuple[int, int]:
    """`image_size` of encoded data with the checks `load_image` makes before decoding (allowed format,
    pixel cap): for planning an item that is decoded elsewhere."""
    image = _open(source, item)
    try:
        _check_pixels(image, max_pixels, item)
        return _oriented_size(image)
    finally:
        image.close()
