"""OTA bundles, signing and verification (shared by hub and edge). Populated by the OTA issue."""

__all__: list[str] = []
