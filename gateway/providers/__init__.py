"""Provider kinds (one module each) and wire APIs (`gateway.providers.wire`).

Every module of this package other than `base` defines a kind and registers it, so a new
kind is one new file here. `openai` comes first: the zero-config defaults and the default
routes keep the registry's order.
"""

from __future__ import annotations

import importlib
import pkgutil

from gateway.providers.base import (
    KINDS,
    MissingCredentials,
    Provider,
    ProviderConfig,
    Timeouts,
    genai_provider_name,
    register,
)

# isort: off
from gateway.providers import openai, azure, anthropic  # noqa: F401  (order: see above)
# isort: on

for _m in pkgutil.iter_modules(__path__):
    if _m.name not in ("base", "wire"):
        importlib.import_module(f"{__name__}.{_m.name}")


def provider_for(cfg: ProviderConfig) -> Provider:
    """The provider object for one configured provider."""
    return KINDS[cfg.kind](cfg)


__all__ = [
    "KINDS",
    "MissingCredentials",
    "Provider",
    "ProviderConfig",
    "Timeouts",
    "genai_provider_name",
    "provider_for",
    "register",
]
