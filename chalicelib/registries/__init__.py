"""Clients of workflow registries. Only SEEK/WorkflowHub exists (contract §4:
`RegistryType: [seek]`); `client_for` picks the credential (user → service token →
anonymous)."""

from __future__ import annotations

from chalicelib.registries.seek import (
    RegistryError,
    RegistryForbiddenError,
    RegistryNotFoundError,
    RegistryResponseTooLargeError,
    RegistryUnavailableError,
    SeekClient,
    client_for,
)

__all__ = [
    "RegistryError",
    "RegistryForbiddenError",
    "RegistryNotFoundError",
    "RegistryResponseTooLargeError",
    "RegistryUnavailableError",
    "SeekClient",
    "client_for",
]
