"""The hub's REST API (FastAPI)."""

__all__: list[str] = []
