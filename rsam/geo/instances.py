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
"""

from __future__ import annotations

from dataclasses import dataclass, field

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


class _UnionFind:
    def __init__(self):
        self.parent: list[int] = []

    def add(self, count: int) -> int:
        start = len(self.parent)
        self.parent.extend(range(start, start + count))
        return start

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
            self.parent[max(ra, rb)] = min(ra, rb)


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
class _Pieces:
    area: list[int] = field(default_factory=list)
    prob_sum: list[float] = field(default_factory=list)
    bbox: list[list[int]] = field(default_factory=list)
    geoms: list[object] = field(default_factory=list)


class InstanceCollector:
    """Feed it the blended windows of :func:`rsam.geo.tiling.blend_scene` (any window order that tiles the scene);
    :meth:`instances` then gives the merged, M2B-filtered objects per prompt."""

    def __init__(self, prompts: list[str], width: int, height: int, transform: Affine | None = None):
        self.prompts = list(prompts)
        self.width, self.height = width, height
        self.transform = transform or Affine.identity()
        self._uf = [_UnionFind() for _ in prompts]
        self._pieces = [_Pieces() for _ in prompts]
        # labels (global ids, -1 = background) of the scene's pixel rows/columns next to already-seen windows
        self._row_edges: list[dict[int, tuple[int, np.ndarray]]] = [{} for _ in prompts]  # y -> (x0, labels)
        self._col_edges: list[dict[int, tuple[int, np.ndarray]]] = [{} for _ in prompts]  # x -> (y0, labels)

    def __call__(self, window: Window, probs: np.ndarray, valid: np.ndarray) -> None:
        for p in range(len(self.prompts)):
            self._add(p, window, probs[p], valid)

    def _add(self, p: int, window: Window, prob: np.ndarray, valid: np.ndarray) -> None:
        x0, y0 = int(window.col_off), int(window.row_off)
        h, w = prob.shape
        mask = ((prob > FOREGROUND_THRESHOLD) & valid).astype(np.uint8)
        uf, pieces = self._uf[p], self._pieces[p]
        count, labels, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
        start = uf.add(count - 1)
        glabels = np.where(labels > 0, labels.astype(np.int64) - 1 + start, -1)
        if count > 1:
            sums = np.bincount(labels.ravel(), weights=prob.ravel().astype(np.float64), minlength=count)
            for k in range(1, count):
                sx, sy, sw, sh, area = (int(v) for v in stats[k])
                pieces.area.append(area)
                pieces.prob_sum.append(float(sums[k]))
                pieces.bbox.append([x0 + sx, y0 + sy, x0 + sx + sw, y0 + sy + sh])
                pieces.geoms.append([])
            for geom, value in shapes(
                labels.astype(np.int32), mask=mask.astype(bool), connectivity=4, transform=Affine.translation(x0, y0)
            ):
                pieces.geoms[start + int(value) - 1].append(shapely.to_wkb(shapely.geometry.shape(geom)))  # compact
        self._join(p, x0, y0, w, h, glabels)

    def _join(self, p: int, x0: int, y0: int, w: int, h: int, glabels: np.ndarray) -> None:
        """Union with labels of already-seen neighbouring pixels (8-connectivity), then remember this window's
        border rows and columns for windows to come."""
        uf = self._uf[p]
        rows, cols = self._row_edges[p], self._col_edges[p]

        def link(mine: np.ndarray, other: np.ndarray) -> None:
            both = (mine >= 0) & (other >= 0)
            if both.any():
                for a, b in np.unique(np.stack([mine[both], other[both]], axis=1), axis=0):
                    uf.union(int(a), int(b))

        def neighbour_line(store, coord, lo, length):
            """Labels of the stored line at ``coord`` over positions [lo - 1, lo + length + 1), -1 where unknown."""
            out = np.full(length + 2, -1, np.int64)
            if coord in store:
                start, values = store[coord]
                a, b = max(lo - 1, start), min(lo + length + 1, start + len(values))
                if a < b:
                    out[a - (lo - 1) : b - (lo - 1)] = values[a - start : b - start]
            return out

        # the row above (y0 - 1) and below (y0 + h), the column left (x0 - 1) and right (x0 + w)
        for coord, line_index in ((y0 - 1, 0), (y0 + h, h - 1)):
            other = neighbour_line(rows, coord, x0, w)
            mine = glabels[line_index]
            for shift in (0, 1, 2):  # other[j + shift] is at column x0 + j + shift - 1: diagonal, straight, diagonal
                link(mine, other[shift : shift + w])
        for coord, line_index in ((x0 - 1, 0), (x0 + w, w - 1)):
            other = neighbour_line(cols, coord, y0, h)
            mine = glabels[:, line_index]
            for shift in (0, 1, 2):
                link(mine, other[shift : shift + h])
        self._store(rows, y0, x0, glabels[0])
        self._store(rows, y0 + h - 1, x0, glabels[h - 1])
        self._store(cols, x0, y0, glabels[:, 0])
        self._store(cols, x0 + w - 1, y0, glabels[:, w - 1])

    @staticmethod
    def _store(store: dict, coord: int, start: int, values: np.ndarray) -> None:
        """Merge a line segment into the stored line at ``coord`` (segments of one line may come from several
        windows; they are kept as one array spanning all of them)."""
        values = np.asarray(values, np.int64)
        if coord not in store:
            store[coord] = (start, values.copy())
            return
        old_start, old = store[coord]
        lo, hi = min(old_start, start), max(old_start + len(old), start + len(values))
        merged = np.full(hi - lo, -1, np.int64)
        merged[old_start - lo : old_start - lo + len(old)] = old
        merged[start - lo : start - lo + len(values)] = values
        store[coord] = (lo, merged)

    def instances(self, *, m2b: bool = True) -> list[Instance]:
        """Merged objects of every prompt (ids 1..N in prompt order, then by decreasing score)."""
        result: list[Instance] = []
        for p, prompt in enumerate(self.prompts):
            uf, pieces = self._uf[p], self._pieces[p]
            groups: dict[int, list[int]] = {}
            for i in range(len(uf.parent)):
                groups.setdefault(uf.find(i), []).append(i)
            merged = []
            for members in groups.values():
                area = sum(pieces.area[i] for i in members)
                score = sum(pieces.prob_sum[i] for i in members) / max(area, 1)
                boxes = np.asarray([pieces.bbox[i] for i in members])
                bbox = (int(boxes[:, 0].min()), int(boxes[:, 1].min()), int(boxes[:, 2].max()), int(boxes[:, 3].max()))
                merged.append((members, area, score, bbox))
            merged = [m for m in merged if m[2] >= CONF_THRESHOLD]
            if m2b and merged:
                boxes = Boxes(
                    np.asarray([m[3] for m in merged], np.float64), np.asarray([m[2] for m in merged], np.float64)
                )
                keep = _kept_indices(boxes)
                merged = [merged[i] for i in keep]
            merged.sort(key=lambda m: -m[2])
            for members, area, score, bbox in merged:
                geometry = shapely.union_all(shapely.from_wkb([g for i in members for g in pieces.geoms[i]]))
                geometry = shapely.make_valid(geometry) if not geometry.is_valid else geometry
                geometry = _to_map(geometry, self.transform)
                result.append(
                    Instance(
                        id=len(result) + 1,
                        prompt=prompt,
                        score=float(score),
                        area_px=int(area),
                        bbox_px=bbox,
                        geometry=geometry,
                        obb=geometry.minimum_rotated_rectangle,
                    )
                )
        return result


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
