"""`label_balance`: training images repeated by how rare their rarest label is, so a model trained
for macro-F1 sees rare findings often enough to name them; 0 leaves the data as drawn."""

from collections import Counter

from shared.manifest import ManifestRecord
from trainer.sft.data import balance_labels


def records() -> list[ManifestRecord]:
    labels = [["Support Devices"]] * 8 + [["Pneumothorax"]] * 2 + [["Fracture", "Support Devices"]]
    return [
        ManifestRecord(id=f"r{index}", image=f"r{index}.png", labels=names)
        for index, names in enumerate(labels)
    ]


def test_square_root_balancing_repeats_each_image_by_its_rarest_label():
    repeats = Counter(record.id for record in balance_labels(records(), 0.5, max_repeats=4))
    # Support Devices on 9 images, Pneumothorax on 2 (sqrt(9/2) = 2.1), Fracture on 1 (sqrt(9) = 3)
    assert [repeats[f"r{index}"] for index in range(11)] == [1] * 8 + [2, 2, 3]


def test_no_balance_keeps_the_images_as_drawn_and_the_cap_holds():
    assert balance_labels(records(), 0.0, max_repeats=4) == records()
    repeats = Counter(record.id for record in balance_labels(records(), 1.0, max_repeats=2))
    assert repeats["r10"] == 2 and repeats["r8"] == 2 and repeats["r0"] == 1
