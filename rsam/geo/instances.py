"""Instances (one object = one connected component) from blended probability windows, merged across window seams.

Rules (the task-heads-free M2B of ``utils.M2B``, :mod:`rsam.tasks.m2b`, applied to the whole scene):

* foreground: the official argmax rule, ``prob > 0.5``, on valid pixels only;
* components: 8-connectivity (``cv2.connectedComponentsWithStats``), labelled per window and joined across window
  seams with a union-find (pixels that touch across a seam, diagonals included, are one object) — so an object cut
  by tile or window borders comes out as one instance;
* score: mean probability over the component's pixels; components scoring ``< 0.01`` dropped;
* inner boxes removed, then NMS at IoU 0.5 on the horizontal boxes (``remove_inner_boxes`` + ``nms`` of
  :mod:`rsam.tasks.m2b`), per prompt.

Geometry: each window's components are polygonised (``rasterio.features.shapes`` on pixel edges) in scene pixel
coordinates, pieces of one object are unioned with shapely, and the result is mapped to the raster's CRS with its
affine transform. The horizontal box is the component's pixel-edge extent ``[x, y, x + w, y + h]`` (M2B's stats box);
the oriented box is shapely's minimum rotated rectangle of the polygon (pixel edges; M2B's ``minAreaRect`` uses
pixel centres, so it is half a pixel smaller on each side).

Memory (bounded by the open seams, not by the objects already found): the collector keeps only the *seam windows*,
windows with a neighbouring pixel (8-connectivity) not seen yet, each with its four border lines of labels, and the
pieces of the *open* objects, those with a pixel on a border line whose neighbours are not all seen. A window whose
surroundings have all been seen is dropped; an object none of whose pixels can touch a window to come is finished:
its pieces are unioned, mapped, and its geometry (WKB) and one fixed-size record (box, score, area) go to temporary
files, so the pieces, labels and union-find entries of finished objects are released. The scene-wide M2B then runs on
the records (80 bytes per object) and the geometries are read back one at a time when the vectors are written.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from dataclasses import dataclass

import cv2
import numpy as np
import shapely
import shapely.affinity
import shapely.geometry
from affine import Affine
from rasterio.features import shapes
from rasterio.windows import Window

from rsam.tasks.m2b import CONF_THRESHOLD, NMS_IOU, Boxes, _hbb_inside_matrix, nms
from rsam.tasks.maps import FOREGROUND_THRESHOLD

SIDES = ("top", "bottom", "left", "right")
# one finished object (score >= CONF_THRESHOLD): prompt index, union-find root (= its smallest piece id, which orders
# objects as the whole-scene labelling would), pixel-edge box, score, area, and where its WKB lies in the spill file
RECORD = np.dtype(
    [("prompt", "<i8"), ("root", "<i8"), ("x1", "<i8"), ("y1", "<i8"), ("x2", "<i8"), ("y2", "<i8"),
     ("score", "<f8"), ("area", "<i8"), ("offset", "<i8"), ("length", "<i8")]
)  # fmt: skip


@dataclass
class Instance:
    id: int
    prompt: str
    score: float
    area_px: int
    bbox_px: tuple[int, int, int, int]  # x1 y1 x2 y2, pixel edges (x2, y2 exclusive)
    geometry: object  # shapely geometry in map (or pixel) coordinates
    obb: object  # shapely polygon (minimum rotated rectangle) in the same coordinates


@dataclass
class _Piece:
    """One component of one window."""

    area: int
    prob_sum: float
    bbox: tuple[int, int, int, int]
    geoms: list[bytes]  # WKB of its polygons (pixel coordinates)


class _OpenObjects:
    """Pieces of the objects of one prompt that may still grow, in a union-find whose root is the smallest id."""

    def __init__(self):
        self.next_id = 0
        self.parent: dict[int, int] = {}
        self.members: dict[int, list[int]] = {}  # root -> its piece ids
        self.pieces: dict[int, _Piece] = {}

    def add(self, piece: _Piece) -> int:
        i = self.next_id
        self.next_id += 1
        self.parent[i], self.members[i], self.pieces[i] = i, [i], piece
        return i

    def find(self, i: int) -> int:
        parent = self.parent
        root = i
        while parent[root] != root:
            root = parent[root]
        while parent[i] != root:
            parent[i], i = root, parent[i]
        return root

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            low, high = min(ra, rb), max(ra, rb)
            self.parent[high] = low
            self.members[low].extend(self.members.pop(high))

    def pop(self, root: int) -> list[_Piece]:
        """Remove a finished object; its pieces in increasing id order."""
        ids = sorted(self.members.pop(root))
        for i in ids:
            del self.parent[i]
        return [self.pieces.pop(i) for i in ids]


class _SeamWindow:
    """A window already processed, kept while some pixel next to it (8-connectivity) has not been seen.

    ``seen[side]``: the pixels of the line just outside that side, positions ``-1 .. n`` along it (corners
    included), True once seen or outside the scene. ``lines[p][side]``: prompt ``p``'s global labels on the window's
    own border line (-1: background, or a pixel whose outside neighbours have all been seen)."""

    def __init__(self, x0: int, y0: int, w: int, h: int, width: int, height: int, lines: list[dict[str, np.ndarray]]):
        self.x0, self.y0, self.x1, self.y1 = x0, y0, x0 + w, y0 + h
        self.lines = lines
        self.seen: dict[str, np.ndarray] = {}
        for side in SIDES:
            axis, coord, first = self._outside(side)
            positions = np.arange(first, first + (w if axis == 0 else h) + 2)
            limit, across = (width, height) if axis == 0 else (height, width)
            self.seen[side] = (positions < 0) | (positions >= limit) | (not 0 <= coord < across)

    def _outside(self, side: str) -> tuple[int, int, int]:
        """``(axis, coordinate, first position)`` of the line outside ``side``: axis 0 = a row (positions are
        columns), axis 1 = a column (positions are rows)."""
        if side == "top":
            return 0, self.y0 - 1, self.x0 - 1
        if side == "bottom":
            return 0, self.y1, self.x0 - 1
        if side == "left":
            return 1, self.x0 - 1, self.y0 - 1
        return 1, self.x1, self.y0 - 1

    def mark(self, other: _SeamWindow) -> None:
        """Record ``other``'s pixels as seen."""
        for side in SIDES:
            axis, coord, first = self._outside(side)
            seen = self.seen[side]
            lo, hi, a, b = (
                (other.y0, other.y1, other.x0, other.x1) if axis == 0 else (other.x0, other.x1, other.y0, other.y1)
            )
            if lo <= coord < hi:
                a, b = max(a, first), min(b, first + len(seen))
                if a < b:
                    seen[a - first : b - first] = True

    def forget_closed(self) -> None:
        """Background (-1) on border pixels whose outside neighbours have all been seen: nothing can join them."""
        for side in SIDES:
            s = self.seen[side]
            closed = s[:-2] & s[1:-1] & s[2:]
            for lines in self.lines:
                lines[side][closed] = -1

    @property
    def closed(self) -> bool:
        return all(s.all() for s in self.seen.values())


