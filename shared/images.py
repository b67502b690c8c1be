"""Decoding X-rays the same way in every process: JPEG, PNG or DICOM to an 8-bit image.

The rollout server and the trainer must turn one X-ray into the same pixels, so both call
`decode_xray`; a difference here would silently change the token ids and image features the
importance ratios compare.

Dimensions come from the header first (`image_header`), so an image that would decode to more
pixels than allowed (a decompression bomb: a few kilobytes that claim 20000 x 20000 pixels; a DICOM
of many frames) is refused before a pixel is decoded.
"""

import io
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from shared.errors import UserError

DICOM_MAGIC_OFFSET = 128  # DICOM Part 10: 128-byte preamble, then "DICM"
DEFAULT_MAX_PIXELS = 4096 * 4096  # decompression-bomb guard; the processor resizes far below this
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# JPEG start-of-frame markers (baseline, progressive, lossless, arithmetic): they carry the size.
JPEG_SOF_MARKERS = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}
# Deflated Explicit VR Little Endian: the whole dataset is zlib-compressed, and pydicom inflates all of
# it before reading a tag, so a few megabytes could claim gigabytes. Refused; it is rare for X-rays.
DEFLATED_TRANSFER_SYNTAX = "1.2.840.10008.1.2.1.99"


class ImageDecodeError(UserError):
    """Bytes that are not a usable X-ray image; the message says why."""


@dataclass(frozen=True)
class ImageHeader:
    format: str  # "PNG", "JPEG" or "DICOM"
    width: int
    height: int
    frames: int = 1

    @property
    def pixels(self) -> int:
        """Pixels a full decode produces (every frame of a DICOM)."""
        return self.width * self.height * self.frames

    def describe(self) -> str:
        frames = f" x {self.frames} frames" if self.frames > 1 else ""
        return f"{self.width}x{self.height} pixels{frames}"


def is_dicom(data: bytes) -> bool:
    return data[DICOM_MAGIC_OFFSET : DICOM_MAGIC_OFFSET + 4] == b"DICM"


def _png_header(data: bytes) -> ImageHeader:
    if len(data) < 24 or data[12:16] != b"IHDR":
        raise ImageDecodeError("truncated PNG (no IHDR header)")
    width, height = struct.unpack(">II", data[16:24])
    return ImageHeader("PNG", width, height)


def _jpeg_header(data: bytes) -> ImageHeader:
    at = 2
    while at + 4 <= len(data):
        if data[at] != 0xFF:
            raise ImageDecodeError("corrupt JPEG header")
        marker = data[at + 1]
        if marker == 0xFF:  # fill byte
            at += 1
            continue
        if marker == 0x01 or 0xD0 <= marker <= 0xD7:  # markers without a length
            at += 2
            continue
        if marker in (0xD9, 0xDA):  # end of image, or scan data before any frame header
            break
        if marker in JPEG_SOF_MARKERS:
            if at + 9 > len(data):
                break
            height, width = struct.unpack(">HH", data[at + 5 : at + 9])
            return ImageHeader("JPEG", width, height)
        at += 2 + int.from_bytes(data[at + 2 : at + 4], "big")
    raise ImageDecodeError("truncated JPEG (no frame header)")


