"""What a run's GRPO phase hands to the end-of-run report and the run summary."""

from dataclasses import dataclass, field

from deploy.embedded import RunInputs
from deploy.validation import TrainingValidation
from trainer.grpo.config import GrpoConfig


@dataclass
class RunOutcome:
    grpo_config: GrpoConfig
    validation: TrainingValidation  # every evaluated step, and the checkpoint choice
    final_step: int
    inputs: RunInputs
    urls: list[str] = field(default_factory=list)  # the rollout replicas, as they are at the end
    api_token: str | None = None  # the replicas' key, for the final report's adapter loads; never written out
    wall_s: float | None = None  # the whole run, once it is over
