"""SIM's online weak copy-paste (seeds/004 Eq. 9-11): boxes, masks and LiDAR projections stay consistent
through resize, flip and padding, on a known image."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from mwsis.train2d.config import CopyPasteConfig
from mwsis.train2d.sim_copypaste import (BankedInstance, PasteBank, bank_entry, choose_instances, paste_batch,
                                         paste_instances)
from mwsis.train2d.config import Model2DConfig, SIMConfig
from mwsis.train2d.transforms import collate, prepare_image

MEAN, STD = (123.675, 116.28, 103.53), (58.395, 57.12, 57.375)


def _disc(r: int, colour=(20, 200, 40)) -> BankedInstance:
    yy, xx = np.mgrid[:2 * r, :2 * r]
    mask = torch.as_tensor((yy - r + 0.5) ** 2 + (xx - r + 0.5) ** 2 <= r * r)
    rgb = torch.tensor(colour, dtype=torch.uint8)[:, None, None].expand(3, 2 * r, 2 * r).clone()
    return BankedInstance(rgb, mask, cls=1, score=0.9)


def _sample(flip: bool):
    """A 100 x 150 grey image, one red car box, resized to short side 80 (x0.8) and flipped: 80 x 120 padded
    to 96 x 128. LiDAR points on a grid of the original image."""
    img = np.full((100, 150, 3), 128, np.uint8)
    img[30:70, 20:60] = (220, 30, 30)
    s = prepare_image(img, [[20, 30, 60, 70]], scale=(200, 80), flip=flip, pixel_mean=MEAN, pixel_std=STD)
    s["classes"] = torch.tensor([0])
    u, v = np.meshgrid(np.arange(0.5, 150, 1.0), np.arange(0.5, 100, 1.0))
    s["points_uv"] = torch.as_tensor(np.stack([u.ravel(), v.ravel()], 1), dtype=torch.float32)
    s["points_teacher_prob"] = torch.full((len(s["points_uv"]), 3), 0.5)
    s["gt_masks"] = [{"size": [100, 150], "counts": "x"}]
    return s


@pytest.mark.parametrize("flip", [False, True])
def test_paste_keeps_pixels_boxes_masks_and_points_consistent(flip):
    images, targets = collate([_sample(flip)])
    t = targets[0]
    assert images.shape[-2:] == (96, 128) and t["image_size"] == (80, 120)
    disc = _disc(6)
    image, out = paste_instances(images[0], t, [disc], np.random.default_rng(3), MEAN, STD)
    assert out["pasted"].tolist() == [False, True] and out["classes"].tolist() == [0, 1]
    x1, y1, x2, y2 = out["boxes"][1].tolist()
    assert (x2 - x1, y2 - y1) == (12.0, 12.0) and x2 <= 120 and y2 <= 80  # inside the unpadded image
    # the pasted pixels carry the instance's colours, in the normalised input and in image_rgb alike
    placed = torch.zeros(96, 128, dtype=torch.bool)
    placed[int(y1):int(y2), int(x1):int(x2)] = disc.mask
    rgb = image * torch.tensor(STD)[:, None, None] + torch.tensor(MEAN)[:, None, None]
    torch.testing.assert_close(rgb[:, placed], torch.tensor([20., 200, 40])[:, None].expand(3, int(placed.sum())),
                               atol=1e-3, rtol=0)
    torch.testing.assert_close(out["image_rgb"][:, placed], rgb[:, placed], atol=1e-3, rtol=0)
    assert torch.equal(image[:, ~placed], images[0][:, ~placed])  # nothing else changed
    # the paste mask at stride 4 sits under the pasted pixels
    pm = out["paste_masks"][1] > 0
    assert pm.any() and placed.reshape(24, 4, 32, 4).float().mean((1, 3))[pm].min() > 0.5
    # LiDAR points: invalid exactly where their projection (resize, flip) falls on pasted pixels
    uv = t["transform"].map_points(t["points_uv"]).floor().long()
    on = placed[uv[:, 1].clamp(0, 95), uv[:, 0].clamp(0, 127)]
    assert on.sum() > 50 and torch.equal(out["points_valid"], ~on)
    assert out["gt_masks"][1] is None and out["occluded"].shape == (2, 24, 32)


def test_occluded_boxes_shrink_or_drop():
    image = torch.zeros(3, 64, 64)
    t = {"boxes": torch.tensor([[10., 10, 30, 30], [40., 40, 44, 44]]), "classes": torch.tensor([0, 2]),
         "image_size": (64, 64), "gt_masks": ["a", "b"]}
    wall = BankedInstance(torch.zeros(3, 64, 10, dtype=torch.uint8), torch.ones(64, 10, dtype=torch.bool), 0, 1.0)

    class FixedRng:  # places the wall at x = 24 (covers x 24-33: box 0's right part, not box 1)
        def __init__(self, xs):
            self.xs = list(xs)

        def integers(self, lo, hi):
            return 0 if hi == 1 else self.xs.pop(0)

    _, out = paste_instances(image, t, [wall], FixedRng([24]), MEAN, STD)
    assert out["boxes"][0].tolist() == [10., 10, 24, 30] and out["boxes"][1].tolist() == [40., 40, 44, 44]
    assert out["occluded"][0].any() and out["occluded"][0, :, 6:8].all()
    # a second wall over box 1 hides it wholly: dropped, with its per-box entries
    _, out = paste_instances(image, t, [wall], FixedRng([38]), MEAN, STD)
    assert out["classes"].tolist() == [0, 0] and out["gt_masks"] == ["a", None]
    assert out["boxes"][0].tolist() == [10., 10, 30, 30]


def test_later_pastes_cover_earlier_ones_and_the_bank_round_trips():
    a, b = _disc(8), _disc(8, (0, 0, 250))

    class Same:
        def integers(self, lo, hi):
            return 10 if hi > 1 else 0

    t = {"boxes": torch.zeros(0, 4), "classes": torch.zeros(0, dtype=torch.long), "image_size": (64, 64)}
    _, out = paste_instances(torch.zeros(3, 64, 64), t, [a, b], Same(), MEAN, STD)
    assert out["pasted"].tolist() == [True]  # b lies exactly on a: a is hidden and dropped
    bank = PasteBank(2)
    for k in range(3):
        bank.push([BankedInstance(a.rgb, a.mask, k, 0.5)])
    bank.push([])
    assert len(bank) == 2 and [e[0].cls for e in bank.entries] == [1, 2]
    other = PasteBank(5)
    other.load_state_dict(bank.state_dict())
    assert other.capacity == 2 and torch.equal(other.entries[0][0].mask, a.mask)


def test_instances_are_chosen_by_score_and_banked_inside_their_box():
    entry = [BankedInstance(torch.zeros(3, 2, 2, dtype=torch.uint8), torch.ones(2, 2, dtype=torch.bool), 0, s)
             for s in (0.0, 0.0, 1.0, 0.2, 0.0, 0.0, 0.0, 0.0)]
    cfg = CopyPasteConfig(frac=0.25)
    picks = [choose_instances(entry, cfg, np.random.default_rng(i)) for i in range(20)]
    assert all(p == [2, 3] for p in picks)  # 8 x 0.25 = 2: the two scored ones, never a score-0 one
    assert choose_instances(entry[:3], cfg, np.random.default_rng(0)) == [2]  # one scored: one pasted
    assert len(choose_instances(entry[:1], CopyPasteConfig(min=2), np.random.default_rng(0))) == 1
    rgb = torch.arange(3 * 20 * 20, dtype=torch.float32).reshape(3, 20, 20) % 255
    masks = torch.ones(2, 20, 20, dtype=torch.bool)
    got = bank_entry(rgb, masks, torch.tensor([[2., 3, 7, 9], [0, 0, 4, 4]]), torch.tensor([1, 2]),
                     torch.tensor([0.9, 0.2]), torch.tensor([True, True]), min_score=0.5)
    assert len(got) == 1 and got[0].mask.shape == (6, 5) and torch.equal(got[0].rgb, rgb[:, 3:9, 2:7].to(torch.uint8))


def test_paste_batch_adds_the_keys_to_every_image_even_with_an_empty_bank():
    cfg = Model2DConfig.tiny(sim=SIMConfig(enabled=True, copy_paste=CopyPasteConfig(enabled=True)))
    images, targets = collate([_sample(False), _sample(True)])
    bank = PasteBank(10)
    im2, t2 = paste_batch(images, targets, bank, cfg, np.random.default_rng(0))
    assert torch.equal(im2, images) and all(t["pasted"].tolist() == [False] for t in t2)
    bank.push([_disc(5), _disc(4)])
    im3, t3 = paste_batch(images, targets, bank, cfg, np.random.default_rng(0))
    assert all(t["pasted"].tolist() == [False, True] for t in t3) and not torch.equal(im3, images)