def _link(objects: _OpenObjects, mine: np.ndarray, mine_start: int, other: np.ndarray, other_start: int) -> None:
    """Union the labels of two facing border lines (pixels ``mine_start + j`` and ``other_start + k``): each pixel
    with the three across from it (diagonal, straight, diagonal)."""
    n = len(mine)
    facing = np.full(n + 2, -1, np.int64)  # other's labels at positions mine_start - 1 .. mine_start + n
    lo = mine_start - 1
    a, b = max(lo, other_start), min(lo + n + 2, other_start + len(other))
    if a >= b:
        return
    facing[a - lo : b - lo] = other[a - other_start : b - other_start]
    for shift in (0, 1, 2):
        across = facing[shift : shift + n]
        both = (mine >= 0) & (across >= 0)
        if both.any():
            for x, y in np.unique(np.stack([mine[both], across[both]], axis=1), axis=0):
                objects.union(int(x), int(y))


class InstanceCollector:
    """Feed it the blended windows of :func:`rsam.geo.tiling.blend_scene` (any window order that tiles the scene
    exactly once); :meth:`iter_instances` / :meth:`instances` then give the merged, M2B-filtered objects per prompt.
    Use as a context manager, or call :meth:`close`, to remove the temporary files at once."""

    def __init__(self, prompts: list[str], width: int, height: int, transform: Affine | None = None, spill_dir=None):
        self.prompts = list(prompts)
        self.width, self.height = width, height
        self.transform = transform or Affine.identity()
        self._open = [_OpenObjects() for _ in prompts]
        self._seams: list[_SeamWindow] = []
        self._geoms = tempfile.TemporaryFile(prefix="rsam-instances-", suffix=".wkb", dir=spill_dir)
        self._records = tempfile.TemporaryFile(prefix="rsam-instances-", suffix=".rec", dir=spill_dir)
        self.finished = [0] * len(prompts)  # objects finished (score >= CONF_THRESHOLD), per prompt
        self.most_open = 0  # the most objects (all prompts) held open after any window

    # ---- state, for tests and logs ---------------------------------------------------------------------------------
    @property
    def open_objects(self) -> list[int]:
        """Objects held in memory (may still grow), per prompt."""
        return [len(o.members) for o in self._open]

    @property
    def open_pieces(self) -> list[int]:
        return [len(o.pieces) for o in self._open]

    @property
    def seam_windows(self) -> int:
        return len(self._seams)

    # ---- feeding ---------------------------------------------------------------------------------------------------
    def __call__(self, window: Window, probs: np.ndarray, valid: np.ndarray) -> None:
        x0, y0 = int(window.col_off), int(window.row_off)
        h, w = probs.shape[1:]
        lines = [self._components(p, x0, y0, probs[p], valid) for p in range(len(self.prompts))]
        new = _SeamWindow(x0, y0, w, h, self.width, self.height, lines)
        for old in self._seams:  # every window next to the new one is still a seam window
            for p, objects in enumerate(self._open):
                self._join(objects, new, old, p)
            old.mark(new)
            new.mark(old)
        self._seams.append(new)
        for seam in self._seams:
            seam.forget_closed()
        self._seams = [s for s in self._seams if not s.closed]
        for p in range(len(self.prompts)):
            self._finish_closed(p)
        self.most_open = max(self.most_open, sum(self.open_objects))

    def _components(self, p: int, x0: int, y0: int, prob: np.ndarray, valid: np.ndarray) -> dict[str, np.ndarray]:
        """Label one window, add its components as pieces; its border lines of global labels."""
        mask = ((prob > FOREGROUND_THRESHOLD) & valid).astype(np.uint8)
        objects = self._open[p]
        count, labels, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
        start = objects.next_id
        if count > 1:
            sums = np.bincount(labels.ravel(), weights=prob.ravel().astype(np.float64), minlength=count)
            geoms: list[list[bytes]] = [[] for _ in range(count - 1)]
            for geom, value in shapes(
                labels.astype(np.int32), mask=mask.astype(bool), connectivity=4, transform=Affine.translation(x0, y0)
            ):
                geoms[int(value) - 1].append(shapely.to_wkb(shapely.geometry.shape(geom)))  # compact
            for k in range(1, count):
                sx, sy, sw, sh, area = (int(v) for v in stats[k])
                objects.add(_Piece(area, float(sums[k]), (x0 + sx, y0 + sy, x0 + sx + sw, y0 + sy + sh), geoms[k - 1]))

        def glob(line: np.ndarray) -> np.ndarray:
            return np.where(line > 0, line.astype(np.int64) - 1 + start, -1)

        return {
            "top": glob(labels[0]),
            "bottom": glob(labels[-1]),
            "left": glob(labels[:, 0]),
            "right": glob(labels[:, -1]),
        }

    @staticmethod
    def _join(objects: _OpenObjects, new: _SeamWindow, old: _SeamWindow, p: int) -> None:
        """Union the objects of two windows that touch (8-connectivity) across a shared border."""
        a, b = new.lines[p], old.lines[p]
        if old.y1 == new.y0:
            _link(objects, a["top"], new.x0, b["bottom"], old.x0)
        if new.y1 == old.y0:
            _link(objects, a["bottom"], new.x0, b["top"], old.x0)
        if old.x1 == new.x0:
            _link(objects, a["left"], new.y0, b["right"], old.y0)
        if new.x1 == old.x0:
            _link(objects, a["right"], new.y0, b["left"], old.y0)

    def _finish_closed(self, p: int) -> None:
        """Finish every object of prompt ``p`` that has no pixel left on an open border line."""
        objects = self._open[p]
        labels = [line[line >= 0] for seam in self._seams for line in seam.lines[p].values()]
        live = np.unique(np.concatenate(labels)) if labels else np.zeros(0, np.int64)
        open_roots = {objects.find(int(i)) for i in live}
        for root in [r for r in objects.members if r not in open_roots]:
            self._finish(p, root)

    def _finish(self, p: int, root: int) -> None:
        pieces = self._open[p].pop(root)
        area = sum(piece.area for piece in pieces)
        score = sum(piece.prob_sum for piece in pieces) / max(area, 1)
        if score < CONF_THRESHOLD:
            return
        boxes = np.asarray([piece.bbox for piece in pieces])
        bbox = (int(boxes[:, 0].min()), int(boxes[:, 1].min()), int(boxes[:, 2].max()), int(boxes[:, 3].max()))
        geometry = shapely.union_all(shapely.from_wkb([g for piece in pieces for g in piece.geoms]))
        geometry = shapely.make_valid(geometry) if not geometry.is_valid else geometry
        blob = shapely.to_wkb(_to_map(geometry, self.transform))
        offset = self._geoms.seek(0, 2)
        self._geoms.write(blob)
        self._records.seek(0, 2)
        self._records.write(np.array([(p, root, *bbox, score, area, offset, len(blob))], RECORD).tobytes())
        self.finished[p] += 1

    def _finish_all(self) -> None:
        """End of the scene: every object still held is finished (all of them, once the windows tiled the scene)."""
        self._seams = []
        for p, objects in enumerate(self._open):
            for root in list(objects.members):
                self._finish(p, root)

    # ---- results ---------------------------------------------------------------------------------------------------
    def iter_instances(self, *, m2b: bool = True) -> Iterator[Instance]:
        """Merged objects of every prompt (ids 1..N in prompt order, then by decreasing score), one at a time: only
        the records are in memory, each geometry is read back when its instance is yielded."""
        self._finish_all()
        self._records.seek(0)
        records = np.frombuffer(self._records.read(), RECORD)
        next_id = 1
        for p, prompt in enumerate(self.prompts):
            mine = records[records["prompt"] == p]
            mine = mine[np.argsort(mine["root"], kind="stable")]  # the order of a whole-scene labelling
            if m2b and len(mine):
                coords = np.stack([mine["x1"], mine["y1"], mine["x2"], mine["y2"]], axis=1).astype(np.float64)
                mine = mine[_kept_indices(Boxes(coords, mine["score"].astype(np.float64)))]
            for record in mine[np.argsort(-mine["score"], kind="stable")]:
                self._geoms.seek(int(record["offset"]))
                geometry = shapely.from_wkb(self._geoms.read(int(record["length"])))
                yield Instance(
                    id=next_id,
                    prompt=prompt,
                    score=float(record["score"]),
                    area_px=int(record["area"]),
                    bbox_px=(int(record["x1"]), int(record["y1"]), int(record["x2"]), int(record["y2"])),
                    geometry=geometry,
                    obb=geometry.minimum_rotated_rectangle,
                )
                next_id += 1

    def instances(self, *, m2b: bool = True) -> list[Instance]:
        """:meth:`iter_instances` as a list."""
        return list(self.iter_instances(m2b=m2b))

    def close(self) -> None:
        self._geoms.close()
        self._records.close()

    def __enter__(self) -> InstanceCollector:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def inner_box_flags(coords: np.ndarray) -> np.ndarray:
    """``flags[i]``: box i lies inside another box by M2B's official pixel test (``remove_inner_boxes``), computed
    only on intersecting pairs (a spatial index), so memory grows with the overlaps, not with N^2 as the per-tile
    rule's full matrix would on a whole scene. Boxes from components have w, h >= 1, so a box can only be inside a
    box it intersects."""
    n = len(coords)
    flags = np.zeros(n, bool)
    if n < 2:
        return flags
    tree = shapely.STRtree(shapely.box(coords[:, 0], coords[:, 1], coords[:, 2], coords[:, 3]))
    pairs = tree.query(tree.geometries, predicate="intersects")
    for i, j in zip(*pairs):
        if i < j:
            inside = _hbb_inside_matrix(coords[[i, j]])
            flags[i] |= bool(inside[0, 1])
            flags[j] |= bool(inside[1, 0])
    return flags


def _kept_indices(boxes: Boxes) -> list[int]:
    """Indices of ``boxes`` that survive M2B's inner-box removal and NMS at IoU 0.5 (by decreasing score)."""
    survivors = np.flatnonzero(~inner_box_flags(boxes.coords))  # equal boxes remove each other: coords unique
    index = {tuple(boxes.coords[i]): int(i) for i in survivors}
    return [index[tuple(c)] for c in nms(boxes.take(survivors), NMS_IOU).coords]


def _to_map(geometry, transform: Affine):
    a, b, c, d, e, f = transform.a, transform.b, transform.c, transform.d, transform.e, transform.f
    return shapely.affinity.affine_transform(geometry, [a, b, d, e, c, f])
