"""The Vigie hub: ingest -> store -> fusion and learning -> REST API and dashboard -> OTA campaigns.

The hub never imports the edge (import-linter's ``floors`` contract); both sit above ``ota``
and the core (``vigie.wire``). See the README's architecture diagram.
"""

__all__: list[str] = []
