"""Phantom films in memory, without datasets or files: what a tiny model's builder fits its image
statistics on (`tiny_models.medgemma.fit_projector`). Drawn as the datasets draw them (findings at
the co-occurrence table's rates, every institution style in turn), from a seed of their own."""

import numpy as np
from PIL import Image

from dataprep.phantoms.images import INSTITUTION_STYLES, FilmStyler, quantize, render_frontal
from dataprep.phantoms.plan import CooccurrenceTable, case_rng, plan_case


def unlabelled_films(n: int, seed: int, size: int) -> list[Image.Image]:
    """`n` frontal films of `size` pixels (8-bit greyscale, "L"), cycling through the institution styles."""
    table = CooccurrenceTable.load()
    stylers = [FilmStyler(style, size) for style in INSTITUTION_STYLES.values()]
    films = []
    for index in range(n):
        case = plan_case(seed, index, index, 0, table)
        film = render_frontal(case.positives, case_rng(seed, index, "frontal"), size)
        noise = case_rng(seed, index, "noise").standard_normal((size, size), dtype=np.float32)
        films.append(stylers[index % len(stylers)].apply(quantize(film.density), noise))
    return films
