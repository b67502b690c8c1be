"""Blank X-rays for the blank-image shortcut baseline: a uniform mid-gray film of a dataset's typical
size. A checkpoint's answer on it shows what it says when the image carries no information; scored
against every real image's truth, it measures how far label priors alone would go."""

import io
import statistics
from collections.abc import Sequence
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from shared.errors import UserError
from shared.images import is_dicom

MID_GRAY = 128
SIZE_SAMPLE = 32  # images whose headers are read to find a dataset's typical size


def image_size(path: Path) -> tuple[int, int] | None:
    """(width, height) from the file's header alone; None when it cannot be read."""
    try:
        with path.open("rb") as handle:
            head = handle.read(132)
        if is_dicom(head):
            # pydicom only for a DICOM file (most images are PNG or JPEG)
            import pydicom

            dataset = pydicom.dcmread(path, stop_before_pixels=True)
            return int(dataset.Columns), int(dataset.Rows)
        with Image.open(path) as image:  # PIL reads only the header here
            return image.size
    except (OSError, UnidentifiedImageError, AttributeError, ValueError):
        return None


def typical_image_size(paths: Sequence[Path], sample: int = SIZE_SAMPLE) -> tuple[int, int]:
    """Median width and height over up to `sample` images spread evenly through `paths`."""
    if not paths:
        raise UserError("cannot size a blank image for a dataset without images")
    step = max(1, len(paths) // sample)
    sizes = [size for size in (image_size(path) for path in paths[::step][:sample]) if size]
    if not sizes:
        raise UserError(f"none of the images sampled for their size could be read, e.g. {paths[0]}")
    return (
        int(statistics.median_low(width for width, _ in sizes)),
        int(statistics.median_low(height for _, height in sizes)),
    )


def blank_xray_png(width: int, height: int, level: int = MID_GRAY) -> bytes:
    """A uniform grayscale PNG (a few hundred bytes whatever its size)."""
    if width < 1 or height < 1:
        raise UserError(f"a blank image needs a positive size, not {width}x{height}")
    buffer = io.BytesIO()
    Image.new("L", (width, height), level).save(buffer, "PNG")
    return buffer.getvalue()
