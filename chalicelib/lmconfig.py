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


# Bounds on what an anonymous caller can make us parse (issue 9: a 30 KB alias bomb grew to
# 75 MB). A real `.lifemonitor.yaml` is a few hundred bytes.
MAX_DOCUMENT_BYTES = 64 * 1024
MAX_DEPTH = 32  # nesting of collections
MAX_EXPANDED = 100_000  # nodes + scalar characters once aliases are expanded


@dataclass(frozen=True)
class Validation:
    valid: bool
    data: Any = None
    message: str | None = None
    error: str | None = None


class ConfigParseError(ValueError):
    """The document is neither YAML nor JSON, or exceeds a parsing bound."""


class DocumentTooLargeError(ConfigParseError):
    pass


@lru_cache(maxsize=1)
def _loader_class():
    """A SafeLoader whose composer bounds nesting depth and the size of the document once
    aliases are expanded: every alias counts the full size of the node it repeats, so
    billion-laughs shapes stop after MAX_EXPANDED units, before any object is built."""
    import yaml
    from yaml.events import AliasEvent
    from yaml.nodes import ScalarNode

    class BoundedLoader(yaml.SafeLoader):
        def __init__(self, stream) -> None:
            super().__init__(stream)
            self._depth = 0
            self._expanded = 0
            self._weights: dict[int, int] = {}

        def _count(self, units: int) -> None:
            self._expanded += units
            if self._expanded > MAX_EXPANDED:
                raise ConfigParseError(
                    f"document too large once its aliases are expanded (over {MAX_EXPANDED}"
                    " nodes and characters)"
                )

        def compose_node(self, parent, index):
            if self.check_event(AliasEvent):
                anchor = self.peek_event().anchor
                node = self.anchors.get(anchor)
                if node is not None:
                    self._count(self._weights.get(id(node), 1))
                return super().compose_node(parent, index)
            self._depth += 1
            if self._depth > MAX_DEPTH:
                raise ConfigParseError(f"document nested too deep (over {MAX_DEPTH} levels)")
            before = self._expanded
            try:
                node = super().compose_node(parent, index)
            finally:
                self._depth -= 1
            units = 1 + (len(node.value) if isinstance(node, ScalarNode) else 0)
            self._count(units)
            self._weights[id(node)] = self._expanded - before
            return node

    return BoundedLoader


@lru_cache(maxsize=1)
def _validator():
    import fastjsonschema

    return fastjsonschema.compile(SCHEMA)


def validate(document: bytes | str) -> Validation:
    import fastjsonschema
    import yaml

    if len(document) > MAX_DOCUMENT_BYTES:
        raise DocumentTooLargeError(f"document larger than {MAX_DOCUMENT_BYTES} bytes")
    loader = None
    try:
        # YAML is a superset of JSON: both parse here. The reader decodes on construction.
        loader = _loader_class()(document)
        data = loader.get_single_data()
    except RecursionError:
        raise ConfigParseError(f"document nested too deep (over {MAX_DEPTH} levels)") from None
    except yaml.YAMLError as exc:
        raise ConfigParseError(f"not valid YAML or JSON: {exc}") from None
    finally:
        if loader is not None:
            loader.dispose()
    if data is None:
        data = {}
    try:
        _validator()(data)
    except fastjsonschema.JsonSchemaValueException as exc:
        return Validation(False, message="Invalid configuration", error=exc.message)
    return Validation(True, data=data)
