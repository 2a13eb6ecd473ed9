"""TFLite detector on ai-edge-litert, falling back to tflite-runtime.

Handles uint8, int8 and float inputs and SSD models with the
``TFLite_Detection_PostProcess`` op (boxes, classes, scores, count).
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt

from edge.detectors import Detection
from edge.detectors.decode import decode_ssd, decode_yolo
from vigie.exceptions import ModelError

__all__ = [
    "LiteRTDetector",
    "letterbox",
    "load_edgetpu_delegate",
    "load_interpreter_class",
    "to_input_dtype",
    "unletterbox",
]

log = logging.getLogger(__name__)


def load_interpreter_class(runtime: str = "auto") -> tuple[Any, str]:
    """Return the TFLite ``Interpreter`` class and the runtime's name.

    Args:
        runtime: ``auto`` (ai-edge-litert, else tflite-runtime), ``litert`` or ``tflite-runtime``.

    Raises:
        ModelError: when the asked-for runtime is not installed.
    """
    if runtime in ("auto", "litert"):
        try:
            from ai_edge_litert.interpreter import Interpreter

            return Interpreter, "ai-edge-litert"
        except ImportError:
            if runtime == "litert":
                raise ModelError("runtime litert asked for but ai-edge-litert is not installed") from None
    try:
        from tflite_runtime.interpreter import Interpreter

        log.warning("ai-edge-litert missing; using tflite-runtime (about 10x slower on x86, needs NumPy < 2)")
        return Interpreter, "tflite-runtime"
    except ImportError:
        raise ModelError(
            "no TFLite runtime installed: run `pip install 'vigie[edge]'` (brings ai-edge-litert)"
        ) from None


def load_edgetpu_delegate(module: Any) -> Any | None:
    """The Coral Edge TPU delegate when ``libedgetpu`` is installed, else None (logged)."""
    loader = getattr(module, "load_delegate", None)
    if loader is None:
        return None
    for lib in ("libedgetpu.so.1", "libedgetpu.1.dylib", "edgetpu.dll"):
        try:
            return loader(lib)
        except (ValueError, OSError):
            continue
    log.warning("edgetpu delegate asked for but libedgetpu is not installed; running on the CPU")
    return None


class LiteRTDetector:
    """A TFLite detector: SSD with built-in post-processing, or raw YOLO output with NMS."""

    def __init__(
        self,
        model_path: Path,
        labels: Mapping[int, str],
        *,
        model_ref: str,
        threads: int = 2,
        min_score: float = 0.4,
        class_scores: Mapping[str, float] | None = None,
        output: str = "ssd_postprocess",
        runtime: str = "auto",
        delegate: str = "none",
        letterbox: bool = False,
    ) -> None:
        interpreter_cls, self.runtime = load_interpreter_class(runtime)
        if not model_path.is_file():
            raise ModelError(f"model file {model_path} not found: run `vigie model fetch`")
        delegates = []
        if delegate == "edgetpu":
            module = sys.modules[interpreter_cls.__module__]
            edgetpu = load_edgetpu_delegate(module)
            if edgetpu is not None:
                delegates.append(edgetpu)
                self.runtime += "+edgetpu"
        try:
            self._interp = interpreter_cls(
                model_path=str(model_path), num_threads=threads, experimental_delegates=delegates or None
            )
            self._interp.allocate_tensors()
        except (ValueError, RuntimeError) as exc:
            raise ModelError(f"{model_path} is not a loadable TFLite model: {exc}") from exc
        inp = self._interp.get_input_details()[0]
        self._input_index: int = inp["index"]
        _, self._height, self._width, _ = (int(x) for x in inp["shape"])
        self._input_dtype = np.dtype(inp["dtype"])
        scale, zero = inp["quantization"]
        self._input_quant: tuple[float, int] = (float(scale), int(zero))
        outputs = self._interp.get_output_details()
        self.output = output
        if output == "ssd_postprocess" and len(outputs) != 4:
            raise ModelError(
                f"{model_path} has {len(outputs)} outputs; an SSD with post-processing has 4 "
                "(boxes, classes, scores, count): set output.kind to 'yolo' for raw outputs"
            )
        self._out = [int(o["index"]) for o in outputs]
        self._out_quant = [o["quantization"] for o in outputs]
        self.labels = dict(labels)
        self.model_ref = model_ref
        self.min_score = min_score
        self.class_scores = dict(class_scores or {})
        self.letterboxed = letterbox

    @property
    def input_size(self) -> tuple[int, int]:
        """(width, height) the model expects."""
        return self._width, self._height

    def preprocess(self, rgb: npt.NDArray[np.uint8]) -> npt.NDArray[Any]:
        """Resize to the model's input and convert to its dtype and quantisation."""
        # INTER_AREA anti-aliases the downscale; it reproduces the reference scores.
        resized = np.asarray(
            cv2.resize(rgb, (self._width, self._height), interpolation=cv2.INTER_AREA), dtype=np.uint8
        )
        return to_input_dtype(resized, self._input_dtype, self._input_quant)[np.newaxis]

    def detect(self, rgb: npt.NDArray[np.uint8]) -> list[Detection]:
        """Run the model on one RGB frame and keep detections above their class threshold."""
        if not self.letterboxed:
            return self._detect(rgb)
        padded, scale = letterbox(rgb)
        return unletterbox(self._detect(padded), scale)

    def _detect(self, rgb: npt.NDArray[np.uint8]) -> list[Detection]:
        self._interp.set_tensor(self._input_index, self.preprocess(rgb))
        self._interp.invoke()
        if self.output == "yolo":
            raw = self._interp.get_tensor(self._out[0])
            scale, zero = self._out_quant[0]
            if raw.dtype != np.float32 and scale:
                raw = (raw.astype(np.float32) - zero) * scale
            return decode_yolo(
                raw, self.labels, self.min_score, self.class_scores, input_size=(self._width, self._height)
            )
        boxes, classes, scores, count = (self._interp.get_tensor(i) for i in self._out)
        return decode_ssd(
            boxes[0], classes[0], scores[0], int(count[0]), self.labels, self.min_score, self.class_scores
        )


