"""Loading typed configs from YAML: validated once, errors name the key that is wrong."""

from pathlib import Path
from typing import TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from shared.errors import UserError

ConfigT = TypeVar("ConfigT", bound=BaseModel)


def describe_validation_error(error: ValidationError) -> str:
    problems = []
    for item in error.errors():
        key = ".".join(str(part) for part in item["loc"]) or "(top level)"
        problems.append(f"{key}: {item['msg']}")
    return "; ".join(problems)


def parse_config(data: dict, config_class: type[ConfigT], source: str = "config") -> ConfigT:
    try:
        return config_class.model_validate(data)
    except ValidationError as error:
        raise UserError(f"{source}: {describe_validation_error(error)}") from None


def load_config(path: str | Path, config_class: type[ConfigT], overrides: dict | None = None) -> ConfigT:
    """Read a YAML file into `config_class`; `overrides` (nested dict) wins over the file."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as error:
        raise UserError(f"{path}: not valid YAML ({error})") from None
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a mapping of config keys at the top level")
    return parse_config(merge_nested(data, overrides or {}), config_class, source=str(path))


def merge_nested(base: dict, overrides: dict) -> dict:
    merged = dict(base)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge_nested(merged[key], value)
        else:
            merged[key] = value
    return merged
