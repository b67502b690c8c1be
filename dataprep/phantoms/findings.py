"""One drawing per CheXpert finding, each changing the density image of a normal chest.

Each function takes the patient's frame and anatomy, the layers of the normal chest and a random
generator, and returns the new density image plus what it drew (side, size) for the ground truth.
Cardiomegaly and Enlarged Cardiomediastinum are drawn by the anatomy itself (a wider heart or
mediastinum), so they have no function here.
"""

from collections.abc import Callable

import numpy as np

from dataprep.phantoms.render import Anatomy, PatientFrame, band, ellipse, rib_curve, segment

Layers = dict  # "density", "markings" and the lung masks keyed by side (-1, 1)
Drawn = dict[str, object]
FindingDrawer = Callable[[PatientFrame, Anatomy, Layers, np.random.Generator], Drawn]


def _side(rng: np.random.Generator) -> int:
    return int(rng.choice([-1, 1]))


def _point_in_lung(
    anatomy: Anatomy, side: int, rng: np.random.Generator, low: float = -0.5, high: float = 0.5
) -> tuple[float, float]:
    lung = anatomy.lung(side)
    return (
        lung.centre_u + rng.uniform(-0.35, 0.35) * lung.radius_u,
        lung.centre_v + rng.uniform(low, high) * lung.radius_v,
    )


def pleural_effusion(
    frame: PatientFrame, anatomy: Anatomy, layers: Layers, rng: np.random.Generator
) -> Drawn:
    sides = [-1, 1] if rng.random() < 0.35 else [_side(rng)]
    for side in sides:
        lung = anatomy.lung(side)
        level = anatomy.diaphragm_v - rng.uniform(0.3, 0.45)
        # A meniscus: the fluid climbs the lateral chest wall and fills the costophrenic angle.
        lateral = np.clip((frame.u - lung.centre_u) * side / lung.radius_u, 0.0, 1.0)
        surface = level - 0.18 * lateral**2
        fluid = np.clip((frame.v - surface) / 0.03, 0.0, 1.0) * layers[side]
        layers["density"] = np.maximum(layers["density"], 0.7 * fluid)
    return {"sides": sides}


def pneumothorax(frame: PatientFrame, anatomy: Anatomy, layers: Layers, rng: np.random.Generator) -> Drawn:
    side = _side(rng)
    lung = anatomy.lung(side)
    collapse = rng.uniform(0.55, 0.7)
    inner = ellipse(
        frame,
        lung.centre_u - side * lung.radius_u * (1 - collapse) * 0.6,
        lung.centre_v + lung.radius_v * (1 - collapse) * 0.5,
        lung.radius_u * collapse,
        lung.radius_v * collapse,
        softness=0.02,
    )
    air = layers[side] * (1.0 - inner)
    # No lung markings beyond the visceral pleural line, and the air space is darker than lung.
    layers["density"] = layers["density"] * (1.0 - air) + 0.02 * air
    rim = np.clip(1.0 - np.abs(inner - 0.5) * 2.0, 0.0, 1.0) * layers[side]
    layers["density"] = np.maximum(layers["density"], 0.55 * rim)
    return {"side": side, "collapse": round(float(collapse), 3)}


def consolidation(frame: PatientFrame, anatomy: Anatomy, layers: Layers, rng: np.random.Generator) -> Drawn:
    side = _side(rng)
    cu, cv = _point_in_lung(anatomy, side, rng, 0.0, 0.45)
    patch = (
        ellipse(frame, cu, cv, rng.uniform(0.12, 0.17), rng.uniform(0.12, 0.18), softness=0.2) * layers[side]
    )
    layers["density"] = layers["density"] + 0.45 * patch
    return {"side": side}


