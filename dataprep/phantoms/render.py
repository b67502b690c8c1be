"""Drawing synthetic chest radiographs whose CheXpert findings are visible.

Coordinates are normalised: `u` runs left to right across the image, `v` top to bottom, both in
about [-1, 1]; as on a real PA film the patient's right lung is on the image's left. Intensity is
X-ray density (0 = air, black; 1 = metal, white). Findings are drawn large and high-contrast on
purpose: a tiny random-weight vision model has to be able to learn them at 224 px.
"""

from dataclasses import dataclass

import numpy as np
from PIL import Image

Side = int  # -1: patient's right (image left), +1: patient's left (image right)


@dataclass(frozen=True)
class Lung:
    centre_u: float
    centre_v: float
    radius_u: float
    radius_v: float


@dataclass(frozen=True)
class Anatomy:
    """One patient's geometry; drawn in a frame already scaled, shifted and rotated."""

    right_lung: Lung
    left_lung: Lung
    heart_radius_u: float
    mediastinum_half_width: float
    diaphragm_v: float

    def lung(self, side: Side) -> Lung:
        return self.right_lung if side < 0 else self.left_lung


@dataclass(frozen=True)
class PatientFrame:
    """Normalised coordinates of every pixel for one patient's position on the detector."""

    u: np.ndarray
    v: np.ndarray

    @classmethod
    def make(
        cls, size: int, scale: float, shift_u: float, shift_v: float, angle_deg: float
    ) -> "PatientFrame":
        axis = (np.arange(size, dtype=np.float32) + 0.5) / size * 2.0 - 1.0
        v, u = np.meshgrid(axis, axis, indexing="ij")
        angle = np.deg2rad(angle_deg)
        cos, sin = np.float32(np.cos(angle)), np.float32(np.sin(angle))
        u, v = (u - shift_u) / scale, (v - shift_v) / scale
        return cls(u=cos * u + sin * v, v=-sin * u + cos * v)


def ellipse(
    frame: PatientFrame, cu: float, cv: float, ru: float, rv: float, softness: float = 0.04
) -> np.ndarray:
    """1 inside, 0 outside, with a soft edge `softness` wide (in units of the radius)."""
    # 1 - d^2 ~ 2 (1 - d) near the edge: the same soft edge without a square root.
    squared = np.square((frame.u - cu) * (1.0 / ru)) + np.square((frame.v - cv) * (1.0 / rv))
    return np.clip((1.0 - squared) * (0.5 / softness), 0.0, 1.0)


def band(frame: PatientFrame, curve_v: np.ndarray, half_width: float) -> np.ndarray:
    """1 near the curve v = curve_v(u), fading over `half_width`."""
    return np.clip(1.0 - np.abs(frame.v - curve_v) / half_width, 0.0, 1.0)


def segment(
    frame: PatientFrame, start: tuple[float, float], end: tuple[float, float], half_width: float
) -> np.ndarray:
    """A straight stroke between two points."""
    (u0, v0), (u1, v1) = start, end
    du, dv = u1 - u0, v1 - v0
    t = np.clip(((frame.u - u0) * du + (frame.v - v0) * dv) / (du * du + dv * dv), 0.0, 1.0)
    distance = np.hypot(frame.u - (u0 + t * du), frame.v - (v0 + t * dv))
    return np.clip(1.5 - distance / half_width, 0.0, 1.0)


RIB_SPACING = 0.15


def rib_curve(frame: PatientFrame, anatomy: Anatomy, side: Side, rib: int) -> np.ndarray:
    """Vertical position of posterior rib number `rib` (0 = highest) at each pixel's u."""
    lung = anatomy.lung(side)
    return (
        lung.centre_v
        - lung.radius_v * 0.95
        + rib * RIB_SPACING
        + 0.18 * ((frame.u - side * 0.05) * side) ** 2
    )


def lung_mask(frame: PatientFrame, anatomy: Anatomy, side: Side) -> np.ndarray:
    lung = anatomy.lung(side)
    inside = ellipse(frame, lung.centre_u, lung.centre_v, lung.radius_u, lung.radius_v)
    return inside * np.clip((diaphragm_curve(frame, anatomy, side) - frame.v) / 0.02, 0.0, 1.0)


