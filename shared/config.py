"""Loading typed configs from YAML: validated once, errors name the key that is wrong."""

from pathlib import Path
from typing import Any, ClassVar, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError, model_validator

from shared.errors import UserError

ConfigT = TypeVar("ConfigT", bound=BaseModel)


class StrictModel(BaseModel):
    """The base of every config and wire model: an unknown key is an error, never silently ignored
    (a misspelt option would otherwise run with its default)."""

    model_config = ConfigDict(extra="forbid")
    # Options an earlier version took, each with the message that says what replaced it: refused
    # with that message rather than as merely unknown.
    removed_options: ClassVar[dict[str, str]] = {}

    @model_validator(mode="before")
    @classmethod
    def _refuse_removed_options(cls, data: Any) -> Any:
        if isinstance(data, dict):
            for option, message in cls.removed_options.items():
                if option in data:
                    raise ValueError(message)
        return data


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
    data = read_yaml_mapping(path)
    return parse_config(merge_nested(data, overrides or {}), config_class, source=str(path))


def read_yaml_mapping(path: str | Path, what: str = "config", keys: str = "config keys") -> dict:
    """A YAML file holding a mapping (an empty file: {}); a missing file, bad YAML or another
    shape is a `UserError` naming the file."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{what} file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as error:
        raise UserError(f"{path}: not valid YAML ({error})") from None
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a mapping of {keys} at the top level")
    return data


def merge_nested(base: dict, overrides: dict) -> dict:
    merged = dict(base)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge_nested(merged[key], value)
        else:
            merged[key] = value
    return merged


def describe_config(config: BaseModel, indent: int = 0) -> list[str]:
    """YAML-like lines of a resolved config, each option followed by its field description, so a user
    sees what every value means and where a default applies (`cxr-rl train --check`)."""
    lines = []
    pad = "  " * indent
    for name, field in type(config).model_fields.items():
        value = getattr(config, name)
        comment = f"  # {field.description}" if field.description else ""
        if isinstance(value, BaseModel):
            lines.append(f"{pad}{name}:{comment}")
            lines.extend(describe_config(value, indent + 1))
        else:
            shown = yaml.safe_dump(_plain(value), default_flow_style=True, width=10_000).strip()
            shown = shown.removesuffix("\n...").strip()
            lines.append(f"{pad}{name}: {shown}{comment}")
    return lines


def _plain(value):
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, tuple | list):
        return [_plain(item) for item in value]
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    return value