def lung_opacity(frame: PatientFrame, anatomy: Anatomy, layers: Layers, rng: np.random.Generator) -> Drawn:
    side = _side(rng)
    cu, cv = _point_in_lung(anatomy, side, rng, -0.4, 0.3)
    haze = (
        ellipse(frame, cu, cv, rng.uniform(0.18, 0.25), rng.uniform(0.22, 0.3), softness=0.8) * layers[side]
    )
    layers["density"] = layers["density"] + 0.4 * haze
    return {"side": side}


def pneumonia(frame: PatientFrame, anatomy: Anatomy, layers: Layers, rng: np.random.Generator) -> Drawn:
    side = _side(rng)
    cu, cv = _point_in_lung(anatomy, side, rng, 0.1, 0.45)
    patches = np.zeros_like(frame.u)
    for _ in range(int(rng.integers(5, 9))):  # patchy lobar: a cluster of small confluent blobs
        radius = rng.uniform(0.04, 0.07)
        blob = ellipse(
            frame, cu + rng.uniform(-0.12, 0.12), cv + rng.uniform(-0.12, 0.12), radius, radius, softness=0.5
        )
        patches = np.maximum(patches, blob)
    layers["density"] = layers["density"] + 0.42 * patches * layers[side]
    return {"side": side}


def lung_lesion(frame: PatientFrame, anatomy: Anatomy, layers: Layers, rng: np.random.Generator) -> Drawn:
    side = _side(rng)
    cu, cv = _point_in_lung(anatomy, side, rng)
    radius = float(rng.uniform(0.065, 0.11))
    nodule = ellipse(frame, cu, cv, radius, radius, softness=0.08)
    layers["density"] = np.maximum(layers["density"], (0.5 + 0.2 * layers["density"]) * nodule)
    # NIH calls a lesion over 3 cm a mass, else a nodule. Phantom lesions are drawn larger than life
    # so that a 224 px model sees them; the larger ones are called masses.
    return {"side": side, "radius": round(radius, 3), "nih": "Mass" if radius > 0.09 else "Nodule"}


def edema(frame: PatientFrame, anatomy: Anatomy, layers: Layers, rng: np.random.Generator) -> Drawn:
    spread = rng.uniform(0.2, 0.26)
    for side in (-1, 1):  # perihilar "bat-wing" haze, both sides
        haze = ellipse(frame, side * 0.26, -0.02, spread, spread * 1.4, softness=0.9) * layers[side]
        layers["density"] = layers["density"] + 0.3 * haze
        lung = anatomy.lung(side)
        for line in range(5):  # Kerley B lines: short horizontal lines at the lateral bases
            line_v = anatomy.diaphragm_v - 0.3 - line * 0.045
            edge_u = lung.centre_u + side * lung.radius_u * 0.92
            stroke = segment(frame, (edge_u - side * 0.09, line_v), (edge_u, line_v), 0.012)
            layers["density"] = layers["density"] + 0.35 * stroke * layers[side]
    return {"sides": [-1, 1]}


def atelectasis(frame: PatientFrame, anatomy: Anatomy, layers: Layers, rng: np.random.Generator) -> Drawn:
    side = _side(rng)
    lung = anatomy.lung(side)
    cv = anatomy.diaphragm_v - rng.uniform(0.32, 0.42)
    tilt = rng.uniform(-0.15, 0.15)
    start = (lung.centre_u - 0.7 * lung.radius_u, cv - tilt * lung.radius_u)
    end = (lung.centre_u + 0.7 * lung.radius_u, cv + tilt * lung.radius_u)
    plate = segment(frame, start, end, 0.02) * layers[side]  # plate-like (discoid) band
    layers["density"] = layers["density"] + 0.45 * plate
    return {"side": side}


