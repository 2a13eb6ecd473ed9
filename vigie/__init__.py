"""Vigie: the shared core (wire protocol, CLI) of the edge agent and the hub."""

__version__ = "0.1.0"

__all__ = ["__version__"]
