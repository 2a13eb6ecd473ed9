"""OTA trust: bundles, the TUF repository and signing, staged rollouts (shared by the hub and the edge).

``ota.bundle`` packs and checks a model bundle, ``ota.repository`` keeps the signed TUF
metadata, ``ota.rollout`` decides waves and halts. The device-side updater lives in the edge;
campaign state and runners in the hub. This package imports only the core.
"""

__all__: list[str] = []
