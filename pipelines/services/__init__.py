"""The voice agent's services: vendors when their keys are set, offline stand-bys otherwise (factory.py)."""

from pipelines.services.factory import AgentServices, build_agent_services
from pipelines.services.resilience import VendorHealth

__all__ = ["AgentServices", "VendorHealth", "build_agent_services"]
