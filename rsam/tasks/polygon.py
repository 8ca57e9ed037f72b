"""Polygon intersection-over-union for rotated boxes, as the DOTA devkit's ``polyiou`` computes it.

``polyiou.iou_poly`` decomposes each polygon into a triangle fan from its first vertex and adds up the signed areas of
all triangle-triangle intersections, so it is exact for any simple polygon (convex or not, either orientation);
``IoU = inter / (|area(P)| + |area(Q)| - inter)``. Triangle intersections are computed here by convex clipping
(Sutherland-Hodgman) in float64.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

Point = tuple[float, float]


def _cross(o: Point, a: Point, b: Point) -> float:
    return (a[0] - o[0]) * (b[1] - o[1]) - (a[1] - o[1]) * (b[0] - o[0])


def signed_area(points: Sequence[Point]) -> float:
    """Shoelace area, positive for counter-clockwise vertices (y up)."""
    total = 0.0
    for i in range(len(points)):
        x1, y1 = points[i - 1]
        x2, y2 = points[i]
        total += x1 * y2 - x2 * y1
    return total / 2.0


def _line_intersection(p: Point, q: Point, a: Point, b: Point) -> Point:
    d1 = _cross(a, b, p)
    d2 = _cross(a, b, q)
    t = d1 / (d1 - d2)
    return p[0] + t * (q[0] - p[0]), p[1] + t * (q[1] - p[1])


def convex_intersection_area(subject: Sequence[Point], clip: Sequence[Point]) -> float:
    """Area of the intersection of two convex, counter-clockwise polygons (Sutherland-Hodgman)."""
    output = list(subject)
    for i in range(len(clip)):
        a, b = clip[i], clip[(i + 1) % len(clip)]
        candidates, output = output, []
        for j in range(len(candidates)):
            prev, cur = candidates[j - 1], candidates[j]
            cur_in = _cross(a, b, cur) >= 0.0
            prev_in = _cross(a, b, prev) >= 0.0
            if cur_in:
                if not prev_in:
                    output.append(_line_intersection(prev, cur, a, b))
                output.append(cur)
            elif prev_in:
                output.append(_line_intersection(prev, cur, a, b))
        if len(output) < 3:
            return 0.0
    return abs(signed_area(output))


def _fan(points: Sequence[Point]) -> list[tuple[float, list[Point]]]:
    """Triangle fan from vertex 0: ``(sign, ccw_triangle)`` per non-degenerate triangle."""
    triangles = []
    for i in range(1, len(points) - 1):
        tri = [points[0], points[i], points[i + 1]]
        area = signed_area(tri)
        if area == 0.0:
            continue
        triangles.append((1.0, tri) if area > 0 else (-1.0, tri[::-1]))
    return triangles


def polygon_intersection_area(p: Sequence[Point], q: Sequence[Point]) -> float:
    """Intersection area of two simple polygons (any orientation), exact for non-convex ones."""
    total = 0.0
    for sign_p, tri_p in _fan(p):
        for sign_q, tri_q in _fan(q):
            total += sign_p * sign_q * convex_intersection_area(tri_p, tri_q)
    return abs(total)


def as_points(coords: Sequence[float]) -> list[Point]:
    values = [float(v) for v in coords]
    if len(values) < 6 or len(values) % 2:
        raise ValueError(f"a polygon needs an even number (>= 6) of coordinates, got {len(values)}")
    return [(values[i], values[i + 1]) for i in range(0, len(values), 2)]


def polygon_iou(p_coords: Sequence[float], q_coords: Sequence[float]) -> float:
    """IoU of two polygons given as flat ``x1 y1 x2 y2 ...`` coordinates (DOTA ``polyiou.iou_poly``)."""
    p, q = as_points(p_coords), as_points(q_coords)
    inter = polygon_intersection_area(p, q)
    union = abs(signed_area(p)) + abs(signed_area(q)) - inter
    return inter / union if union > 0 else 0.0


def hbb_extents(coords: np.ndarray) -> np.ndarray:
    """``(N, 2k)`` polygons -> ``(N, 4)`` axis-aligned extents ``x1 y1 x2 y2``."""
    coords = np.asarray(coords, dtype=np.float64).reshape(len(coords), -1)
    xs, ys = coords[:, 0::2], coords[:, 1::2]
    return np.stack([xs.min(1), ys.min(1), xs.max(1), ys.max(1)], axis=1)
