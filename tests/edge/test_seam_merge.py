"""Tiling never adds people: boxes cut by tile seams merge back into one (synthetic scenes)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from edge.detectors import Detection
from edge.detectors.tiling import TileBox, TiledDetector, intersection_over_smaller, seam_merge


class _Blobs:
    """Reports one 'person' per white blob of the image it is shown: what a detector sees of a tile."""

    model_ref = "blobs@1"

    def detect(self, rgb: np.ndarray) -> list[Detection]:
        h, w = rgb.shape[:2]
        n, _, stats, _ = cv2.connectedComponentsWithStats((rgb[:, :, 0] > 127).astype(np.uint8))
        return [
            Detection("person", 0.9, (y / h, x / w, (y + bh) / h, (x + bw) / w))
            for x, y, bw, bh, _area in stats[1:n]
        ]


def _scene(*people: tuple[int, int, int, int]) -> np.ndarray:
    rgb = np.zeros((576, 768, 3), np.uint8)
    for x0, y0, x1, y1 in people:
        rgb[y0:y1, x0:x1] = 255
    return rgb


@pytest.mark.parametrize("full_frame", [True, False])
@pytest.mark.parametrize("n", [2, 3, 4])
def test_a_person_cut_by_a_seam_is_one_box(n: int, full_frame: bool) -> None:
    # A person standing on the centre of the frame, where 2x2 and 4x4 seams cross; 3x3 cuts it too.
    person = (350, 230, 420, 380)
    found = TiledDetector(_Blobs(), n, include_full_frame=full_frame).detect(_scene(person))
    assert len(found) == 1, found
    ymin, xmin, ymax, xmax = found[0].box
    pixels = (xmin * 768, ymin * 576, xmax * 768, ymax * 576)
    assert pixels == pytest.approx(person, abs=2)


@pytest.mark.parametrize("n", [2, 3])
def test_neighbours_across_a_seam_stay_two(n: int) -> None:
    # Two people side by side, a few pixels apart, either side of the vertical centre line.
    found = TiledDetector(_Blobs(), n).detect(_scene((330, 250, 378, 390), (390, 250, 440, 390)))
    assert len(found) == 2


def test_tiling_never_counts_more_than_the_blobs() -> None:
    rng = np.random.default_rng(7)
    for _ in range(20):
        people = []
        for _ in range(int(rng.integers(1, 6))):
            x, y = int(rng.integers(0, 700)), int(rng.integers(0, 480))
            people.append((x, y, x + int(rng.integers(20, 60)), y + int(rng.integers(50, 90))))
        scene = _scene(*people)
        whole = len(_Blobs().detect(scene))
        for n in (2, 3, 4):
            assert len(TiledDetector(_Blobs(), n).detect(scene)) <= whole


def test_containment_merges_what_iou_would_keep() -> None:
    big = Detection("person", 0.8, (0.2, 0.2, 0.6, 0.4))
    part = Detection("person", 0.9, (0.2, 0.2, 0.35, 0.4))  # IoU 0.375, all inside the big box
    assert intersection_over_smaller(big.box, part.box) == pytest.approx(1.0)
    assert seam_merge([TileBox(big), TileBox(part)]) == [part]
    other = Detection("car", 0.9, part.box)
    assert len(seam_merge([TileBox(big), TileBox(other)])) == 2


def test_a_tile_never_removes_what_the_whole_frame_found() -> None:
    # The whole frame sees two people side by side; a magnified tile sees one box around both.
    left = TileBox(Detection("person", 0.6, (0.4, 0.40, 0.7, 0.45)), whole=True)
    right = TileBox(Detection("person", 0.6, (0.4, 0.44, 0.7, 0.50)), whole=True)
    couple = TileBox(Detection("person", 0.9, (0.4, 0.40, 0.7, 0.50)))
    assert seam_merge([couple, left, right]) == [left.det, right.det]
    # A person the whole frame missed is added from the tile.
    far = TileBox(Detection("person", 0.7, (0.1, 0.8, 0.15, 0.82)))
    assert len(seam_merge([couple, left, right, far])) == 3


def test_faint_tile_boxes_do_not_add_people() -> None:
    class _FaintInTiles(_Blobs):
        def detect(self, rgb: np.ndarray) -> list[Detection]:
            if rgb.shape[:2] == (576, 768):
                return []  # the whole frame sees nothing there
            return [Detection(d.label, 0.45, d.box) for d in super().detect(rgb)]

    scene = _scene((100, 100, 140, 190))
    assert TiledDetector(_FaintInTiles(), 2).detect(scene) == []
    assert TiledDetector(_FaintInTiles(), 2, tile_min_score=0.4).detect(scene)
    assert TiledDetector(_FaintInTiles(), 2, include_full_frame=False).detect(scene)  # tiles alone: kept
