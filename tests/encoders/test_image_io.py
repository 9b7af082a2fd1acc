"""Image loading: every source kind, EXIF orientation, mode conversions to RGB, and each MediaError case."""

from __future__ import annotations

import base64
import io
from pathlib import Path

import numpy as np
import pytest
from encoder_media_factories import encoded_image, random_image
from omniserve.encoders.image_io import image_size, load_image, to_rgb
from omniserve.encoders.media_errors import MediaError
from PIL import Image

EXIF_ORIENTATION = 0x0112


def test_sources_bytes_path_data_url_pil(tmp_path: Path) -> None:
    image = random_image(37, 53)
    png = encoded_image(image, "PNG")
    path = tmp_path / "odd.png"
    path.write_bytes(png)
    data_url = "data:image/png;base64," + base64.b64encode(png).decode()
    for source in (png, path, str(path), data_url, image):
        loaded = load_image(source)
        assert loaded.mode == "RGB" and loaded.size == (53, 37)
        np.testing.assert_array_equal(np.asarray(loaded), np.asarray(image))


@pytest.mark.parametrize("orientation", [3, 6, 8])
def test_exif_rotated_jpeg_is_made_upright(orientation: int) -> None:
    image = random_image(30, 70, seed=orientation)  # width 70, height 30
    exif = Image.Exif()
    exif[EXIF_ORIENTATION] = orientation
    jpeg = encoded_image(image, "JPEG", exif=exif.tobytes(), quality=95)
    loaded = load_image(jpeg)
    expected = {3: Image.Transpose.ROTATE_180, 6: Image.Transpose.ROTATE_270, 8: Image.Transpose.ROTATE_90}
    upright = Image.open(io.BytesIO(jpeg)).convert("RGB").transpose(expected[orientation])
    assert loaded.size == upright.size == ((70, 30) if orientation == 3 else (30, 70))
    np.testing.assert_array_equal(np.asarray(loaded), np.asarray(upright))
    assert image_size(jpeg) == (loaded.height, loaded.width)  # header only, same orientation


def test_alpha_is_composited_on_white() -> None:
    rgba = np.zeros((5, 7, 4), dtype=np.uint8)
    rgba[..., :3] = (200, 10, 10)
    rgba[:, :3, 3] = 0  # left columns fully transparent -> white
    rgba[:, 3:, 3] = 255  # right columns opaque -> their colour
    for mode_image in (Image.fromarray(rgba, "RGBA"), Image.fromarray(rgba, "RGBA").convert("LA")):
        rgb = np.asarray(load_image(encoded_image(mode_image, "PNG")))
        assert (rgb[:, :3] == 255).all()
        assert (rgb[:, 3:] == np.asarray(mode_image.convert("RGBA"))[:, 3:, :3]).all()


@pytest.mark.parametrize("mode", ["L", "1", "P", "CMYK", "YCbCr", "RGBA", "LA", "PA", "I;16"])
def test_every_mode_becomes_rgb(mode: str) -> None:
    base = random_image(21, 33, seed=3)
    if mode == "I;16":
        image = Image.fromarray(np.arange(21 * 33, dtype=np.uint16).reshape(21, 33) * 90)
    elif mode == "PA":
        image = base.convert("P").convert("PA")
    else:
        image = base.convert(mode)
    rgb = load_image(image)
    assert rgb.mode == "RGB" and rgb.size == (33, 21)
    if mode == "I;16":  # 16-bit range scaled to 8 bits, not clipped at 255
        assert np.asarray(rgb).max() == round((21 * 33 - 1) * 90 / 257)


def test_palette_with_transparent_index_and_grayscale_jpeg() -> None:
    palette = Image.new("P", (4, 4), 0)
    palette.putpalette([0, 0, 255] + [255, 0, 0] * 255)
    palette.putpixel((0, 0), 1)
    palette.info["transparency"] = 0  # index 0 (blue) is transparent -> white
    rgb = np.asarray(load_image(encoded_image(palette, "PNG", transparency=0)))
    assert tuple(rgb[0, 0]) == (255, 0, 0) and tuple(rgb[1, 1]) == (255, 255, 255)
    gray = load_image(encoded_image(random_image(9, 11).convert("L"), "JPEG"))
    assert gray.mode == "RGB" and np.ptp(np.asarray(gray), axis=2).max() == 0


def test_animated_gif_gives_its_first_frame() -> None:
    frames = [Image.new("RGB", (8, 6), colour) for colour in ((255, 0, 0), (0, 255, 0))]
    gif = encoded_image(frames[0], "GIF", save_all=True, append_images=frames[1:])
    assert tuple(np.asarray(load_image(gif))[0, 0]) == (255, 0, 0)


def test_high_bit_depth_conversion_scales() -> None:
    image = Image.fromarray(np.full((3, 3), 65535, dtype=np.uint16))
    assert np.asarray(to_rgb(image)).min() == 255


def test_corrupt_truncated_unsupported_and_oversized() -> None:
    jpeg = encoded_image(random_image(64, 64), "JPEG")
    png = encoded_image(random_image(64, 64), "PNG")
    with pytest.raises(MediaError, match="truncated"):
        load_image(jpeg[: len(jpeg) // 2], item="image 3")
    with pytest.raises(MediaError, match="image 1: corrupt"):
        load_image(png[: len(png) // 2], item="image 1")
    with pytest.raises(MediaError, match="unsupported or unrecognized image format"):
        load_image(b"this is not an image at all")
    eps = encoded_image(random_image(8, 8), "EPS")  # PIL reads EPS through Ghostscript: refused
    with pytest.raises(MediaError, match="unsupported"):
        load_image(eps)
    with pytest.raises(MediaError, match="over the limit of 4000"):
        load_image(jpeg, max_pixels=4000)
    with pytest.raises(MediaError, match="over the limit"):
        load_image(random_image(64, 64), max_pixels=4000)
    with pytest.raises(MediaError, match="empty data"):
        load_image(b"")


def test_default_pixel_cap_is_checked_before_decoding() -> None:
    # A 10000x6000 PNG of one colour is tiny on disk; the cap (50 MP) refuses it from the header alone.
    big = encoded_image(Image.new("L", (10000, 6000)), "PNG")
    assert len(big) < 200_000
    with pytest.raises(MediaError, match="60000000 pixels"):
        load_image(big)
    assert image_size(big) == (6000, 10000)
