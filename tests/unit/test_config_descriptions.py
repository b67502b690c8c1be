"""Every option a user writes in a YAML config says what it means on the field itself
(`Field(description=...)`), so `cxr-rl train --check` prints it beside the value; a `#` comment in
the source is invisible there. The configs: a run (`cxr-rl train --config`), SFT and GRPO on their
own (`cxr-rl sft|grpo --config`), the rollout server (`cxr-rl serve --config`) and the rewards a
run's `reward.config` is read into."""

import typing

import pytest
from pydantic import BaseModel

from deploy.config import RunConfig
from rewards.hard import HardRewardConfig
from rewards.nuanced import NuancedRewardConfig
from rollout_server.config import ServerConfig
from shared.config import describe_config
from trainer.grpo.config import GrpoConfig
from trainer.sft.config import SftConfig

CONFIG_ROOTS = [RunConfig, SftConfig, GrpoConfig, ServerConfig, HardRewardConfig, NuancedRewardConfig]


def nested_models(annotation) -> list[type[BaseModel]]:
    """The models an annotation holds: `X`, `X | None`, `list[X]`, `dict[str, X]`."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [model for arg in typing.get_args(annotation) for model in nested_models(arg)]


def undescribed_options(root: type[BaseModel]) -> list[str]:
    missing, seen = [], set()

    def walk(model: type[BaseModel], path: str) -> None:
        if model in seen:
            return
        seen.add(model)
        for name, field in model.model_fields.items():
            if not (field.description or "").strip():
                missing.append(f"{path}.{name} ({model.__module__}.{model.__qualname__})")
            for inner in nested_models(field.annotation):
                walk(inner, f"{path}.{name}")

    walk(root, root.__name__)
    return missing


@pytest.mark.parametrize("root", CONFIG_ROOTS, ids=lambda root: root.__name__)
def test_every_option_of_a_config_carries_its_description(root):
    missing = undescribed_options(root)
    assert not missing, f"{len(missing)} option(s) without Field(description=...):\n" + "\n".join(missing)


def test_check_output_describes_every_line_of_the_default_run_config():
    lines = describe_config(RunConfig())
    assert lines and all("  # " in line for line in lines), [line for line in lines if "  # " not in line]
