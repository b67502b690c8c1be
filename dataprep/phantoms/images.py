"""A phantom patient's films: the frontal chest with its findings, a plain lateral view, and the
"institution style" each dataset format gets (contrast, noise, burned-in markers), so that
cross-dataset generalisation can be studied on phantoms too."""

import io
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

from dataprep.phantoms.findings import FINDING_DRAWERS
from dataprep.phantoms.render import PatientFrame, draw_normal_chest, ellipse, random_anatomy, smooth_noise
from shared.labels import CHEXPERT_LABELS

STYLE_LUT_LEVELS = 1024  # the tone curve is applied through a lookup table: much faster than `**`


@dataclass(frozen=True)
class InstitutionStyle:
    name: str
    gamma: float  # > 1 darkens the mid-tones
    contrast: float  # slope around mid-grey
    brightness: float
    noise: float  # std of pixel noise, in units of full scale
    marker: str  # burned-in side marker
    marker_corner: str  # "top-left" | "top-right" | "bottom-left"
    banner: bool  # a burned-in text strip along the bottom edge
    image_format: str  # "JPEG" | "PNG"


INSTITUTION_STYLES: dict[str, InstitutionStyle] = {
    "mimic": InstitutionStyle("mimic", 0.9, 1.05, 0.0, 0.012, "L", "top-right", False, "JPEG"),
    "chexpert": InstitutionStyle("chexpert", 1.15, 1.25, -0.03, 0.02, "R", "top-left", False, "JPEG"),
    "nih": InstitutionStyle("nih", 0.8, 0.85, 0.06, 0.03, "PA", "bottom-left", True, "PNG"),
}


@dataclass(frozen=True)
class FrontalFilm:
    density: np.ndarray  # float32 in [0, 1], X-ray density, findings drawn
    drawn: dict[str, dict]  # label -> what was drawn (side, size), the ground truth detail


