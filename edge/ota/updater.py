"""The device's model updater: TUF-verified download, A/B slots, smoke test, atomic switch, rollback.

The OTA folder's layout (``current``, ``slots/a`` and ``slots/b``, ``state.json``, the
TUF metadata and cache) belongs to :class:`edge.ota.slots.SlotLayout`; this module is
its only writer.

Power can fail at any step. The live slot is never written during an update (only the
other one is), and ``current`` changes by one atomic rename, so on restart
:meth:`ModelUpdater.recover` finds either the old verified model or the new verified
one: never half of one. A new slot that fails its smoke test (does not load, too slow,
bad outputs), or its check after the switch, is abandoned and ``current`` goes back.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import json
import logging
import os
import shutil
import signal
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Concatenate, ParamSpec, TypeVar

import numpy as np

from edge.ota.fetcher import ResumableFetcher
from edge.ota.slots import SlotLayout
from ota.bundle import BundleError, BundleManifest, unpack
from vigie.exceptions import VigieError
from vigie.files import write_atomic

__all__ = ["ModelUpdater", "SmokeResult", "UpdateError", "detection_drift", "smoke_test"]

log = logging.getLogger(__name__)
_T = TypeVar("_T")
_P = ParamSpec("_P")
STEPS = ("download", "unpack", "smoke", "switch", "confirm")


class UpdateError(VigieError):
    """An update was refused or failed; the device stays on its current model."""


@dataclass(frozen=True)
class SmokeResult:
    ok: bool
    latency_ms: float
    reason: str = ""
    drift: float | None = None  # relative change in detections vs the live model, on reference frames


def _detections(slot: Path, manifest: BundleManifest, frames: list[Path]) -> list[int]:
    """Detections per reference frame with this slot's model, at its own threshold."""
    import cv2

    from edge.detectors.factory import bundle_detector

    detector = bundle_detector(slot, manifest)
    counts = []
    for frame in frames:
        bgr = cv2.imread(str(frame))
        if bgr is None:
            counts.append(0)
            continue
        rgb = np.asarray(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), dtype=np.uint8)
        counts.append(len(detector.detect(rgb)))
    return counts


def detection_drift(
    new_slot: Path, new: BundleManifest, live_slot: Path | None, live: BundleManifest | None
) -> float | None:
    """Mean relative change in detections per reference frame between the live model and the new one."""
    if live_slot is None or live is None or not new.reference_frames:
        return None
    frames = [new_slot / name for name in new.reference_frames]
    before, after = _detections(live_slot, live, frames), _detections(new_slot, new, frames)
    return sum(abs(a - b) / max(1, b) for a, b in zip(after, before, strict=True)) / len(frames)


def smoke_test(slot: Path, manifest: BundleManifest, runs: int = 5) -> SmokeResult:
    """Load the slot's model, run it on reference frames, check latency and outputs."""
    from edge.detectors.litert import load_interpreter_class

    cls, _ = load_interpreter_class("auto")
    try:
        interp = cls(model_path=str(slot / manifest.model_file), num_threads=2)
        interp.allocate_tensors()
    except (ValueError, RuntimeError) as exc:
        return SmokeResult(False, 0.0, f"the model does not load: {exc}")
    inp = interp.get_input_details()[0]
    shape = tuple(int(x) for x in inp["shape"])
    if shape[1:3] != (manifest.input.height, manifest.input.width):
        return SmokeResult(False, 0.0, f"input {shape} differs from the manifest's {manifest.input}")
    rng = np.random.default_rng(0)
    frame = rng.integers(0, 255, size=shape, dtype=np.uint8).astype(np.dtype(inp["dtype"]))
    times = []
    for _ in range(runs):
        interp.set_tensor(inp["index"], frame)
        started = time.perf_counter()
        interp.invoke()
        times.append((time.perf_counter() - started) * 1000)
        for out in interp.get_output_details():
            value = interp.get_tensor(out["index"])
            if value.dtype.kind == "f" and not np.isfinite(value).all():
                return SmokeResult(False, 0.0, "the model outputs NaN or infinity")
    latency = float(np.median(times[1:] if runs > 1 else times))
    if latency > manifest.latency_budget_ms:
        return SmokeResult(
            False, latency, f"{latency:.0f} ms per frame, over the {manifest.latency_budget_ms:g} ms budget"
        )
    return SmokeResult(True, latency)


def _one_writer(
    method: Callable[Concatenate[ModelUpdater, _P], _T],
) -> Callable[Concatenate[ModelUpdater, _P], _T]:
    """Run a method that changes slots under the OTA folder's lock."""

    @functools.wraps(method)
    def locked(updater: ModelUpdater, /, *args: _P.args, **kwargs: _P.kwargs) -> _T:
        with updater._exclusive():
            return method(updater, *args, **kwargs)

    return locked


