"""X-ray dimensions read from the header, so that oversized images (decompression bombs, multi-frame
DICOMs) are refused before a pixel is decoded; decoding itself unchanged for what is accepted."""

import io

import numpy as np
import pytest
from PIL import Image

from shared.images import ImageDecodeError, decode_xray, image_header
from tests.malformed import jpeg_claiming, multiframe_dicom, png_claiming, png_of
from tests.support import noise_xray, png_bytes


def jpeg_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def test_header_dimensions_of_png_jpeg_and_dicom(rg1_dicom_path):
    assert image_header(png_bytes(noise_xray(0, size=48))).pixels == 48 * 48
    header = image_header(jpeg_bytes(noise_xray(0, size=40)))
    assert (header.format, header.width, header.height, header.frames) == ("JPEG", 40, 40, 1)
    assert image_header(png_claiming(20000, 20000)).pixels == 400_000_000
    assert image_header(jpeg_claiming(300, 200)).pixels == 60_000
    dicom = image_header(multiframe_dicom(256, 128, 3))
    assert (dicom.format, dicom.width, dicom.height, dicom.frames) == ("DICOM", 128, 256, 3)
    assert image_header(rg1_dicom_path.read_bytes()).pixels == 1841 * 1955


@pytest.mark.parametrize(
    "data, words",
    [
        (png_claiming(20000, 20000), "20000x20000"),
        (jpeg_claiming(30000, 30000), "30000x30000"),
        (multiframe_dicom(4096, 4096, 2), "2 frames"),
        (png_claiming(0, 10), "0x10"),
    ],
)
def test_oversized_or_empty_images_are_refused_from_the_header(data, words):
    with pytest.raises(ImageDecodeError) as refused:
        decode_xray(data, max_pixels=4096 * 4096)
    assert words in str(refused.value)


@pytest.mark.parametrize(
    "data", [b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff\xe0\x00", b"GIF89a" + b"\0" * 40, b"\0" * 128 + b"DICM"]
)
def test_truncated_or_unsupported_headers_are_refused(data):
    with pytest.raises(ImageDecodeError):
        decode_xray(data)


def test_accepted_images_decode_as_before(rg1_dicom_path):
    image = noise_xray(4, size=64)
    assert np.array_equal(np.asarray(decode_xray(png_bytes(image)))[..., 0], np.asarray(image))
    assert decode_xray(png_of(300, 200)).size == (300, 200)
    assert decode_xray(rg1_dicom_path.read_bytes()).size == (1841, 1955)
    frames = decode_xray(multiframe_dicom(128, 128, 3))  # within the cap: the first frame
    assert frames.size == (128, 128)
