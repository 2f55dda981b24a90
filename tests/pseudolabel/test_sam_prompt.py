"""SAM box prompts (MWSIS SAM baseline): tiny random SAM, batched box prompting, RLE, lifting to points."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from pycocotools import mask as mask_utils

from mwsis.pseudolabel import sam_prompt as sp
from mwsis.pseudolabel.sam_prompt import (
    PointClaims, build_sam, infer_model_type, lift_masks_to_points, make_predictor, masks_to_rle,
    rle_to_masks, segment_boxes, segment_prompts, tiny_sam)

H, W = 96, 128


@pytest.fixture(scope="module")
def image():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 255, (H, W, 3), dtype=np.uint8)
    img[20:60, 30:80] = (200, 30, 30)
    return img


class SpyPredictor:
    """Wraps a SamPredictor and counts the calls segment_boxes makes."""

    def __init__(self, predictor):
        self._p = predictor
        self.set_image_calls = 0
        self.predict_calls = 0
        self.boxes_seen: list[torch.Tensor] = []

    def set_image(self, image):
        self.set_image_calls += 1
        return self._p.set_image(image)

    def predict_torch(self, *args, **kwargs):
        self.predict_calls += 1
        assert kwargs.get("multimask_output") is False
        self.boxes_seen.append(None if kwargs["boxes"] is None else kwargs["boxes"].clone())
        self.points_seen = getattr(self, "points_seen", []) + [kwargs.get("point_coords")]
        return self._p.predict_torch(*args, **kwargs)

    def __getattr__(self, name):
        return getattr(self._p, name)


def spy(seed=0):
    return SpyPredictor(make_predictor(tiny_sam(seed=seed, image_size=128)))


# ------------------------------------------------------------------------ tiny SAM, prompting


def test_tiny_sam_is_small_and_predictor_compatible():
    sam = tiny_sam(seed=0, image_size=128)
    assert sam.image_encoder.img_size == 128
    assert sum(p.numel() for p in sam.parameters()) < 500_000
    assert not sam.training
    assert make_predictor(sam).transform.target_length == 128
    with pytest.raises(ValueError):
        tiny_sam(image_size=100)


def test_tiny_sam_leaves_global_rng_alone():
    torch.manual_seed(123)
    a = torch.rand(3)
    torch.manual_seed(123)
    tiny_sam(seed=5)
    assert torch.equal(torch.rand(3), a)


def test_segment_boxes_shapes_and_single_embedding(image):
    p = spy()
    boxes = np.array([[10, 10, 50, 60], [30, 20, 80, 60], [60, 5, 127, 95]], np.float32)
    masks, scores = segment_boxes(p, image, boxes)
    assert masks.shape == (3, H, W) and masks.dtype == bool
    assert scores.shape == (3,) and scores.dtype == np.float32 and np.isfinite(scores).all()
    assert p.set_image_calls == 1
    assert p.predict_calls == 1  # all boxes in one batch
    assert p.boxes_seen[0].shape == (3, 4)


def test_segment_boxes_chunks_but_embeds_once(image):
    p = spy()
    rng = np.random.default_rng(3)
    xy = rng.uniform(0, 80, (10, 2))
    boxes = np.concatenate([xy, xy + rng.uniform(5, 40, (10, 2))], axis=1).astype(np.float32)
    masks, scores = segment_boxes(p, image, boxes, batch_size=4)
    assert p.set_image_calls == 1 and p.predict_calls == 3
    ref_masks, ref_scores = segment_boxes(make_predictor(tiny_sam(seed=0)), image, boxes)
    np.testing.assert_array_equal(masks, ref_masks)
    np.testing.assert_allclose(scores, ref_scores, rtol=1e-5, atol=1e-6)


def test_segment_boxes_empty_does_not_touch_model(image):
    p = spy()
    masks, scores = segment_boxes(p, image, np.zeros((0, 4), np.float32))
    assert masks.shape == (0, H, W) and masks.dtype == bool
    assert scores.shape == (0,) and scores.dtype == np.float32
    assert p.set_image_calls == 0 and p.predict_calls == 0


def test_segment_boxes_clips_to_image(image):
    p = spy()
    outside = np.array([[-20, -10, 50, 40], [100, 70, 400, 300]], np.float32)
    clipped = np.array([[0, 0, 50, 40], [100, 70, W, H]], np.float32)
    m_out, s_out = segment_boxes(p, image, outside)
    # The box prompts reaching the model lie inside the resized image (long side 128 -> scale 1).
    seen = p.boxes_seen[0]
    assert seen.min() >= 0 and seen[:, [0, 2]].max() <= W and seen[:, [1, 3]].max() <= H
    m_clip, s_clip = segment_boxes(make_predictor(tiny_sam(seed=0)), image, clipped)
    np.testing.assert_array_equal(m_out, m_clip)
    np.testing.assert_allclose(s_out, s_clip, rtol=1e-5, atol=1e-6)


def test_segment_boxes_fully_outside_box_gets_empty_mask(image):
    p = spy()
    boxes = np.array([[10, 10, 50, 60], [200, 200, 300, 300]], np.float32)
    masks, scores = segment_boxes(p, image, boxes)
    assert p.boxes_seen[0].shape == (1, 4)  # only the live box reached the model
    assert not masks[1].any() and scores[1] == 0
    ref, _ = segment_boxes(make_predictor(tiny_sam(seed=0)), image, boxes[:1])
    np.testing.assert_array_equal(masks[0], ref[0])


def test_segment_boxes_deterministic_per_seed(image):
    boxes = np.array([[10, 10, 50, 60], [60, 5, 127, 95]], np.float32)
    a = segment_boxes(make_predictor(tiny_sam(seed=7)), image, boxes)
    b = segment_boxes(make_predictor(tiny_sam(seed=7)), image, boxes)
    c = segment_boxes(make_predictor(tiny_sam(seed=8)), image, boxes)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert not (np.array_equal(a[0], c[0]) and np.array_equal(a[1], c[1]))


def test_segment_boxes_rejects_bad_image():
    with pytest.raises(ValueError):
        segment_boxes(spy(), np.zeros((H, W), np.uint8), np.array([[0, 0, 5, 5]], np.float32))


# ------------------------------------------------------------------------ RLE


def test_rle_round_trip():
    rng = np.random.default_rng(1)
    masks = rng.random((4, 37, 53)) < 0.3
    masks[2] = False
    rles = masks_to_rle(masks)
    assert len(rles) == 4
    for m, r in zip(masks, rles):
        assert r["size"] == [37, 53] and isinstance(r["counts"], bytes)
        np.testing.assert_array_equal(mask_utils.decode(r).astype(bool), m)
    np.testing.assert_array_equal(rle_to_masks(rles), masks)
    assert masks_to_rle(np.zeros((0, 5, 6), bool)) == []


# ------------------------------------------------------------------------ lifting


def _points():
    """Hand-made projections; masks are 10 (h) x 12 (w) on cameras 1 and 2."""
    cam_id = np.array([
        [1, 0],  # 0: cam 1 at (u=3.5, v=2.9) -> pixel (2, 3): inside mask 0
        [1, 0],  # 1: cam 1 at (u=5.0, v=2.0) -> pixel (2, 5): outside mask 0 (cols 2..4)
        [2, 1],  # 2: slot 0 on cam 2 (not in mask 1), slot 1 on cam 1 pixel (4, 4): inside mask 0
        [0, 0],  # 3: no projection, uv would hit masks if it were read
        [2, 0],  # 4: cam 2 at pixel (8, 10): inside mask 1
        [1, 0],  # 5: cam 1 at (u=4.999, v=5.999) -> pixel (5, 4): inside mask 0 (floor)
        [1, 0],  # 6: cam 1 at (u=-0.5, v=2) -> column -1: out of image
        [1, 1],  # 7: both slots on cam 1, both inside mask 0 -> claimed once
        [3, 0],  # 8: cam 3 has no masks
        [1, 0],  # 9: cam 1 at u=12.5 -> column 12 >= width: out of image
    ], np.int8)
    uv = np.full((10, 2, 2), -1, np.float32)
    uv[0, 0] = (3.5, 2.9)
    uv[1, 0] = (5.0, 2.0)
    uv[2, 0] = (0.5, 0.5)
    uv[2, 1] = (4.2, 4.7)
    uv[3] = (3.5, 3.5)
    uv[4, 0] = (10.1, 8.3)
    uv[5, 0] = (4.999, 5.999)
    uv[6, 0] = (-0.5, 2.0)
    uv[7, 0] = (2.0, 2.0)
    uv[7, 1] = (3.0, 3.0)
    uv[8, 0] = (3.5, 3.5)
    uv[9, 0] = (12.5, 3.0)
    m = np.zeros((2, 10, 12), bool)
    m[0, 2:6, 2:5] = True  # camera 1: rows 2..5, cols 2..4
    m[1, 8, 10] = True  # camera 2: a single pixel
    return cam_id, uv, np.array([1, 2], np.int8), m


@pytest.mark.parametrize("as_rle", [False, True])
def test_lift_masks_to_points(as_rle):
    cam_id, uv, mcam, masks = _points()
    src = masks_to_rle(masks) if as_rle else masks
    claims = lift_masks_to_points(cam_id, uv, mcam, src, (12, 10))
    assert isinstance(claims, PointClaims)
    point, box = claims.point, claims.box
    assert point.dtype == np.int64 and box.dtype == np.int32
    assert (claims.n_points, claims.n_boxes) == (10, 2)
    pairs = list(zip(point.tolist(), box.tolist()))
    assert set(pairs) == {(0, 0), (2, 0), (5, 0), (7, 0), (4, 1)}
    assert len(pairs) == len(set(pairs))  # point 7 (both slots inside) counted once
    assert pairs == sorted(pairs)  # point, then box (frustum.Claims layout)


def test_lift_second_slot_only():
    cam_id, uv, mcam, masks = _points()
    # Swap point 0's projection into slot 1: it must still be claimed.
    cam_id[0] = (0, 1)
    uv[0, 1], uv[0, 0] = uv[0, 0].copy(), (-1, -1)
    point, box, _, _ = lift_masks_to_points(cam_id, uv, mcam, masks, (12, 10))
    assert (0, 0) in set(zip(point.tolist(), box.tolist()))


def test_lift_unprojected_points_never_claimed():
    cam_id, uv, mcam, masks = _points()
    full = np.ones_like(masks)
    cam_id[:] = 0
    point, box, _, _ = lift_masks_to_points(cam_id, uv, mcam, full, (12, 10))
    assert point.size == 0 and box.size == 0
    cam_id, uv, mcam, masks = _points()
    point = lift_masks_to_points(cam_id, uv, mcam, np.ones_like(masks), (12, 10)).point
    assert 3 not in point.tolist() and 8 not in point.tolist()
    assert 6 not in point.tolist() and 9 not in point.tolist()
    uv[0, 0] = (np.nan, 3.0)
    uv[5, 0] = (3.0, 1e20)
    point = lift_masks_to_points(cam_id, uv, mcam, np.ones_like(masks), (12, 10)).point
    assert 0 not in point.tolist() and 5 not in point.tolist() and 1 in point.tolist()


def test_lift_per_camera_sizes_and_size_check():
    cam_id, uv, mcam, masks = _points()
    rles = masks_to_rle(masks)
    expect = {(0, 0), (2, 0), (5, 0), (7, 0), (4, 1)}
    for wh in ({1: (12, 10), 2: (12, 10)}, np.array([[12, 10], [12, 10]]), None):
        c = lift_masks_to_points(cam_id, uv, mcam, rles, wh)
        assert set(zip(c.point.tolist(), c.box.tolist())) == expect
    with pytest.raises(ValueError):
        lift_masks_to_points(cam_id, uv, mcam, masks, (13, 10))
    empty = lift_masks_to_points(cam_id, uv, np.zeros(0, np.int8), np.zeros((0, 10, 12), bool), (12, 10))
    assert empty.point.size == 0 and empty.box.dtype == np.int32


def test_lift_matches_bruteforce_random():
    rng = np.random.default_rng(5)
    n, k, h, w = 3000, 7, 40, 60
    cam_id = rng.integers(0, 4, (n, 2)).astype(np.int8)
    uv = np.stack([rng.uniform(-3, w + 3, (n, 2)), rng.uniform(-3, h + 3, (n, 2))], -1).astype(np.float32)
    uv[cam_id == 0] = -1
    mcam = rng.integers(1, 4, k).astype(np.int8)
    masks = rng.random((k, h, w)) < 0.2
    point, box, _, _ = lift_masks_to_points(cam_id, uv, mcam, masks, (w, h))
    expect = set()
    for i in range(n):
        for s in range(2):
            c = cam_id[i, s]
            col, row = int(np.floor(uv[i, s, 0])), int(np.floor(uv[i, s, 1]))
            if c == 0 or not (0 <= col < w and 0 <= row < h):
                continue
            for j in range(k):
                if mcam[j] == c and masks[j, row, col]:
                    expect.add((i, j))
    assert set(zip(point.tolist(), box.tolist())) == expect and len(point) == len(expect)


def test_lift_valid_mask():
    cam_id, uv, mcam, masks = _points()
    valid = np.ones(10, bool)
    valid[[0, 7]] = False
    c = lift_masks_to_points(cam_id, uv, mcam, masks, (12, 10), valid=valid)
    assert set(zip(c.point.tolist(), c.box.tolist())) == {(2, 0), (5, 0), (4, 1)}


def test_lift_converts_to_frustum_claims():
    frustum = pytest.importorskip("mwsis.pseudolabel.frustum")
    cam_id, uv, mcam, masks = _points()
    masks = np.concatenate([masks, masks[:1]])  # a third mask on camera 1 overlaps mask 0
    mcam = np.array([1, 2, 1], np.int8)
    c = frustum.Claims(*lift_masks_to_points(cam_id, uv, mcam, masks, (12, 10)))
    assert c.n_points == 10 and c.n_boxes == 3
    np.testing.assert_array_equal(c.box_counts, [4, 1, 4])
    np.testing.assert_array_equal(c.indptr[1:] - c.indptr[:-1], c.counts)
    assert c.counts[0] == 2 and c.box[c.indptr[0]:c.indptr[1]].tolist() == [0, 2]


# ------------------------------------------------------------------------ build_sam


def test_build_sam_missing_file(tmp_path):
    p = tmp_path / "nope" / "sam_vit_h.pth"
    with pytest.raises(FileNotFoundError, match="sam_vit_h.pth"):
        build_sam(p)


def test_build_sam_garbage_file(tmp_path):
    p = tmp_path / "garbage.pth"
    p.write_bytes(b"this is not a torch checkpoint" * 10)
    with pytest.raises(ValueError, match="garbage.pth"):
        build_sam(p)
    q = tmp_path / "other.pth"
    torch.save({"weight": torch.zeros(2)}, q)
    with pytest.raises(ValueError, match="other.pth"):
        build_sam(q)


@pytest.mark.parametrize("dim,expected", [(1280, "vit_h"), (1024, "vit_l"), (768, "vit_b")])
def test_infer_model_type(dim, expected):
    sd = {"image_encoder.patch_embed.proj.weight": torch.zeros(dim, 3, 1, 1), "other": torch.zeros(1)}
    assert infer_model_type(sd) == expected
    with pytest.raises(ValueError):
        infer_model_type({"image_encoder.patch_embed.proj.weight": torch.zeros(500, 3, 1, 1)})


def test_build_sam_loads_checkpoint_and_infers_type(tmp_path, monkeypatch, image):
    """Full load path with a tiny model standing in for vit_b (a real vit_b is 375 MB)."""
    import segment_anything

    src = tiny_sam(seed=3)
    ckpt = tmp_path / "weights_named_vit_h.pth"  # the file name must not decide the type
    torch.save({"model": src.state_dict()}, ckpt)
    built = []

    def fake_vit_b(checkpoint=None):
        built.append("vit_b")
        return tiny_sam(seed=99)  # different random weights; loading must overwrite them

    monkeypatch.setitem(sp._EMBED_DIM_TO_TYPE, 32, "vit_b")
    monkeypatch.setitem(segment_anything.sam_model_registry, "vit_b", fake_vit_b)
    sam = build_sam(ckpt, device="cpu")
    assert built == ["vit_b"] and not sam.training
    for (ka, va), (kb, vb) in zip(src.state_dict().items(), sam.state_dict().items()):
        assert ka == kb and torch.equal(va, vb)
    boxes = np.array([[10, 10, 50, 60]], np.float32)
    a = segment_boxes(make_predictor(src), image, boxes)
    b = segment_boxes(make_predictor(sam), image, boxes)
    np.testing.assert_array_equal(a[0], b[0])
    with pytest.raises(ValueError, match="vit_h"):
        build_sam(ckpt, model_type="vit_h")
    with pytest.raises(ValueError):
        build_sam(ckpt, model_type="vit_x")


def test_click_prompts_alone_and_with_boxes(image):
    """Clicks prompt SAM alone or beside boxes: one batch per kind, one embedding, and each prompt's mask is
    the one the model gives for that prompt alone."""
    p = spy()
    nan = np.nan
    boxes = np.array([[10, 10, 50, 60], [nan] * 4, [30, 20, 80, 60], [nan] * 4], np.float32)
    points = np.array([[nan, nan], [40, 40], [50, 40], [500, 500]], np.float32)  # the last: outside, no box
    masks, scores = segment_prompts(p, image, boxes, points)
    assert p.set_image_calls == 1 and p.predict_calls == 3  # box, point, box + point
    assert scores[3] == 0 and not masks[3].any()
    ref = make_predictor(tiny_sam(seed=0, image_size=128))
    m_point, _ = segment_prompts(ref, image, None, points[1:2])
    m_both, _ = segment_prompts(ref, image, boxes[2:3], points[2:3])
    assert np.array_equal(masks[1], m_point[0]) and np.array_equal(masks[2], m_both[0])
    assert np.array_equal(segment_boxes(ref, image, boxes[:1])[0][0], masks[0])
    seen = [None if c is None else tuple(c.shape) for c in p.points_seen]
    assert seen == [None, (1, 1, 2), (1, 1, 2)]  # the clicks reach the model as (B, 1, 2) point prompts
    assert [b is None for b in p.boxes_seen] == [False, True, False]