def pleural_other(frame: PatientFrame, anatomy: Anatomy, layers: Layers, rng: np.random.Generator) -> Drawn:
    side = _side(rng)
    lung = anatomy.lung(side)
    outer = ellipse(frame, lung.centre_u, lung.centre_v, lung.radius_u, lung.radius_v, softness=0.02)
    inner = ellipse(
        frame,
        lung.centre_u - side * 0.04,
        lung.centre_v,
        lung.radius_u - 0.07,
        lung.radius_v - 0.04,
        softness=0.02,
    )
    lateral_arc = ((frame.u - lung.centre_u) * side > 0.3 * lung.radius_u) & (
        frame.v < anatomy.diaphragm_v - 0.25
    )
    thickening = outer * (1.0 - inner) * lateral_arc
    for _ in range(3):  # calcified plaques along the thickened pleura
        plaque_v = lung.centre_v + rng.uniform(-0.4, 0.3) * lung.radius_v
        plaque_u = lung.centre_u + side * lung.radius_u * np.sqrt(
            max(0.0, 1 - ((plaque_v - lung.centre_v) / lung.radius_v) ** 2)
        )
        thickening = np.maximum(thickening, ellipse(frame, plaque_u, plaque_v, 0.05, 0.08) * outer)
    layers["density"] = np.maximum(layers["density"], 0.68 * thickening)
    return {"side": side}


def fracture(frame: PatientFrame, anatomy: Anatomy, layers: Layers, rng: np.random.Generator) -> Drawn:
    side = _side(rng)
    lung = anatomy.lung(side)
    rib = int(rng.integers(2, 6))
    break_u = lung.centre_u + side * rng.uniform(0.2, 0.5) * lung.radius_u
    rib_v = rib_curve(frame, anatomy, side, rib)
    # Lateral fragment displaced downwards: a visible step, with a gap at the break; drawn denser
    # than its neighbours so the break stands out at 224 px.
    beyond = (frame.u - break_u) * side > 0
    displaced = np.where(beyond, rib_v + 0.07, rib_v)
    gap = np.abs(frame.u - break_u) > 0.025
    rib_band = (
        band(frame, displaced, 0.035)
        * gap
        * ellipse(frame, lung.centre_u, lung.centre_v, lung.radius_u * 1.15, lung.radius_v)
    )
    layers["density"] = np.maximum(layers["density"], (0.55 + 0.2 * layers["density"]) * rib_band)
    return {"side": side, "rib": rib}


def support_devices(frame: PatientFrame, anatomy: Anatomy, layers: Layers, rng: np.random.Generator) -> Drawn:
    devices = [name for name in ("endotracheal tube", "central line", "ecg leads") if rng.random() < 0.6] or [
        "endotracheal tube"
    ]
    metal = np.zeros_like(frame.u)
    if "endotracheal tube" in devices:
        metal = np.maximum(metal, segment(frame, (0.0, -1.1), (0.01, -0.3), 0.014))
    if "central line" in devices:
        side = _side(rng)
        metal = np.maximum(metal, segment(frame, (side * 0.7, -0.75), (side * 0.15, -0.55), 0.01))
        metal = np.maximum(metal, segment(frame, (side * 0.15, -0.55), (0.05, -0.05), 0.01))
    if "ecg leads" in devices:
        for _ in range(3):
            cu, cv = rng.uniform(-0.7, 0.7), rng.uniform(-0.8, 0.4)
            ring = ellipse(frame, cu, cv, 0.045, 0.045, softness=0.15) - ellipse(
                frame, cu, cv, 0.025, 0.025, softness=0.15
            )
            metal = np.maximum(metal, ring)
    layers["density"] = np.maximum(layers["density"], 0.97 * metal)
    return {"devices": devices}


FINDING_DRAWERS: dict[str, FindingDrawer] = {
    "Pleural Effusion": pleural_effusion,
    "Pneumothorax": pneumothorax,
    "Consolidation": consolidation,
    "Lung Opacity": lung_opacity,
    "Pneumonia": pneumonia,
    "Lung Lesion": lung_lesion,
    "Edema": edema,
    "Atelectasis": atelectasis,
    "Pleural Other": pleural_other,
    "Fracture": fracture,
    "Support Devices": support_devices,
}
