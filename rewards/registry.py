"""Rewards chosen by name (`hard`, `nuanced`) or by import path (`package.module:Class`).

A plugin is any class (or factory) that, called with no argument or with `config=<dict>`,
returns an object with `name`, `version` and `score(items, state) -> (list[ScoredItem], state)`
(see `rewards.protocol`).
"""

import importlib
from types import MappingProxyType
from typing import Any

from pydantic import ValidationError

from rewards.protocol import RewardError, RewardFunction
from shared.config import describe_validation_error

BUILTIN_REWARDS = MappingProxyType(
    {"hard": "rewards.hard:HardReward", "nuanced": "rewards.nuanced:NuancedReward"}
)


def resolve_import_path(spec: str) -> str:
    """The import path a reward spec names: a built-in name or `package.module:Attribute`."""
    if spec in BUILTIN_REWARDS:
        return BUILTIN_REWARDS[spec]
    module_name, colon, attribute = spec.partition(":")
    if not colon or not module_name or not attribute.isidentifier():
        raise RewardError(
            f"unknown reward {spec!r}: give one of {sorted(BUILTIN_REWARDS)} or an import path 'package.module:Class'"
        )
    return spec


def load_reward(spec: str, config: dict[str, Any] | None = None) -> RewardFunction:
    """Build the reward `spec` names, passing `config` (a dict) to its constructor when given."""
    path = resolve_import_path(spec)
    module_name, _, attribute = path.partition(":")
    try:
        module = importlib.import_module(module_name)
    except Exception as error:  # ImportError or whatever the plugin module raises on import
        raise RewardError(f"cannot import reward plugin {spec!r}: {error!r}") from error
    factory = getattr(module, attribute, None)
    if not callable(factory):
        raise RewardError(f"reward plugin {spec!r}: module {module_name!r} has no callable {attribute!r}")
    try:
        reward = factory() if config is None else factory(config=config)
    except ValidationError as error:
        raise RewardError(f"reward {spec!r} config: {describe_validation_error(error)}") from None
    except Exception as error:
        raise RewardError(f"cannot build reward {spec!r}: {error}") from error
    missing = [attribute for attribute in ("name", "version", "score") if not hasattr(reward, attribute)]
    if missing or not callable(reward.score):
        raise RewardError(
            f"reward plugin {spec!r} lacks {missing or ['a callable score']} (see rewards.protocol)"
        )
    return reward