def diaphragm_curve(frame: PatientFrame, anatomy: Anatomy, side: Side) -> np.ndarray:
    """The hemidiaphragm's dome under one lung; its lateral end makes the sharp costophrenic angle."""
    lung = anatomy.lung(side)
    across = np.clip((frame.u - lung.centre_u) / lung.radius_u, -1.2, 1.2)
    return anatomy.diaphragm_v - 0.22 * (1.0 - across**2)


def smooth_noise(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """Low-frequency noise in [-1, 1]: random values on a coarse grid, upsampled smoothly."""
    coarse = rng.uniform(0, 255, (cells, cells)).astype(np.uint8)
    fine = np.asarray(
        Image.fromarray(coarse).resize((size, size), Image.Resampling.BICUBIC), dtype=np.float32
    )
    return fine / 127.5 - 1.0


def random_anatomy(rng: np.random.Generator, cardiomegaly: bool, wide_mediastinum: bool) -> Anatomy:
    lung_rv = rng.uniform(0.56, 0.64)
    return Anatomy(
        right_lung=Lung(-0.38, -0.08, rng.uniform(0.27, 0.31), lung_rv),
        left_lung=Lung(0.38, -0.08, rng.uniform(0.25, 0.29), lung_rv - 0.02),
        heart_radius_u=rng.uniform(0.38, 0.44) if cardiomegaly else rng.uniform(0.2, 0.25),
        mediastinum_half_width=rng.uniform(0.2, 0.24) if wide_mediastinum else rng.uniform(0.08, 0.1),
        diaphragm_v=rng.uniform(0.5, 0.56),
    )


def draw_normal_chest(
    frame: PatientFrame, anatomy: Anatomy, rng: np.random.Generator, size: int
) -> dict[str, np.ndarray]:
    """The layers findings change: density image, lung masks and lung markings."""
    density = 0.06 + 0.42 * ellipse(frame, 0.0, 0.15, 0.88, 1.05, softness=0.08)
    lungs = {side: lung_mask(frame, anatomy, side) for side in (-1, 1)}
    either_lung = np.maximum(lungs[-1], lungs[1])
    density = density * (1.0 - 0.7 * either_lung)
    hilum_distance = np.minimum(np.hypot(frame.u + 0.2, frame.v), np.hypot(frame.u - 0.2, frame.v))
    markings = np.clip(smooth_noise(rng, size, 24), 0.0, 1.0) * np.clip(1.0 - hilum_distance / 0.8, 0.15, 1.0)
    density = density + 0.16 * markings * either_lung
    for side in (-1, 1):  # posterior ribs: eight arcs across each lung, RIB_SPACING apart
        lung = anatomy.lung(side)
        first_rib = rib_curve(frame, anatomy, side, 0)
        phase = (frame.v - first_rib) / RIB_SPACING
        nearest = np.clip(np.round(phase), 0, 7)
        ribs = np.clip(1.0 - np.abs(phase - nearest) * RIB_SPACING / 0.022, 0.0, 1.0)
        density = density + 0.09 * ribs * ellipse(
            frame, lung.centre_u, lung.centre_v, lung.radius_u * 1.1, lung.radius_v * 1.05
        )
    density = density + 0.12 * np.clip(1.0 - np.abs(frame.u) / 0.05, 0.0, 1.0)  # spine
    mediastinum = np.clip((anatomy.mediastinum_half_width - np.abs(frame.u + 0.02)) / 0.02, 0.0, 1.0)
    mediastinum *= np.clip((frame.v + 0.75) / 0.05, 0.0, 1.0) * np.clip((0.35 - frame.v) / 0.05, 0.0, 1.0)
    heart = ellipse(frame, 0.08 + 0.3 * (anatomy.heart_radius_u - 0.22), 0.3, anatomy.heart_radius_u, 0.22)
    density = np.maximum(density, 0.72 * np.maximum(mediastinum, heart))
    below_diaphragm = np.minimum(diaphragm_curve(frame, anatomy, -1), diaphragm_curve(frame, anatomy, 1))
    abdomen = np.clip((frame.v - below_diaphragm - 0.01) / 0.02, 0.0, 1.0) * ellipse(
        frame, 0.0, 0.15, 0.88, 1.05
    )
    density = np.maximum(density, 0.62 * abdomen)
    clavicles = (
        band(frame, -0.72 - 0.15 * np.abs(frame.u), 0.025)
        * (np.abs(frame.u) > 0.08)
        * (np.abs(frame.u) < 0.62)
    )
    density = density + 0.15 * clavicles
    return {"density": density, "markings": markings, -1: lungs[-1], 1: lungs[1]}
