"""What a report is asked for: the datasets and the label set each is scored on, which of them are
in and out of distribution, the baseline checkpoint and the bootstrap's settings."""

from typing import Annotated, Any

from pydantic import Field, field_validator, model_validator

from shared.config import StrictModel
from shared.labels import LABEL_SETS


class ReportConfig(StrictModel):
    datasets: dict[str, str] = Field(
        description='dataset name -> the label set it is scored on, e.g. {"nih": "nih9"}'
    )
    in_distribution: list[str] = Field(
        description="the datasets the generalization summary calls in-distribution"
    )
    out_of_distribution: list[str] = []
    baseline_checkpoint: str | None = Field(
        None, description="changes are relative to it; None: the first checkpoint"
    )
    n_resamples: Annotated[int, Field(ge=1)] = 1000
    seed: int = 0
    level: Annotated[float, Field(gt=0.0, lt=1.0)] = 0.95
    valid_only: bool = False

    @field_validator("datasets")
    @classmethod
    def _known_label_sets(cls, datasets: dict[str, str]) -> dict[str, str]:
        if not datasets:
            raise ValueError("name at least one dataset")
        for dataset, name in datasets.items():
            if name not in LABEL_SETS:
                raise ValueError(
                    f"dataset {dataset!r}: unknown label set {name!r}; choose one of {sorted(LABEL_SETS)}"
                )
        return datasets

    @field_validator("in_distribution", "out_of_distribution", mode="before")
    @classmethod
    def _one_or_many(cls, names: Any) -> Any:
        if names is None:
            return []
        return [names] if isinstance(names, str) else names

    @model_validator(mode="after")
    def _roles_are_datasets(self) -> "ReportConfig":
        for role in ("in_distribution", "out_of_distribution"):
            for dataset in getattr(self, role):
                if dataset not in self.datasets:
                    raise ValueError(
                        f"{role}: {dataset!r} is not one of the datasets {sorted(self.datasets)}"
                    )
        both = sorted(set(self.in_distribution) & set(self.out_of_distribution))
        if both:
            raise ValueError(f"in_distribution and out_of_distribution are both {both[0]!r}")
        return self
