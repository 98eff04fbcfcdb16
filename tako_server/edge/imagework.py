"""Resizing and encoding one image with Pillow: the work the image pool runs off the loop.

Rules:

- :func:`render` is synchronous and CPU-bound: :mod:`.images` runs it in a bounded thread
  pool, never on an event loop. It takes bytes and returns bytes (no files, no sockets).
- Decompression-bomb limits: sources above :data:`MAX_SOURCE_BYTES` are refused before
  decoding (by the caller, which knows the size first, and here again); an image whose
  header announces more than :data:`MAX_PIXELS` pixels is refused before its pixels are
  decoded (Pillow's own bomb check is an error here, never a warning). Both -> 413.
- Only raster formats are decoded (:data:`SOURCE_FORMATS`: JPEG, PNG, GIF, WebP, AVIF;
  never EPS or other plug-ins that run programs); anything else, or a broken file -> 422.
- Never upscaled: the width is ``min(w, source width)``, the height keeps the aspect
  ratio. EXIF orientation is applied, metadata is dropped (the ICC profile is kept), an
  animation gives its first frame. JPEG sources are decoded at a reduced scale when
  that still covers the target (``draft``).
- Format ``auto`` becomes PNG for images with transparency, else JPEG; JPEG output puts
  transparent pixels on white.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass
from typing import Any

from PIL import Image, ImageOps, UnidentifiedImageError

MAX_SOURCE_BYTES = 32 * 1024 * 1024
MAX_PIXELS = 32_000_000
SOURCE_FORMATS = ("JPEG", "PNG", "GIF", "WEBP", "AVIF")
CONTENT_TYPES = {
    "webp": "image/webp",
    "avif": "image/avif",
    "jpeg": "image/jpeg",
    "png": "image/png",
}
_SAVE: dict[str, tuple[str, dict[str, Any]]] = {
    "webp": ("WEBP", {"method": 4}),
    "avif": ("AVIF", {"speed": 8}),
    "jpeg": ("JPEG", {"optimize": True, "progressive": True}),
    "png": ("PNG", {"compress_level": 6}),
}
_SWAPPED = (5, 6, 7, 8)  # EXIF orientations that turn the image by 90 degrees

Image.MAX_IMAGE_PIXELS = MAX_PIXELS
warnings.simplefilter("error", Image.DecompressionBombWarning)

__all__ = ["ImageFailure", "Rendered", "render"]


class ImageFailure(Exception):
    """The image could not be produced: the HTTP status to answer and a one-line reason."""

    def __init__(self, status: int, reason: str, *, retry_after: bool = False) -> None:
        super().__init__(f"{status}: {reason}")
        self.status = status
        self.reason = reason
        self.retry_after = retry_after


@dataclass(frozen=True, slots=True)
class Rendered:
    """An encoded result."""

    data: bytes
    content_type: str
    width: int
    height: int


def render(data: bytes, width: int, quality: int, fmt: str) -> Rendered:
    """``data`` resized to ``width`` (never up) and encoded as ``fmt`` (see the rules)."""
    if len(data) > MAX_SOURCE_BYTES:
        raise ImageFailure(413, f"the source image is larger than {MAX_SOURCE_BYTES} bytes")
    with _open(data) as source:
        try:
            target = _target_size(source, width)
            image = _decode(source, target)
            if fmt == "auto":
                fmt = "png" if _has_alpha(image) else "jpeg"
            image = _prepare(image, fmt).resize(target, Image.Resampling.LANCZOS, reducing_gap=3.0)
            out = io.BytesIO()
            name, options = _SAVE[fmt]
            icc = image.info.get("icc_profile")
            extra = {"icc_profile": icc} if icc else {}
            image.save(out, name, quality=quality, **options, **extra)
        except (Image.DecompressionBombError, Image.DecompressionBombWarning):
            raise ImageFailure(413, f"the source image has more than {MAX_PIXELS} pixels") from None
        except (OSError, SyntaxError, ValueError, EOFError) as exc:
            raise ImageFailure(422, f"the source image cannot be decoded ({exc})") from None
    return Rendered(out.getvalue(), CONTENT_TYPES[fmt], target[0], target[1])


def _open(data: bytes) -> Image.Image:
    try:
        image = Image.open(io.BytesIO(data), formats=SOURCE_FORMATS)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImageFailure(413, f"the source image has more than {MAX_PIXELS} pixels") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError):
        raise ImageFailure(422, "the source is not an image in a supported format") from None
    w, h = image.size
    if w < 1 or h < 1 or w * h > MAX_PIXELS:
        image.close()
        raise ImageFailure(413, f"the source image has more than {MAX_PIXELS} pixels")
    return image


def _orientation(image: Image.Image) -> int:
    try:
        return int(image.getexif().get(0x0112, 1))
    except Exception:  # a broken EXIF block: ignore the orientation, not the image
        return 1


def _target_size(image: Image.Image, width: int) -> tuple[int, int]:
    w, h = image.size
    if _orientation(image) in _SWAPPED:
        w, h = h, w
    out_w = min(width, w)
    return out_w, max(1, round(h * out_w / w))


def _decode(image: Image.Image, target: tuple[int, int]) -> Image.Image:
    """Load the pixels (JPEG at a reduced scale when possible), upright."""
    if image.format == "JPEG":
        swapped = _orientation(image) in _SWAPPED
        image.draft("RGB", (target[1], target[0]) if swapped else target)
    image.load()
    upright = ImageOps.exif_transpose(image)
    return upright if upright is not None else image


def _has_alpha(image: Image.Image) -> bool:
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        return True
    return image.mode == "P" and "transparency" in image.info


def _prepare(image: Image.Image, fmt: str) -> Image.Image:
    """The image in the mode ``fmt`` encodes (RGB, or RGBA when it keeps transparency)."""
    alpha = _has_alpha(image)
    if fmt == "jpeg" and alpha:
        rgba = image.convert("RGBA")
        flat = Image.new("RGB", rgba.size, (255, 255, 255))
        flat.paste(rgba, mask=rgba.getchannel("A"))
        flat.info["icc_profile"] = image.info.get("icc_profile")
        return flat
    mode = "RGBA" if alpha else "RGB"
    if image.mode == mode:
        return image
    converted = image.convert(mode)
    converted.info["icc_profile"] = image.info.get("icc_profile")
    return converted
