"""Point-to-2D-box association ("3D frustums bounded by 2D boxes", MWSIS Sec. 3.3, first paragraph).

Like the authors (spec ``method.md`` §1) there is no geometric frustum: membership uses the per-point
camera projections that come with the LiDAR sweep (Waymo ``camera_projections``, up to two per point,
``Points.cam_id`` / ``Points.cam_uv``). Point ``n`` is in box ``k`` when one of its projections ``s`` is
on box ``k``'s camera and ``x1 <= u_s < x2 and y1 <= v_s < y2`` (pixel ``i`` spans ``[i, i+1)``), with the
box first clipped to its image ``[0, w] x [0, h]``.

Differences from the authors' code, all deliberate:

* **Bug fixed:** for the second projection the authors compare ``u1 < y2`` (column 13 instead of 15,
  ``method.md`` §1, bug list item 1). We compare ``v1 < y2``.
* The authors keep at most two claimants per point (slots A/B, and the numpy variants only one). We
  record **every** box that claims a point, as (point, box) pairs sorted by (point, box) - a CSR layout
  over points. Downstream code decides how to resolve overlaps.
* One numba pass over the points; boxes are bucketed by (camera, 1/128-image-width column bin), so a
  projection tests only the few boxes near its column instead of every box of the frame.
* Projections are used in original-image pixels; the authors' resize/flip bookkeeping (and its
  second-projection flip bug, item 2) does not exist here because nothing is resized.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numba import njit

__all__ = ["Claims", "associate", "clip_boxes"]


@dataclass(frozen=True)
class Claims:
    """All (point, box) memberships of a frame; ``point`` ascending, then ``box`` ascending."""

    point: np.ndarray  # (P,) int64 point index
    box: np.ndarray  # (P,) int32 box index
    n_points: int  # N, the number of points association ran on
    n_boxes: int  # K

    def __len__(self) -> int:
        return int(self.point.shape[0])

    @property
    def counts(self) -> np.ndarray:
        """(N,) int64: how many boxes claim each point."""
        return np.bincount(self.point, minlength=self.n_points).astype(np.int64)

    @property
    def box_counts(self) -> np.ndarray:
        """(K,) int64: how many points each box claims."""
        return np.bincount(self.box, minlength=self.n_boxes).astype(np.int64)

    @property
    def indptr(self) -> np.ndarray:
        """(N+1,) int64 CSR offsets: the boxes of point n are ``box[indptr[n]:indptr[n+1]]``."""
        out = np.zeros(self.n_points + 1, np.int64)
        np.cumsum(self.counts, out=out[1:])
        return out

    def in_any_box(self, n: int | None = None) -> np.ndarray:
        """(n,) bool: point claimed by at least one box (``n`` defaults to ``n_points``)."""
        out = np.zeros(self.n_points if n is None else n, bool)
        out[self.point] = True
        return out

    def by_box(self) -> tuple[np.ndarray, np.ndarray]:
        """Group the pairs by box: ``(order, box_ptr)``; pairs of box k are ``order[box_ptr[k]:box_ptr[k+1]]``.

        The sort is stable, so within a box the points stay in ascending index order.
        """
        order = np.argsort(self.box, kind="stable")
        ptr = np.zeros(self.n_boxes + 1, np.int64)
        np.cumsum(self.box_counts, out=ptr[1:])
        return order, ptr

    def select(self, pair_mask: np.ndarray) -> "Claims":
        """Keep the pairs where ``pair_mask`` (P,) is true (order is preserved)."""
        return Claims(self.point[pair_mask], self.box[pair_mask], self.n_points, self.n_boxes)

    @staticmethod
    def empty(n_points: int = 0, n_boxes: int = 0) -> "Claims":
        return Claims(np.zeros(0, np.int64), np.zeros(0, np.int32), n_points, n_boxes)


def clip_boxes(box_xyxy: np.ndarray, image_wh: np.ndarray) -> np.ndarray:
    """(K, 4) float64 boxes clipped to ``[0, w] x [0, h]`` of their own image. Inverted boxes stay empty."""
    b = np.asarray(box_xyxy, np.float64).reshape(-1, 4)
    wh = np.asarray(image_wh, np.float64).reshape(-1, 2)
    if wh.shape[0] != b.shape[0]:
        raise ValueError(f"image_wh has {wh.shape[0]} rows for {b.shape[0]} boxes")
    out = np.empty_like(b)
    out[:, 0] = np.clip(b[:, 0], 0.0, wh[:, 0])
    out[:, 2] = np.clip(b[:, 2], 0.0, wh[:, 0])
    out[:, 1] = np.clip(b[:, 1], 0.0, wh[:, 1])
    out[:, 3] = np.clip(b[:, 3], 0.0, wh[:, 1])
    return out


@njit(cache=True, inline="always")
def _inside(u, v, b, k):
    # NaN boxes or projections compare false everywhere, so they never claim anything.
    return b[k, 0] <= u and u < b[k, 2] and b[k, 1] <= v and v < b[k, 3]


@njit(cache=True)
def _associate_kernel(cam_id, uv, valid, n_cam, n_bins, bin_w, ptr, lists, boxes, out_point, out_box):
    """One pass over points writing the pairs in order; returns their number. Pairs beyond the buffers'
    capacity are counted but not written (the caller then retries with buffers of the returned size).

    Candidate boxes of a projection on camera c at column u: ``lists[ptr[j]:ptr[j+1]]`` with
    ``j = c * n_bins + bin(u)``, ascending box indices. Merging the lists of the two projections (with
    duplicates when both are on one camera) yields each point's pairs already sorted by box.
    """
    cap = out_point.shape[0]
    w = 0
    for n in range(cam_id.shape[0]):
        if not valid[n]:
            continue
        a = a_end = b = b_end = 0
        u0 = np.float64(uv[n, 0, 0])
        v0 = np.float64(uv[n, 0, 1])
        u1 = np.float64(uv[n, 1, 0])
        v1 = np.float64(uv[n, 1, 1])
        c = np.int64(cam_id[n, 0])
        if 0 < c < n_cam and u0 == u0:  # (u0 == u0: not NaN)
            j = c * n_bins + min(max(np.int64(u0 / bin_w), 0), n_bins - 1)
            a, a_end = ptr[j], ptr[j + 1]
        c = np.int64(cam_id[n, 1])
        if 0 < c < n_cam and u1 == u1:
            j = c * n_bins + min(max(np.int64(u1 / bin_w), 0), n_bins - 1)
            b, b_end = ptr[j], ptr[j + 1]
        while a < a_end or b < b_end:
            if b >= b_end or (a < a_end and lists[a] < lists[b]):
                k = lists[a]
                hit = _inside(u0, v0, boxes, k)
                a += 1
            elif a >= a_end or lists[b] < lists[a]:
                k = lists[b]
                hit = _inside(u1, v1, boxes, k)
                b += 1
            else:  # both projections on one camera, same box: claim once
                k = lists[a]
                hit = _inside(u0, v0, boxes, k) or _inside(u1, v1, boxes, k)
                a += 1
                b += 1
            if hit:
                if w < cap:
                    out_point[w] = n
                    out_box[w] = k
                w += 1
    return w


def _bin_index(box_camera: np.ndarray, boxes: np.ndarray, n_cam: int, n_bins: int, bin_w: float):
    """CSR (ptr, lists) of boxes per (camera, column bin); a box is listed in every bin it overlaps plus
    one bin on each side, so float rounding of ``u / bin_w`` can never lose a pair."""
    ok = (box_camera > 0) & (box_camera < n_cam) & (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
    idx = np.flatnonzero(ok)
    b0 = np.clip(np.floor(boxes[idx, 0] / bin_w).astype(np.int64) - 1, 0, n_bins - 1)
    b1 = np.clip(np.floor(boxes[idx, 2] / bin_w).astype(np.int64) + 1, 0, n_bins - 1)
    span = b1 - b0 + 1
    box_of = np.repeat(idx, span)  # ascending box order, kept by the stable sort below
    start = np.repeat(np.cumsum(span) - span, span)
    bins = np.repeat(b0, span) + (np.arange(span.sum()) - start)
    key = box_camera[box_of] * n_bins + bins
    order = np.argsort(key, kind="stable")
    ptr = np.zeros(n_cam * n_bins + 1, np.int64)
    np.cumsum(np.bincount(key, minlength=n_cam * n_bins), out=ptr[1:])
    return ptr, box_of[order].astype(np.int64)


def associate(cam_id: np.ndarray, cam_uv: np.ndarray, box_camera: np.ndarray, box_xyxy: np.ndarray,
              image_wh: np.ndarray, valid: np.ndarray | None = None) -> Claims:
    """Every (point, box) pair where one of the point's projections falls in the (clipped) box.

    cam_id: (N, 2) int camera id of each projection slot, 0 = none. cam_uv: (N, 2, 2) [slot, (u, v)] pixels.
    box_camera: (K,) camera id per box; box_xyxy: (K, 4) pixels; image_wh: (K, 2) width, height of each box's
    image. valid: optional (N,) bool, points where it is false claim nothing (e.g. not TOP lidar).
    """
    cam_id = np.ascontiguousarray(cam_id).reshape(-1, 2)
    n = cam_id.shape[0]
    uv = np.ascontiguousarray(cam_uv, dtype=np.float32).reshape(n, 2, 2)
    box_camera = np.asarray(box_camera).reshape(-1).astype(np.int64)
    k = box_camera.shape[0]
    boxes = clip_boxes(box_xyxy, image_wh)
    if boxes.shape[0] != k:
        raise ValueError(f"{boxes.shape[0]} boxes but {k} box cameras")
    valid = np.ones(n, bool) if valid is None else np.ascontiguousarray(valid, dtype=bool).reshape(n)
    if n == 0 or k == 0:
        return Claims.empty(n, k)
    # Boxes by (camera, column bin): each projection then tests only the few boxes near its column.
    n_cam = int(max(box_camera.max(), cam_id.max(), 0)) + 1  # camera ids are small (Waymo: 1..5)
    n_bins = 128
    bin_w = max(float(np.asarray(image_wh, np.float64).reshape(-1, 2)[:, 0].max()), 1.0) / n_bins
    ptr, lists = _bin_index(box_camera, boxes, n_cam, n_bins, bin_w)
    args = (cam_id, uv, valid, n_cam, n_bins, bin_w, ptr, lists, boxes)
    cap = 2 * n + 1024  # typical frames have far fewer pairs than points; else one retry at the exact size
    out_point, out_box = np.empty(cap, np.int64), np.empty(cap, np.int32)
    total = _associate_kernel(*args, out_point, out_box)
    if total > cap:
        out_point, out_box = np.empty(total, np.int64), np.empty(total, np.int32)
        _associate_kernel(*args, out_point, out_box)
    out_point, out_box = out_point[:total].copy(), out_box[:total].copy()
    return Claims(out_point, out_box, n, k)
