"""The GPU check (issue 19; ``make gpu-check``): the paper-size 3D SparseUNet (CUDA spconv) and the ResNet-50
2D model train a fixed number of steps on CUDA with bf16 autocast, and SAM ViT-B (random weights) embeds
images; one JSON file with steps/s, images/s and peak GPU memory. Fails at once, saying so, without CUDA or
without spconv's CUDA build.

    python bench/gpu_check.py --out bench/results/gpu-check.json [--steps 20]
    python bench/gpu_check.py --out X --cpu-smoke     # tiny models, 1 step, on the CPU: checks the code path

Inputs are random but shaped like the paper's: ~150k LiDAR points per frame in the Waymo range, 2 frames per
step; 2 images of 1333 x 800 per step with 8 boxes each; 1024 x 1024 SAM inputs.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]


def _timed(step, steps: int, device: torch.device) -> dict:
    step()  # warm-up (cuDNN / spconv tuning)
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    t = time.perf_counter()
    for _ in range(steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    sec = time.perf_counter() - t
    peak = torch.cuda.max_memory_allocated() / 2 ** 30 if device.type == "cuda" else None
    return {"steps": steps, "seconds": sec, "steps_per_s": steps / sec, "peak_gpu_gib": peak}


def check_3d(device: torch.device, steps: int, tiny: bool) -> dict:
    from mwsis.train3d.model import SegmentorConfig, VoteSegmentor, make_batch

    cfg = SegmentorConfig.tiny() if tiny else SegmentorConfig()
    model = VoteSegmentor(cfg).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    rng = np.random.default_rng(0)
    n = 2000 if tiny else 150_000
    frames = [{"xyz": rng.uniform([-70, -70, -1.5], [70, 70, 3.5], (n, 3)).astype(np.float32),
               "intensity": rng.random(n, np.float32), "elongation": rng.random(n, np.float32),
               "semantic": rng.integers(0, 4, n), "instance": rng.integers(0, 30, n)} for _ in range(2)]
    batch = make_batch(frames, device)

    def step():
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            losses = model(batch)
        loss = sum(v.float() for v in losses.values())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    model.train()
    return {"model": "SparseUNet (tiny)" if tiny else "SparseUNet (paper size)", "points_per_frame": n,
            "frames_per_step": 2, **_timed(step, steps, device)}


def check_2d(device: torch.device, steps: int, tiny: bool) -> dict:
    from mwsis.train2d.config import Model2DConfig
    from mwsis.train2d.model import BoxInstModel

    cfg = Model2DConfig.tiny() if tiny else Model2DConfig()
    model = BoxInstModel(cfg).to(device)
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    h, w = (128, 192) if tiny else (800, 1344)
    g = torch.Generator().manual_seed(0)
    images = torch.randn(2, 3, h, w, generator=g).to(device)
    xy = torch.rand(2, 8, 2, generator=g) * torch.tensor([w * 0.7, h * 0.7])
    wh = 16 + torch.rand(2, 8, 2, generator=g) * torch.tensor([w * 0.25, h * 0.25])
    targets = [{"boxes": torch.cat([xy[i], xy[i] + wh[i]], 1).to(device),
                "classes": torch.randint(0, 3, (8,), generator=g).to(device), "image_size": (h, w)} for i in range(2)]

    def step():
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            losses = model(images, targets, iteration=10 ** 6)
        loss = sum(v.float() for v in losses.values())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    model.train()
    return {"model": "BoxInst tiny" if tiny else "BoxInst ResNet-50", "image_size": [h, w], "images_per_step": 2,
            **_timed(step, steps, device)}


def check_sam(device: torch.device, steps: int, tiny: bool) -> dict:
    from mwsis.pseudolabel.sam_prompt import tiny_sam

    if tiny:
        sam, size = tiny_sam(seed=0, image_size=128, device=device), 128
    else:
        from segment_anything import sam_model_registry

        sam, size = sam_model_registry["vit_b"](checkpoint=None).to(device), 1024
    x = torch.randn(1, 3, size, size, device=device)

    @torch.inference_mode()
    def step():
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            sam.image_encoder(x)

    sam.eval()
    res = _timed(step, steps, device)
    return {"model": "SAM tiny" if tiny else "SAM ViT-B (random weights)", "image_size": size,
            "images_per_s": res["steps_per_s"], **res}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "gpu-check.json")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--cpu-smoke", action="store_true", help="tiny models, 1 step, on the CPU (tests the code)")
    a = ap.parse_args()
    if a.cpu_smoke:
        device, steps = torch.device("cpu"), 1
    else:
        if not torch.cuda.is_available():
            sys.exit("gpu-check: CUDA is not available (torch.cuda.is_available() is False); run it on a GPU machine "
                     "after `make install SPCONV=gpu`")
        try:  # spconv's CPU build fails here, before any model is built
            import spconv.pytorch as spconv_t

            conv = spconv_t.SubMConv3d(1, 1, 3, indice_key="probe").cuda()
            idx = torch.tensor([[0, 1, 1, 1]], dtype=torch.int32, device="cuda")
            conv(spconv_t.SparseConvTensor(torch.ones(1, 1, device="cuda"), idx, [4, 4, 4], 1))
        except Exception as e:  # noqa: BLE001 - any failure means: not the CUDA build
            sys.exit(f"gpu-check: spconv cannot run on CUDA ({type(e).__name__}: {e}); install spconv-cu12x "
                     "(make install SPCONV=gpu)")
        device, steps = torch.device("cuda"), a.steps
    from mwsis.pipelines.experiments.harness import machine

    rec = {"device": torch.cuda.get_device_name(0) if device.type == "cuda" else "cpu (smoke)",
           "torch": torch.__version__, "cuda": torch.version.cuda, "machine": machine(), "bf16": device.type == "cuda",
           "3d": check_3d(device, steps, a.cpu_smoke), "2d": check_2d(device, steps, a.cpu_smoke),
           "sam": check_sam(device, max(1, steps // 4), a.cpu_smoke), "command": " ".join(sys.argv)}
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(rec, indent=1, default=str) + "\n")
    print(json.dumps({k: rec[k] for k in ("device", "3d", "2d", "sam")}, indent=1, default=str))


if __name__ == "__main__":
    main()
