"""TFLite detector on ai-edge-litert, falling back to tflite-runtime.

Handles uint8, int8 and float inputs and SSD models with the
``TFLite_Detection_PostProcess`` op (boxes, classes, scores, count).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt

from edge.detectors import Detection
from vigie.exceptions import ModelError

__all__ = ["LiteRTDetector", "load_interpreter_class", "runtime_name"]

log = logging.getLogger(__name__)


def load_interpreter_class() -> tuple[Any, str]:
    """Return the TFLite ``Interpreter`` class and the runtime's name.

    Raises:
        ModelError: when neither ai-edge-litert nor tflite-runtime is installed.
    """
    try:
        from ai_edge_litert.interpreter import Interpreter

        return Interpreter, "ai-edge-litert"
    except ImportError:
        pass
    try:
        from tflite_runtime.interpreter import Interpreter

        log.warning("ai-edge-litert missing; using tflite-runtime (about 10x slower on x86, needs NumPy < 2)")
        return Interpreter, "tflite-runtime"
    except ImportError:
        raise ModelError(
            "no TFLite runtime installed: run `pip install 'vigie[edge]'` (brings ai-edge-litert)"
        ) from None


def runtime_name() -> str:
    """Name of the runtime :class:`LiteRTDetector` will use."""
    return load_interpreter_class()[1]


class LiteRTDetector:
    """SSD detector with post-processing built into the model."""

    def __init__(
        self,
        model_path: Path,
        labels: Mapping[int, str],
        *,
        model_ref: str,
        threads: int = 2,
        min_score: float = 0.4,
        class_scores: Mapping[str, float] | None = None,
    ) -> None:
        interpreter_cls, self.runtime = load_interpreter_class()
        if not model_path.is_file():
            raise ModelError(f"model file {model_path} not found: run `vigie model fetch`")
        try:
            self._interp = interpreter_cls(model_path=str(model_path), num_threads=threads)
            self._interp.allocate_tensors()
        except (ValueError, RuntimeError) as exc:
            raise ModelError(f"{model_path} is not a loadable TFLite model: {exc}") from exc
        inp = self._interp.get_input_details()[0]
        self._input_index: int = inp["index"]
        _, self._height, self._width, _ = (int(x) for x in inp["shape"])
        self._input_dtype = np.dtype(inp["dtype"])
        self._input_quant: tuple[float, int] = inp["quantization"]
        outputs = self._interp.get_output_details()
        if len(outputs) != 4:
            raise ModelError(
                f"{model_path} has {len(outputs)} outputs; an SSD with post-processing has 4 "
                "(boxes, classes, scores, count)"
            )
        self._out = [int(o["index"]) for o in outputs]
        self.labels = dict(labels)
        self.model_ref = model_ref
        self.min_score = min_score
        self.class_scores = dict(class_scores or {})

    @property
    def input_size(self) -> tuple[int, int]:
        """(width, height) the model expects."""
        return self._width, self._height

    def preprocess(self, rgb: npt.NDArray[np.uint8]) -> npt.NDArray[Any]:
        """Resize to the model's input and convert to its dtype and quantisation."""
        # INTER_AREA anti-aliases the downscale; it reproduces the reference scores.
        resized = cv2.resize(rgb, (self._width, self._height), interpolation=cv2.INTER_AREA)
        if self._input_dtype == np.uint8:
            return resized[np.newaxis]
        if self._input_dtype == np.int8:
            return (resized.astype(np.int16) - 128).astype(np.int8)[np.newaxis]
        # Float models take [-1, 1] unless the model says otherwise via quantisation params.
        return ((resized.astype(np.float32) - 127.5) / 127.5)[np.newaxis]

    def detect(self, rgb: npt.NDArray[np.uint8]) -> list[Detection]:
        """Run the model on one RGB frame and keep detections above their class threshold."""
        self._interp.set_tensor(self._input_index, self.preprocess(rgb))
        self._interp.invoke()
        boxes, classes, scores, count = (self._interp.get_tensor(i) for i in self._out)
        return decode_ssd(
            boxes[0], classes[0], scores[0], int(count[0]), self.labels, self.min_score, self.class_scores
        )


def decode_ssd(
    boxes: npt.NDArray[np.float32],
    classes: npt.NDArray[np.float32],
    scores: npt.NDArray[np.float32],
    count: int,
    labels: Mapping[int, str],
    min_score: float,
    class_scores: Mapping[str, float],
) -> list[Detection]:
    """Turn the post-processed SSD outputs into detections (pure; testable without a model)."""
    found: list[Detection] = []
    for i in range(min(count, len(scores))):
        label = labels.get(int(classes[i]))
        score = float(scores[i])
        if label is None or score < class_scores.get(label, min_score):
            continue
        ymin, xmin, ymax, xmax = (min(max(float(v), 0.0), 1.0) for v in boxes[i])
        found.append(Detection(label, score, (ymin, xmin, ymax, xmax)))
    return found
