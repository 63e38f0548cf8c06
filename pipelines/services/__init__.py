"""The voice agent's services: vendors when their keys are set, offline stand-bys otherwise (factory.py).

The names below load on first use: a decoder worker process imports `pipelines.services.sphinx` without
pulling in Pipecat's services and the vendor SDKs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pipelines.services.factory import AgentServices, build_agent_services
    from pipelines.services.resilience import VendorHealth

__all__ = ["AgentServices", "VendorHealth", "build_agent_services"]


def __getattr__(name: str) -> Any:
    if name in ("AgentServices", "build_agent_services"):
        from pipelines.services import factory

        return getattr(factory, name)
    if name == "VendorHealth":
        from pipelines.services.resilience import VendorHealth

        return VendorHealth
    raise AttributeError(f"module 'pipelines.services' has no attribute {name!r}")
