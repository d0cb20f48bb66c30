"""One module per provider; this registry is the only list of them."""

from __future__ import annotations

from submitter.providers import acedata, apimart, ttapi, wavespeed
from submitter.providers.base import (
    BadSignature,
    InvalidParams,
    MalformedCallback,
    Provider,
    ProviderError,
    ProviderRequest,
    Rejection,
)

PROVIDERS: dict[str, Provider] = {
    provider.name: provider for provider in (ttapi.PROVIDER, acedata.PROVIDER, wavespeed.PROVIDER, apimart.PROVIDER)
}

__all__ = [
    "PROVIDERS",
    "BadSignature",
    "InvalidParams",
    "MalformedCallback",
    "Provider",
    "ProviderError",
    "ProviderRequest",
    "Rejection",
]
