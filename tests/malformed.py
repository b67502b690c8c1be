"""Images that claim more than they hold, built byte by byte: the kinds of input a server must refuse
from the header alone, before it decodes a pixel."""

import io
import struct
import zlib

from PIL import Image

from tests.support import noise_xray


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def png_claiming(width: int, height: int) -> bytes:
    """A valid PNG header (8-bit grayscale, `width` x `height`) over a few bytes of pixel data: a
    decompression bomb's shape, tiny on the wire."""
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"\0" * 4096)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", header)
        + _png_chunk(b"IDAT", idat)
        + _png_chunk(b"IEND", b"")
    )


def jpeg_claiming(width: int, height: int) -> bytes:
    """A small real JPEG whose frame header (SOF0) is rewritten to say `width` x `height`."""
    buffer = io.BytesIO()
    noise_xray(3, size=16).save(buffer, "JPEG", quality=90)
    data = bytearray(buffer.getvalue())
    at = data.index(b"\xff\xc0")  # SOF0: marker, length (2), precision (1), height (2), width (2)
    data[at + 5 : at + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def png_of(width: int, height: int) -> bytes:
    """A real, fully decodable black PNG (compresses to almost nothing)."""
    buffer = io.BytesIO()
    Image.new("L", (width, height)).save(buffer, "PNG")
    return buffer.getvalue()


def _rle_frame_of_zeros(rows: int, columns: int) -> bytes:
    """One DICOM RLE Lossless frame of 8-bit zeros: a 64-byte header, then PackBits runs per row."""
    row = b"".join(bytes([0x81, 0]) for _ in range(columns // 128))  # 128 repeats of 0 per packet
    header = struct.pack("<16I", 1, 64, *([0] * 14))
    return header + row * rows


def multiframe_dicom(rows: int, columns: int, frames: int) -> bytes:
    """A valid multi-frame DX DICOM (RLE Lossless, all zeros): each frame within a per-image pixel
    cap, all frames together over it. `columns` must be a multiple of 128."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.encaps import encapsulate
    from pydicom.uid import DigitalXRayImageStorageForPresentation, RLELossless, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = DigitalXRayImageStorageForPresentation
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = RLELossless
    dataset = Dataset()
    dataset.file_meta = meta
    dataset.SOPClassUID, dataset.SOPInstanceUID = (
        meta.MediaStorageSOPClassUID,
        meta.MediaStorageSOPInstanceUID,
    )
    dataset.Modality = "DX"
    dataset.Rows, dataset.Columns, dataset.NumberOfFrames = rows, columns, frames
    dataset.SamplesPerPixel, dataset.PhotometricInterpretation = 1, "MONOCHROME2"
    dataset.BitsAllocated, dataset.BitsStored, dataset.HighBit, dataset.PixelRepresentation = 8, 8, 7, 0
    dataset.PixelData = encapsulate([_rle_frame_of_zeros(rows, columns)] * frames)
    dataset["PixelData"].VR = "OB"
    buffer = io.BytesIO()
    dataset.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()
