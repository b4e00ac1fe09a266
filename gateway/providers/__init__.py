"""Provider kinds (one module each) and wire APIs (`gateway.providers.wire`).

Every module of this package other than `base` defines a kind and registers it, so a new
kind is one new file here. `openai` comes first: the zero-config defaults and the default
routes keep the registry's order.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Mapping
from typing import Any

from gateway.errors import ConfigError
from gateway.providers.base import (
    KINDS,
    Provider,
    ProviderConfig,
    Timeouts,
    genai_provider_name,
    register,
)
from gateway.sections import read

# isort: off
from gateway.providers import openai, azure, anthropic  # noqa: F401  (order: see above)
# isort: on

for _m in pkgutil.iter_modules(__path__):
    if _m.name not in ("base", "wire", "translate"):
        importlib.import_module(f"{__name__}.{_m.name}")


def provider_for(cfg: ProviderConfig) -> Provider:
    """The provider object for one configured provider."""
    return KINDS[cfg.kind](cfg)


def zero_config(env: Mapping[str, str]) -> dict[str, dict[str, Any]]:
    """The providers of a gateway configured with none: the zero-config kinds (OpenAI and
    Anthropic), declared from the variables their SDKs read, as a config file declaring
    them would be (so the same defaults apply, price_as included). A bad variable is a
    ConfigError naming it."""
    declared = {}
    for kind in KINDS.values():
        if not kind.zero_config:
            continue
        d = {"kind": kind.kind, "base_url": env.get(kind.base_url_env) or None,
             "api_key": env.get(kind.api_key_env) or None}  # fmt: skip
        try:
            read(d, ProviderConfig, ("providers", kind.kind))
        except ConfigError as e:
            raise ConfigError(kind.base_url_env, e.message) from None
        declared[kind.kind] = d
    return declared


__all__ = [
    "KINDS",
    "Provider",
    "ProviderConfig",
    "Timeouts",
    "genai_provider_name",
    "provider_for",
    "register",
    "zero_config",
]