def _dicom_transfer_syntax(data: bytes) -> str:
    """The file meta group (0002,xxxx) is always explicit VR little endian: read its transfer syntax
    without letting pydicom touch the dataset after it."""
    at = DICOM_MAGIC_OFFSET + 4
    long_vrs = {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"}
    while at + 8 <= len(data):
        group, element = struct.unpack("<HH", data[at : at + 4])
        if group != 0x0002:
            break
        vr = data[at + 4 : at + 6]
        if vr in long_vrs:
            length, start = struct.unpack("<I", data[at + 8 : at + 12])[0], at + 12
        else:
            length, start = struct.unpack("<H", data[at + 6 : at + 8])[0], at + 8
        if element == 0x0010:
            return data[start : start + length].rstrip(b"\0 ").decode("ascii", "replace")
        at = start + length
    return ""


def _dicom_header(data: bytes):
    # pydicom only for a DICOM file (most images are PNG or JPEG)
    import pydicom

    if _dicom_transfer_syntax(data) == DEFLATED_TRANSFER_SYNTAX:
        raise ImageDecodeError("deflated DICOM (transfer syntax 1.2.840.10008.1.2.1.99) is not accepted")
    try:
        dataset = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True)
        rows, columns = int(dataset.Rows), int(dataset.Columns)
        frames = int(dataset.get("NumberOfFrames", 1) or 1)
    except Exception as error:  # pydicom raises many types for broken files
        raise ImageDecodeError(f"not a readable DICOM image ({error})") from None
    return ImageHeader("DICOM", columns, rows, frames), dataset


def image_header(data: bytes) -> ImageHeader:
    """Format and dimensions from the first bytes (PNG, JPEG) or the tags (DICOM), nothing decoded."""
    if not data:
        raise ImageDecodeError("empty image")
    if is_dicom(data):
        return _dicom_header(data)[0]
    if data.startswith(PNG_SIGNATURE):
        return _png_header(data)
    if data.startswith(b"\xff\xd8"):
        return _jpeg_header(data)
    raise ImageDecodeError("bytes are not a JPEG, PNG or DICOM image")


def check_header(header: ImageHeader, max_pixels: int) -> None:
    if header.width < 1 or header.height < 1 or header.frames < 1:
        raise ImageDecodeError(f"{header.format} header says {header.width}x{header.height} pixels")
    if header.pixels > max_pixels:
        raise ImageDecodeError(f"image of {header.describe()} is over the limit of {max_pixels} pixels")


def dicom_to_uint8(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Decode a DICOM file's first frame to 8-bit grayscale: modality and VOI LUT applied,
    MONOCHROME1 inverted."""
    # pydicom only for a DICOM file (most images are PNG or JPEG)
    from pydicom.pixels import apply_modality_lut, apply_voi_lut, pixel_array

    header, dataset = _dicom_header(data)
    check_header(header, max_pixels)
    try:
        pixels = pixel_array(io.BytesIO(data), index=0 if header.frames > 1 else None)
    except Exception as error:  # pydicom raises many types for broken pixel data
        raise ImageDecodeError(f"not a readable DICOM image ({error})") from None
    if pixels.ndim == 3:
        pixels = pixels.mean(axis=-1)  # colour samples
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
    header = image_header(data)
    check_header(header, max_pixels)
    if header.format == "DICOM":
        return Image.fromarray(dicom_to_uint8(data, max_pixels), mode="L").convert("RGB")
    try:
        image = Image.open(io.BytesIO(data), formats=[header.format])
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError, SyntaxError) as error:
        raise ImageDecodeError(f"corrupt {header.format} ({error})") from None
    if image.size != (header.width, header.height):
        raise ImageDecodeError(f"corrupt {header.format} (header size differs from the decoder's)")
    try:
        image.load()
    except (OSError, SyntaxError, ValueError) as error:
        raise ImageDecodeError(f"corrupt or truncated {header.format} ({error})") from None
    return image.convert("L").convert("RGB")


def load_xray(path: str | Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"image not found: {path}")
    try:
        return decode_xray(path.read_bytes(), max_pixels=max_pixels)
    except ImageDecodeError as error:
        raise ImageDecodeError(f"{path}: {error}") from None


def resolve_under_root(root: str | Path, relative: str | Path) -> Path:
    """A path inside `root`; refuses absolute paths and `..` escapes."""
    root = Path(root).resolve()
    candidate = (root / relative).resolve()
    if Path(relative).is_absolute() or not candidate.is_relative_to(root):
        raise UserError(f"path {str(relative)!r} is outside the data root")
    return candidate
