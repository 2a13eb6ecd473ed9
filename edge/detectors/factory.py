"""Build the configured detector: the OTA live slot's model when there is one, else the model store's."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

from edge import model_store
from edge.detectors import Detector
from edge.detectors.litert import LiteRTDetector
from edge.detectors.tiling import TiledDetector
from edge.ota.slots import SlotLayout
from ota.bundle import BundleManifest

if TYPE_CHECKING:
    from edge.config import AgentConfig

__all__ = ["build_detector", "bundle_detector", "live_slot"]

log = logging.getLogger(__name__)


def live_slot(config: AgentConfig) -> Path | None:
    """The OTA live slot's real path, or None (no OTA folder, or nothing installed yet)."""
    return None if config.ota_dir is None else SlotLayout(config.ota_dir).live_slot()


def bundle_detector(
    slot: Path,
    bundle: BundleManifest,
    *,
    threads: int = 2,
    runtime: str = "auto",
    delegate: str = "none",
    class_scores: dict[str, float] | None = None,
    letterbox: bool = False,
) -> LiteRTDetector:
    """The detector of an OTA bundle unpacked in ``slot``, at the bundle's own threshold.

    ``class_scores`` (the site's per-camera thresholds) override it class by class.
    """
    return LiteRTDetector(
        slot / bundle.model_file,
        model_store.read_labels(slot / bundle.labels_file),
        model_ref=bundle.ref,
        threads=threads,
        min_score=bundle.min_score,
        class_scores=class_scores or None,
        output=bundle.output,
        letterbox=letterbox,
        runtime=runtime,
        delegate=delegate,
    )


def build_detector(config: AgentConfig) -> Detector:
    """Load and verify the configured model (tiled when asked); the OTA live slot wins when there is one."""
    slot = live_slot(config)
    bundle = None if slot is None else SlotLayout.manifest_in(slot)
    detector: Detector
    if slot is not None and bundle is not None:
        # The live OTA slot: verified by TUF and smoke-tested before it went live.
        detector = bundle_detector(
            slot, bundle, threads=config.threads, runtime=config.runtime, delegate=config.delegate,
            class_scores=dict(config.thresholds), letterbox=config.letterbox,
        )  # fmt: skip
        log.info("model from the OTA slot", extra={"model": bundle.ref, "slot": slot.name})
    else:
        manifest = model_store.load_manifest(config.model)
        model_path, labels_path = model_store.locate(manifest, config.model_dir)
        detector = LiteRTDetector(
            model_path,
            model_store.read_labels(labels_path),
            model_ref=manifest.ref,
            threads=config.threads,
            min_score=manifest.default_min_score,
            class_scores={**(manifest.class_scores or {}), **config.thresholds},  # the site's thresholds win
            output=manifest.output.kind,
            letterbox=config.letterbox,
            runtime=config.runtime,
            delegate=config.delegate,
        )
    if config.tiles > 1:
        detector = TiledDetector(detector, config.tiles)
    return detector