def letterbox(rgb: npt.NDArray[np.uint8]) -> tuple[npt.NDArray[np.uint8], tuple[float, float]]:
    """Pad the frame to a square (black below or to the right) so the square model input keeps its shape.

    Returns the padded frame and the (y, x) factors that map its normalised
    coordinates back to the original frame's.
    """
    h, w = rgb.shape[:2]
    side = max(h, w)
    if h == w:
        return rgb, (1.0, 1.0)
    padded = np.zeros((side, side, 3), dtype=np.uint8)
    padded[:h, :w] = rgb
    return padded, (side / h, side / w)


def unletterbox(found: list[Detection], scale: tuple[float, float]) -> list[Detection]:
    """Boxes found on a letterboxed frame in the original frame's coordinates; boxes in the padding go."""
    sy, sx = scale
    out: list[Detection] = []
    for d in found:
        ymin, xmin, ymax, xmax = d.box
        if ymin * sy >= 1.0 or xmin * sx >= 1.0:
            continue
        box = (ymin * sy, xmin * sx, min(ymax * sy, 1.0), min(xmax * sx, 1.0))
        out.append(Detection(d.label, d.score, box))
    return out


def to_input_dtype(
    resized: npt.NDArray[np.uint8], dtype: np.dtype[Any], quant: tuple[float, int]
) -> npt.NDArray[Any]:
    """uint8 pixels to what the model takes: uint8 as is, int8 shifted, float through its quantisation.

    A float model whose quantisation says nothing gets pixels in [0, 1] (YOLO
    exports) unless ``quant`` carries a scale: then ``(p - zero) * scale``.
    """
    if dtype == np.uint8:
        return resized
    if dtype == np.int8:
        return (resized.astype(np.int16) - 128).astype(np.int8)
    scale, zero = quant
    if scale:
        return ((resized.astype(np.float32) - zero) * scale).astype(dtype)
    return (resized.astype(np.float32) / 255.0).astype(dtype)