def drawing_size(size: int) -> int:
    """Films are drawn at half the output size and scaled up: four times fewer pixels to compute,
    and the findings are large by design, so nothing a 224 px model could see is lost."""
    return max(64, size // 2)


def upscale(density: np.ndarray, size: int) -> np.ndarray:
    if density.shape[0] == size:
        return density
    return np.asarray(Image.fromarray(density, mode="F").resize((size, size), Image.Resampling.BILINEAR))


def render_frontal(positives: list[str], rng: np.random.Generator, size: int) -> FrontalFilm:
    """Draw a frontal chest film showing exactly the given CheXpert findings."""
    unknown = set(positives) - set(CHEXPERT_LABELS)
    if unknown:
        raise ValueError(f"no drawing for {sorted(unknown)}")
    frame = PatientFrame.make(
        drawing_size(size),
        scale=rng.uniform(0.86, 1.02),
        shift_u=rng.uniform(-0.05, 0.05),
        shift_v=rng.uniform(-0.04, 0.06),
        angle_deg=rng.uniform(-6, 6),
    )
    anatomy = random_anatomy(rng, "Cardiomegaly" in positives, "Enlarged Cardiomediastinum" in positives)
    layers = draw_normal_chest(frame, anatomy, rng, drawing_size(size))
    drawn: dict[str, dict] = {}
    if "Cardiomegaly" in positives:
        drawn["Cardiomegaly"] = {"heart_radius": round(anatomy.heart_radius_u, 3)}
    if "Enlarged Cardiomediastinum" in positives:
        drawn["Enlarged Cardiomediastinum"] = {"half_width": round(anatomy.mediastinum_half_width, 3)}
    for label in CHEXPERT_LABELS:  # fixed order keeps the random stream reproducible
        if label in positives and label in FINDING_DRAWERS:
            drawn[label] = FINDING_DRAWERS[label](frame, anatomy, layers, rng)
    exposure = rng.uniform(0.85, 1.15)
    density = np.clip(layers["density"], 0.0, 1.0).astype(np.float32) ** np.float32(exposure)
    return FrontalFilm(density=upscale(density, size), drawn=drawn)


def render_lateral(rng: np.random.Generator, size: int) -> np.ndarray:
    """A plain lateral view (no findings drawn): loaders skip laterals by default."""
    frame = PatientFrame.make(
        drawing_size(size),
        scale=rng.uniform(0.88, 1.0),
        shift_u=0.0,
        shift_v=rng.uniform(-0.03, 0.05),
        angle_deg=rng.uniform(-4, 4),
    )
    body = ellipse(frame, 0.0, 0.1, 0.7, 1.0, softness=0.08)
    lung = ellipse(frame, 0.02, -0.1, 0.45, 0.6) * np.clip((0.5 - frame.v) / 0.03, 0.0, 1.0)
    density = 0.06 + 0.42 * body - 0.3 * lung
    density = np.maximum(density, 0.68 * ellipse(frame, -0.22, 0.3, 0.26, 0.24))  # heart, anterior
    spine = np.clip(1.0 - np.abs(frame.u - 0.52 + 0.08 * frame.v) / 0.08, 0.0, 1.0) * body
    density = np.maximum(density, 0.65 * spine)
    density = density + 0.06 * smooth_noise(rng, drawing_size(size), 16) * lung
    return upscale(np.clip(density, 0.0, 1.0).astype(np.float32), size)


def quantize(density: np.ndarray) -> np.ndarray:
    """Density -> indices into a style's tone curve; done once per film, shared by every style."""
    return np.round(np.clip(density, 0.0, 1.0) * (STYLE_LUT_LEVELS - 1)).astype(np.uint16)


class FilmStyler:
    """Turns films into 8-bit images as one institution's equipment would write them: tone curve,
    noise, burned-in markers. Built once per style and size: the curve and markers are fixed."""

    def __init__(self, style: InstitutionStyle, size: int):
        self.style = style
        levels = np.linspace(0.0, 1.0, STYLE_LUT_LEVELS, dtype=np.float32)
        self.curve = ((levels**style.gamma - 0.5) * style.contrast + 0.5 + style.brightness) * 255.0 + 0.5
        self.noise_scale = np.float32(style.noise * 255.0)
        stamp, mask = Image.new("L", (size, size), 0), Image.new("L", (size, size), 0)
        font_size = max(8, size // 14)
        margin = size // 20
        corner = {
            "top-left": (margin, margin),
            "top-right": (size - margin - font_size * len(style.marker), margin),
            "bottom-left": (margin, size - margin - font_size * 2),
        }[style.marker_corner]
        for image, value in ((stamp, 250), (mask, 255)):
            ImageDraw.Draw(image).text(corner, style.marker, fill=value, font_size=font_size)
        if style.banner:
            for image, (bar, text) in ((stamp, (10, 200)), (mask, (255, 255))):
                draw = ImageDraw.Draw(image)
                draw.rectangle((0, size - size // 16, size, size), fill=bar)
                draw.text((size // 3, size - size // 16), "NIH CC", fill=text, font_size=max(6, size // 20))
        self.stamp = np.asarray(stamp)
        self.mask = np.asarray(mask) > 0

    def apply(self, film_levels: np.ndarray, noise: np.ndarray) -> Image.Image:
        values = self.curve[film_levels]
        values += noise * self.noise_scale
        np.clip(values, 0.0, 255.0, out=values)
        pixels = values.astype(np.uint8)
        np.copyto(pixels, self.stamp, where=self.mask)
        return Image.fromarray(pixels, mode="L")

    def encode(self, film_levels: np.ndarray, noise: np.ndarray) -> bytes:
        buffer = io.BytesIO()
        image = self.apply(film_levels, noise)
        if self.style.image_format == "JPEG":
            image.save(buffer, format="JPEG", quality=92)
        else:
            # Noisy films barely compress (55 kB vs 66 kB at level 1) and zlib would be the slowest
            # step of the whole generator.
            image.save(buffer, format="PNG", compress_level=0)
        return buffer.getvalue()
