"""The `.lifemonitor.yaml` repository configuration: its JSON Schema and validation
(contract §9; served at /integrations/github/config/{schema.json,validate})."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any

_REF = {
    "type": "object",
    "required": ["name"],
    "additionalProperties": False,
    "properties": {
        "name": {
            "type": "string",
            "minLength": 1,
            "description": "branch or tag name, or a glob pattern",
        },
        "update_registries": {"type": "array", "items": {"type": "string"}, "default": []},
        "enable_notifications": {"type": "boolean", "default": True},
        "lifemonitor_instance": {
            "type": "string",
            "enum": ["production", "development"],
            "default": "production",
        },
    },
}

SCHEMA: dict[str, Any] = {
    "$schema": "http://json-schema.org/draft-07/schema#",
    "$id": "https://lifemonitor.eu/schemas/lifemonitor.json",
    "title": "LifeMonitor repository configuration (.lifemonitor.yaml)",
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "name": {"type": "string", "description": "the workflow's name"},
        "public": {"type": "boolean", "default": False},
        "issues": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "check": {"type": "boolean", "default": True},
                "include": {"type": "array", "items": {"type": "string"}},
                "exclude": {"type": "array", "items": {"type": "string"}},
            },
        },
        "push": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "branches": {"type": "array", "items": _REF},
                "tags": {"type": "array", "items": _REF},
            },
        },
    },
}


@dataclass(frozen=True)
class Validation:
    valid: bool
    data: Any = None
    message: str | None = None
    error: str | None = None


class ConfigParseError(ValueError):
    """The document is neither YAML nor JSON."""


@lru_cache(maxsize=1)
def _validator():
    import fastjsonschema

    return fastjsonschema.compile(SCHEMA)


def validate(document: bytes | str) -> Validation:
    import fastjsonschema
    import yaml

    try:
        data = yaml.safe_load(document)  # YAML is a superset of JSON: both parse here
    except yaml.YAMLError as exc:
        raise ConfigParseError(f"not valid YAML or JSON: {exc}") from None
    if data is None:
        data = {}
    try:
        _validator()(data)
    except fastjsonschema.JsonSchemaValueException as exc:
        return Validation(False, message="Invalid configuration", error=exc.message)
    return Validation(True, data=data)
