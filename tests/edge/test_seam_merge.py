"""Tiling never adds people: boxes cut by tile seams merge back into one (synthetic scenes)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from edge.detectors import Detection
from edge.detectors.tiling import (
    TileBox,
    TiledDetector,
    intersection_over_smaller,
    seam_merge,
    tile_windows,
    unmatched,
)


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


def test_the_last_tiles_end_on_the_frame_border() -> None:
    # A rounding short of 1.0 made the frame's own bottom and right border look like seams.
    for n in (2, 3, 4, 5):
        windows = tile_windows(n)
        assert max(w[2] for w in windows) == 1.0
        assert max(w[3] for w in windows) == 1.0


class _Bodies(_Blobs):
    """Like _Blobs, but a blob under 60 px high (legs alone at a tile's top) is no person: as the SSD."""

    def detect(self, rgb: np.ndarray) -> list[Detection]:
        h = rgb.shape[0]
        return [d for d in super().detect(rgb) if (d.box[2] - d.box[0]) * h >= 60]


class _BlindWhole(_Bodies):
    """The whole frame sees nobody (people too small for it): only the tiles find them."""

    def detect(self, rgb: np.ndarray) -> list[Detection]:
        return [] if rgb.shape[:2] == (576, 768) else super().detect(rgb)


class _TwoLayers(_BlindWhole):
    """People drawn in the red and the blue channel: their boxes may overlap and stay two blobs."""

    def detect(self, rgb: np.ndarray) -> list[Detection]:
        return super().detect(rgb) + super().detect(np.ascontiguousarray(rgb[:, :, ::-1]))


def _layers(front: tuple[int, int, int, int], behind: tuple[int, int, int, int]) -> np.ndarray:
    scene = np.zeros((576, 768, 3), np.uint8)
    for (x0, y0, x1, y1), channel in ((front, 0), (behind, 2)):
        scene[y0:y1, x0:x1, channel] = 255
    return scene


def test_a_person_ending_at_a_seam_is_not_joined_with_the_one_in_front() -> None:
    # 2x2 tiles: the top row ends at y = 311, the bottom row starts at y = 264. One person's feet
    # are at y = 308, right at the top row's edge (their box looks cut there); the bottom row sees
    # only their legs (44 px: no person). In front of them, a little lower, a second person in the
    # same column. The old seam rule joined the two into one tall box (frame 588 of vtest.avi).
    scene = _layers(front=(605, 296, 645, 410), behind=(600, 220, 640, 308))
    found = TiledDetector(_TwoLayers(), 2).detect(scene)
    assert len(found) == 2, found


def test_boxes_on_the_frame_border_are_not_cut_parts() -> None:
    # Two people, one a little behind the other, the front one's feet on the bottom border: the
    # border is no seam, so the front box is whole and the two stay two.
    found = TiledDetector(_TwoLayers(), 2).detect(
        _layers(front=(305, 470, 345, 576), behind=(300, 380, 340, 490))
    )
    assert len(found) == 2, found


class _Shifted(_Bodies):
    """The whole frame places each person's box 55 % of a width to the left; tiles place it well."""

    def detect(self, rgb: np.ndarray) -> list[Detection]:
        found = super().detect(rgb)
        if rgb.shape[:2] != (576, 768):
            return found
        moved = []
        for d in found:
            shift = 0.55 * (d.box[3] - d.box[1])
            moved.append(Detection(d.label, 0.6, (d.box[0], d.box[1] - shift, d.box[2], d.box[3] - shift)))
        return moved


def test_a_tile_box_beside_a_whole_frame_box_is_the_same_person() -> None:
    # The tile's box and the whole frame's overlap by 0.45 of a box (too little for the containment
    # merge): one person, not two (frame 92 of vtest.avi: a far walker counted twice when tracked).
    person = (200, 60, 230, 140)
    whole = _Shifted().detect(_scene(person))[0].box
    tile_box = (60 / 576, 200 / 768, 140 / 576, 230 / 768)
    assert 0.3 < intersection_over_smaller(whole, tile_box) < 0.5
    for n in (2, 3):
        assert len(TiledDetector(_Shifted(), n).detect(_scene(person))) == 1


def test_a_tile_still_adds_the_neighbour_it_resolves() -> None:
    # The whole frame finds one of two people standing close (the other too small for it); the tile
    # finds both: the tile's box on the first is paired with it, the second is added.
    class _OneOfTwo(_Bodies):
        def detect(self, rgb: np.ndarray) -> list[Detection]:
            found = super().detect(rgb)
            return found[:1] if rgb.shape[:2] == (576, 768) else found

    scene = _scene((200, 60, 230, 140), (233, 70, 263, 150))
    assert len(_OneOfTwo().detect(scene)) == 1
    assert len(TiledDetector(_OneOfTwo(), 2).detect(scene)) == 2


def test_unmatched_pairs_one_to_one() -> None:
    a = Detection("person", 0.9, (0.1, 0.10, 0.3, 0.20))
    b = Detection("person", 0.9, (0.1, 0.16, 0.3, 0.26))  # overlaps a by 0.4 of a box
    seen = [TileBox(a), TileBox(b)]
    # One whole-frame box accounts for one tile box (the one it overlaps most), not both.
    assert unmatched(seen, [a]) == [TileBox(b)]
    assert unmatched(seen, [a, b]) == []
    assert unmatched(seen, [Detection("car", 0.9, a.box)]) == seen
