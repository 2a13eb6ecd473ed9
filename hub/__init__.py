"""The Vigie hub: ingest -> store -> REST API (fusion, learning, OTA campaigns come later)."""

__all__: list[str] = []