class ModelUpdater:
    """One device's OTA state machine (see the module docstring)."""

    def __init__(
        self,
        root: Path,
        repo_url: str,
        *,
        smoke: Callable[[Path, BundleManifest], SmokeResult] = smoke_test,
        health: Callable[[Path, BundleManifest], bool] | None = None,
        pause_at: str | None = None,
        report: Callable[[dict[str, Any]], None] | None = None,
        max_bytes_per_s: float | None = None,
        lock_timeout_s: float = 600.0,
    ) -> None:
        self.root = root
        self.layout = SlotLayout(root)
        self.lock_timeout_s = lock_timeout_s
        self.repo_url = repo_url.rstrip("/")
        self.smoke = smoke
        self.health = health or (lambda slot, m: smoke(slot, m).ok)
        self.pause_at = pause_at  # tests: stop at a step, waiting for kill -9
        self.report = report or (lambda state: None)
        self.fetcher = ResumableFetcher(self.layout.partial, max_bytes_per_s=max_bytes_per_s)
        for folder in self.layout.folders():
            folder.mkdir(parents=True, exist_ok=True)

    # -- one writer ----------------------------------------------------------------------
    @contextlib.contextmanager
    def _exclusive(self) -> Iterator[None]:
        """Hold the OTA folder's lock: a technician's `vigie edge update` and the OTA listener
        would otherwise unpack into the same spare slot at once.

        The lock is an flock on the folder itself, which any user who can read the folder can
        take (a lock file made by root would lock the service user out); ``lock`` beside it
        names the holder's pid when it can be written, for the error message.
        """
        pid_file = self.layout.lock
        fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY)
        try:
            deadline = time.monotonic() + self.lock_timeout_s
            waiting = False
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    holder = _read_pid(pid_file)
                    if time.monotonic() >= deadline:
                        raise UpdateError(
                            f"another update holds the lock on {self.root} (pid {holder}) for over"
                            f" {self.lock_timeout_s:g} s; wait for it to finish, or stop that process"
                        ) from None
                    if not waiting:
                        extra = {"folder": str(self.root), "pid": holder}
                        log.warning("waiting for another update", extra=extra)
                        waiting = True
                    time.sleep(0.2)
            with contextlib.suppress(OSError):
                write_atomic(pid_file, str(os.getpid()).encode())
            yield
        finally:
            os.close(fd)  # releases the flock

    # -- state ---------------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        try:
            loaded: dict[str, Any] = json.loads(self.layout.state.read_text())
            return loaded
        except (FileNotFoundError, ValueError):
            return {"step": "idle"}

    def _set(self, **state: Any) -> None:
        state["at"] = time.time()
        write_atomic(self.layout.state, json.dumps(state).encode())
        self.report(state)
        if self.pause_at is not None and state.get("step") == self.pause_at:
            log.warning("paused at step %s (test hook)", self.pause_at)
            os.kill(os.getpid(), signal.SIGSTOP)

    def current_slot(self) -> Path | None:
        return self.layout.current_slot()

    def current_manifest(self) -> BundleManifest | None:
        return self.layout.live_manifest()

    def _point_current(self, slot: Path) -> None:
        tmp = self.root / ".current.tmp"
        tmp.unlink(missing_ok=True)
        os.symlink(os.path.relpath(slot, self.root), tmp)
        os.replace(tmp, self.layout.current)  # atomic: the old target or the new, never neither
        dir_fd = os.open(self.root, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)

    # -- install -----------------------------------------------------------------------
    @_one_writer
    def install_initial(self, bundle: Path) -> BundleManifest:
        """First model, from a bundle already trusted (the image or the provisioning run)."""
        slot = self.layout.slot("a")
        shutil.rmtree(slot, ignore_errors=True)
        manifest = unpack(bundle, slot)
        self._point_current(slot)
        self._set(step="idle", version=manifest.ref)
        return manifest

    @_one_writer
    def update(self, target: str) -> BundleManifest:
        """Download ``target`` through TUF, install it in the other slot, test it, switch, confirm.

        Raises:
            UpdateError: whatever went wrong; the device is then on its previous model.
        """
        from tuf.api.exceptions import DownloadError, RepositoryError
        from tuf.ngclient import Updater

        before = self.current_manifest()
        slot = self.layout.other_slot()
        previous_slot = self.current_slot()
        step = {"target": target, "slot": slot.name, "previous": before.ref if before else None,
                "previous_slot": previous_slot.name if previous_slot else None}  # fmt: skip

        def abandon(failed: str, message: str) -> UpdateError:
            """Drop the half-made slot, record why, stay on the live model."""
            shutil.rmtree(slot, ignore_errors=True)
            self._set(step="idle", version=before.ref if before else None, failed=failed)
            return UpdateError(message)

        self._set(step="download", **step)
        try:
            updater = Updater(
                metadata_dir=str(self.layout.metadata),
                metadata_base_url=f"{self.repo_url}/metadata/",
                target_dir=str(self.layout.cache),
                target_base_url=f"{self.repo_url}/targets/",
                bootstrap=self.layout.trusted_root.read_bytes(),
                fetcher=self.fetcher,
            )
            updater.refresh()
            info = updater.get_targetinfo(target)
            if info is None:
                raise UpdateError(f"target {target!r} is not in the signed targets metadata")
            path = Path(updater.find_cached_target(info) or updater.download_target(info))
            self.fetcher.discard()
        except (RepositoryError, DownloadError, OSError) as exc:
            if isinstance(exc, RepositoryError):
                self.fetcher.discard()  # a partial that fails verification is never resumed again
            reason = f"{type(exc).__name__}: {exc}"
            raise abandon(
                f"download: {exc}", f"{target}: refused by TUF verification or unreachable: {reason}"
            ) from exc

        self._set(step="unpack", **step)
        shutil.rmtree(slot, ignore_errors=True)
        try:
            manifest = unpack(path, slot)
        except BundleError as exc:
            raise abandon(f"unpack: {exc}", str(exc)) from exc
        if before is not None and _version(manifest.version) <= _version(before.version):
            why = f"{manifest.ref} is not newer than the installed {before.ref}"
            raise abandon(why, f"{why}: refused (downgrade)")

        self._set(step="smoke", **step)
        result = self.smoke(slot, manifest)
        if result.ok:
            result = SmokeResult(
                True, result.latency_ms, drift=detection_drift(slot, manifest, previous_slot, before)
            )
        else:
            raise abandon(f"smoke: {result.reason}", f"{manifest.ref} failed its smoke test: {result.reason}")

        self._set(step="switch", latency_ms=result.latency_ms, **step)
        self._point_current(slot)
        self._set(step="confirm", **step)
        if not self.health(slot, manifest):
            self._rollback(previous_slot, f"{manifest.ref} failed its check after the switch")
            back = before.ref if before else "none"
            raise UpdateError(f"{manifest.ref} failed after the switch; rolled back to {back}")
        self._set(step="idle", version=manifest.ref, latency_ms=result.latency_ms, drift=result.drift)
        return manifest

    def _rollback(self, previous_slot: Path | None, reason: str) -> None:
        if previous_slot is not None:
            self._point_current(previous_slot)
        restored = self.current_manifest()
        self._set(step="idle", version=restored.ref if restored else None, rolled_back=reason)
        log.warning("rolled back", extra={"reason": reason})

    @_one_writer
    def revert(self) -> BundleManifest:
        """Go back to the other slot's model (a campaign halted after this device installed).

        Raises:
            UpdateError: when the other slot holds no model.
        """
        other = self.layout.other_slot()
        manifest = self.layout.manifest_in(other)
        if manifest is None:
            raise UpdateError("no previous model to go back to")
        self._point_current(other)
        self._set(step="idle", version=manifest.ref, rolled_back="asked by the hub")
        return manifest

    # -- power loss --------------------------------------------------------------------
    @_one_writer
    def recover(self) -> str:
        """After a restart: finish or undo the step that was running; returns what was done."""
        state = self.state()
        step = state.get("step", "idle")
        if step in ("download", "unpack", "smoke"):
            # The live slot was never touched: drop the half-made one.
            current = self.current_slot()
            slot = self.layout.slot(str(state.get("slot", "")))
            if state.get("slot") and (current is None or slot.resolve() != current):
                shutil.rmtree(slot, ignore_errors=True)
                slot.mkdir(parents=True, exist_ok=True)
            manifest = self.current_manifest()
            self._set(step="idle", version=manifest.ref if manifest else None, interrupted=step)
            return f"interrupted during {step}: stayed on {manifest.ref if manifest else 'no model'}"
        if step in ("switch", "confirm"):
            # The new slot passed its smoke test; `current` is the old or the new (atomic rename).
            slot = self.layout.slot(str(state["slot"]))
            manifest = BundleManifest.model_validate_json((slot / "manifest.json").read_text())
            self._point_current(slot)
            if self.health(slot, manifest):
                self._set(step="idle", version=manifest.ref, resumed=step)
                return f"interrupted during {step}: {manifest.ref} confirmed"
            previous = state.get("previous_slot")
            self._rollback(self.layout.slot(previous) if previous else None, "failed its check after restart")
            return f"interrupted during {step}: rolled back"
        return "nothing to recover"


def _read_pid(path: Path) -> str:
    try:
        return path.read_text().strip() or "unknown"
    except OSError:
        return "unknown"


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(x) for x in text.split("."))
