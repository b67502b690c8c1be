"""Decoding X-rays the same way in every process: JPEG, PNG or DICOM to an 8-bit image.

The rollout server and the trainer must turn one X-ray into the same pixels, so both call
`decode_xray`; a difference here would silently change the token ids and image features the
importance ratios compare.
"""

import io
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from shared.errors import UserError

DICOM_MAGIC_OFFSET = 128  # DICOM Part 10: 128-byte preamble, then "DICM"
DEFAULT_MAX_PIXELS = 4096 * 4096  # decompression-bomb guard; the processor resizes far below this


class ImageDecodeError(UserError):
    """Bytes that are not a usable X-ray image; the message says why."""


def is_dicom(data: bytes) -> bool:
    return data[DICOM_MAGIC_OFFSET : DICOM_MAGIC_OFFSET + 4] == b"DICM"


def dicom_to_uint8(data: bytes) -> np.ndarray:
    """Decode a DICOM file to 8-bit grayscale: modality and VOI LUT applied, MONOCHROME1 inverted."""
    import pydicom
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    try:
        dataset = pydicom.dcmread(io.BytesIO(data))
        pixels = dataset.pixel_array
    except Exception as error:  # pydicom raises many types for broken files
        raise ImageDecodeError(f"not a readable DICOM image ({error})") from None
    if pixels.ndim == 3 and pixels.shape[-1] not in (3, 4):
        pixels = pixels[0]  # multi-frame: the first frame
    if pixels.ndim == 3:
        pixels = pixels.mean(axis=-1)
    values = apply_modality_lut(pixels, dataset).astype(np.float64)
    if "WindowCenter" in dataset or "VOILUTSequence" in dataset:
        values = apply_voi_lut(values, dataset).astype(np.float64)
    low, high = np.percentile(values, [0.5, 99.5])
    if high <= low:
        high = low + 1.0
    scaled = np.clip((values - low) / (high - low), 0.0, 1.0)
    if str(dataset.get("PhotometricInterpretation", "")).upper() == "MONOCHROME1":
        scaled = 1.0 - scaled  # MONOCHROME1: high values are dark
    return np.round(scaled * 255.0).astype(np.uint8)


def decode_xray(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Bytes of a JPEG, PNG or DICOM X-ray -> an RGB PIL image (grayscale replicated)."""
    if not data:
        raise ImageDecodeError("empty image")
    if is_dicom(data):
        gray = dicom_to_uint8(data)
        if gray.shape[0] * gray.shape[1] > max_pixels:
            raise ImageDecodeError(
                f"image of {gray.shape[1]}x{gray.shape[0]} pixels is over the limit of {max_pixels}"
            )
        return Image.fromarray(gray, mode="L").convert("RGB")
    try:
        image = Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        raise ImageDecodeError("bytes are not a JPEG, PNG or DICOM image") from None
    if image.width * image.height > max_pixels:
        raise ImageDecodeError(
            f"image of {image.width}x{image.height} pixels is over the limit of {max_pixels}"
        )
    try:
        image.load()
    except (OSError, SyntaxError) as error:
        raise ImageDecodeError(f"corrupt or truncated {image.format or 'image'} ({error})") from None
    return image.convert("L").convert("RGB")


def load_xray(path: str | Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"image not found: {path}")
    try:
        return decode_xray(path.read_bytes(), max_pixels=max_pixels)
    except ImageDecodeError as error:
        raise ImageDecodeError(f"{path}: {error}") from None


def resolve_under_root(root: str | Path, relative: str) -> Path:
    """A path inside `root`; refuses absolute paths and `..` escapes."""
    root = Path(root).resolve()
    candidate = (root / relative).resolve()
    if Path(relative).is_absolute() or not candidate.is_relative_to(root):
        raise UserError(f"path {relative!r} is outside the data root")
    return candidate
