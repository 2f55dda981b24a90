"""WISE's losses (Laradji et al., CVPR 2019, seeds/002 §3; extensions.md §4.2): instance segmentation from one
click per object. Pure functions over one image's tensors; the 2D model's WISE option wires them.

**L-Net** (LC-FCN's localisation losses, which WISE reuses): ``logits`` (C + 1, H, W) with background last,
softmax over classes, clicks as (row, col, class) on the same grid:
    L_I  image level: BCE of each class's maximum probability against its presence (background always present)
    L_P  point level: cross-entropy at the clicks
    L_F  false positives: every blob (4-connected component of one class in the argmax) without a click of
         its class is pushed to background
    L_S  split: a blob with n >= 2 clicks is cut by a watershed seeded at its clicks on the class
         probability; the cut's pixels are pushed to background, weighted by n - 1
Blobs and the watershed (a priority flood, ``flood``: scipy's ``watershed_ift`` does not split a plateau between
its markers) are computed from detached probabilities, outside the autograd graph.

**E-Net**: embeddings E (d, H, W), similarity S(i, j) = exp(-||E_i - E_j||^2 / (2d)), and over pairs P
    L_E = -mean_{(i,j) in P} [ 1[same] log S + 1[different] log(1 - S) ],  S clamped to [1e-6, 1 - 1e-6]
(a mean instead of the paper's sum: the pair count varies with the objects per image). Pairs: each click with
k random pixels of every object's pseudo mask and of the background, k = the number of objects
(``wise_pairs``).
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

EPS = 1e-6


def _blobs(mask: np.ndarray) -> tuple[np.ndarray, int]:
    return ndimage.label(mask)  # 4-connected


def flood(relief: np.ndarray, region: np.ndarray, seeds: np.ndarray) -> np.ndarray:
    """Marker-based watershed by priority flooding (Meyer), 4-connected, inside ``region`` (H, W) bool from
    ``seeds`` ((n, 2) row, col): (H, W) int basin labels 1..n (0 outside). Ties go first-come, so on a
    plateau the basins meet midway."""
    import heapq

    H, W = region.shape
    labels = np.zeros((H, W), np.int32)
    heap: list = []
    count = 0
    for j, (r, c) in enumerate(seeds):
        heapq.heappush(heap, (relief[r, c], count, int(r), int(c), j + 1))
        count += 1
    while heap:
        _, _, r, c, lab = heapq.heappop(heap)
        if labels[r, c]:
            continue
        labels[r, c] = lab
        for rr, cc in ((r - 1, c), (r + 1, c), (r, c - 1), (r, c + 1)):
            if 0 <= rr < H and 0 <= cc < W and region[rr, cc] and not labels[rr, cc]:
                heapq.heappush(heap, (relief[rr, cc], count, rr, cc, lab))
                count += 1
    return labels


def split_boundaries(prob: np.ndarray, blob: np.ndarray, seeds: np.ndarray) -> np.ndarray:
    """The pixels of ``blob`` (H, W) bool on the watershed lines between its ``seeds`` ((n, 2) row, col): the
    flooding (``flood``) runs on ``prob`` (H, W) inverted (high probability = basin), a pixel is on a line
    when a 4-neighbour lies in another basin. (H, W) bool."""
    relief = np.round((1.0 - np.clip(prob, 0, 1)) * 255).astype(np.int64)
    basins = flood(relief, blob, seeds)
    edge = np.zeros(blob.shape, bool)
    diff_v = (basins[1:] != basins[:-1]) & (basins[1:] > 0) & (basins[:-1] > 0)
    diff_h = (basins[:, 1:] != basins[:, :-1]) & (basins[:, 1:] > 0) & (basins[:, :-1] > 0)
    edge[1:] |= diff_v
    edge[:, 1:] |= diff_h
    return edge & blob


def lnet_losses(logits: torch.Tensor, clicks: np.ndarray) -> dict[str, torch.Tensor]:
    """LC-FCN's four terms for one image. ``logits`` (C + 1, H, W), background last; ``clicks`` (P, 3) int
    (row, col, class). Returns {"image", "point", "false_positive", "split"}."""
    C1, H, W = logits.shape
    bg = C1 - 1
    logp = F.log_softmax(logits.float(), dim=0)
    prob = logp.exp()
    clicks = np.asarray(clicks, np.int64).reshape(-1, 3)
    present = torch.zeros(C1, device=logits.device)
    present[bg] = 1.0
    if len(clicks):
        present[torch.as_tensor(clicks[:, 2], device=logits.device)] = 1.0
    peak = prob.flatten(1).max(1).values.clamp(EPS, 1 - EPS)
    out = {"image": F.binary_cross_entropy(peak, present)}
    zero = logits.sum() * 0.0
    if len(clicks):
        r, c, k = (torch.as_tensor(clicks[:, i], device=logits.device) for i in range(3))
        out["point"] = -logp[k, r, c].mean()
    else:
        out["point"] = zero
    p_np = prob.detach().cpu().numpy()
    arg = p_np.argmax(0)
    to_bg = np.zeros((H, W), np.float32)  # per pixel: how strongly it is pushed to background
    fp = np.zeros((H, W), bool)
    for cls in range(bg):
        labels, n = _blobs(arg == cls)
        mine = clicks[clicks[:, 2] == cls]
        hit = labels[mine[:, 0], mine[:, 1]] if len(mine) else np.zeros(0, np.int64)
        counts = np.bincount(hit, minlength=n + 1)
        for b in range(1, n + 1):
            if counts[b] == 0:
                fp |= labels == b
            elif counts[b] >= 2:
                seeds = mine[hit == b][:, :2]
                to_bg[split_boundaries(p_np[cls], labels == b, seeds)] += counts[b] - 1
    bg_logp = logp[bg]
    out["false_positive"] = -bg_logp[torch.as_tensor(fp, device=logits.device)].sum() / max(fp.sum(), 1) \
        if fp.any() else zero
    w = torch.as_tensor(to_bg, device=logits.device)
    out["split"] = -(bg_logp * w).sum() / max(float((to_bg > 0).sum()), 1.0) if (to_bg > 0).any() else zero
    return out


def wise_pairs(clicks: np.ndarray, object_masks: np.ndarray, background: np.ndarray,
               rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """WISE's pairs for one image: click n (``clicks`` (K, 2) row, col, one per object, object n) with k = K
    random pixels of every object's pseudo mask (``object_masks`` (K, H, W) bool) and k of the ``background``
    (H, W) bool. Returns flat pixel indices (a, b) and ``same`` (M,) bool (b in object a's mask). A mask with
    no pixel contributes no pair."""
    K = len(clicks)
    W = background.shape[1]
    pools = [np.flatnonzero(m) for m in object_masks] + [np.flatnonzero(background)]
    a, b, same = [], [], []
    for n in range(K):
        src = clicks[n, 0] * W + clicks[n, 1]
        for j, pool in enumerate(pools):
            if not len(pool):
                continue
            pick = pool[rng.integers(len(pool), size=K)]
            a.append(np.full(K, src)), b.append(pick), same.append(np.full(K, j == n))
    if not a:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, bool)
    return np.concatenate(a), np.concatenate(b), np.concatenate(same)


def enet_loss(embedding: torch.Tensor, a: np.ndarray, b: np.ndarray, same: np.ndarray) -> torch.Tensor:
    """L_E over pairs of flat pixel indices of ``embedding`` (d, H, W)."""
    d = embedding.shape[0]
    if len(a) == 0:
        return embedding.sum() * 0.0
    e = embedding.flatten(1).float()
    ia, ib = (torch.as_tensor(x, device=e.device) for x in (a, b))
    dist2 = (e[:, ia] - e[:, ib]).pow(2).sum(0)
    s = torch.exp(-dist2 / (2 * d)).clamp(EPS, 1 - EPS)
    y = torch.as_tensor(same, device=e.device)
    return -torch.where(y, torch.log(s), torch.log1p(-s)).mean()


def hull_mask(uv: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """A proposal from scattered image points (e.g. the LiDAR points of one lifted 3D instance, projected):
    the pixels (centres) inside the convex hull of ``uv`` (P, 2) continuous (u, v) pixel coordinates, in an
    image of ``shape`` (H, W). Fewer than 3 points, or collinear ones, give just their pixels. (H, W) bool."""
    H, W = shape
    out = np.zeros((H, W), bool)
    uv = np.asarray(uv, np.float64).reshape(-1, 2)
    uv = uv[np.isfinite(uv).all(1)]
    if not len(uv):
        return out
    cols = np.clip(uv[:, 0].astype(np.int64), 0, W - 1)
    rows = np.clip(uv[:, 1].astype(np.int64), 0, H - 1)
    out[rows, cols] = True
    if len(np.unique(uv, axis=0)) < 3:
        return out
    from scipy.spatial import ConvexHull, QhullError

    try:
        eq = ConvexHull(uv).equations  # (F, 3): n . x + c <= 0 inside
    except QhullError:  # collinear
        return out
    r0, r1, c0, c1 = rows.min(), rows.max() + 1, cols.min(), cols.max() + 1
    yy, xx = np.mgrid[r0:r1, c0:c1].astype(np.float64) + 0.5
    inside = (eq[:, 0, None, None] * xx + eq[:, 1, None, None] * yy + eq[:, 2, None, None] <= 1e-9).all(0)
    out[r0:r1, c0:c1] |= inside
    return out
