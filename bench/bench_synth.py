"""Benchmark the synthetic-frame generator: a ``waymo``-preset frame, and culled vs brute-force ray casting.

    python bench/bench_synth.py --out bench/results/synth.json [--frames 3]

Reports the median wall time of whole frames (after a warm-up frame that pays JIT loading), and, on
identical rays, the culled caster (frustum-binned primitive lists, near-to-far early exit) against a
brute-force baseline (every primitive for every ray, same numba kernel): the full LiDAR sweep and the
FRONT camera. Set ``NUMBA_NUM_THREADS=1`` for single-core numbers.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time

import numba
import numpy as np

from mwsis.pipelines.experiments.bench import cpu_model

from mwsis.data.synthetic import preset, render_frame
from mwsis.data.synthetic import camera as cam
from mwsis.data.synthetic.lidar import beam_dirs, lidar_tiles
from mwsis.data.synthetic.raycast import brute_force_binned, cull, trace
from mwsis.data.synthetic.scene import build_scene


def _timed(fn, repeat: int):
    times, out = [], None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def _compare(prims, ground, origin, dirs, ray_tile, tiles, far, n_tiles, repeat):
    """Time culled vs brute-force casting of the same rays; check they find the same surfaces."""
    def culled():
        return trace(prims, ground, origin, cull(prims, origin, tiles, far), dirs, ray_tile, far)

    def brute():
        return trace(prims, ground, origin, brute_force_binned(prims, origin, n_tiles), dirs, ray_tile, far)

    culled()  # warm-up
    t_c, (tc, hc, _) = _timed(culled, repeat)
    t_b, (tb, hb, _) = _timed(brute, 1)
    return {"rays": int(dirs.shape[0]), "primitives": len(prims), "culled_s": round(t_c, 4),
            "brute_force_s": round(t_b, 4), "speedup": round(t_b / t_c, 1),
            "same_hit_fraction": float(np.mean(hc == hb)),
            "max_abs_t_diff": float(np.max(np.abs(np.nan_to_num(tc, posinf=0) - np.nan_to_num(tb, posinf=0))))}




def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True, help="JSON file to write")
    ap.add_argument("--frames", type=int, default=3, help="timed frames (median reported)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    result = {"machine": {"platform": platform.platform(), "processor": platform.processor(), "cpu": cpu_model(),
                          "cpu_count": os.cpu_count(), "python": sys.version.split()[0],
                          "numba": numba.__version__, "numpy": np.__version__,
                          "numba_num_threads": numba.config.NUMBA_NUM_THREADS}}
    for name in ("tiny", "waymo"):
        cfg = preset(name)
        render_frame(cfg, args.seed, 0, 0)  # warm-up: JIT load / compile
        times, stats = [], []
        for i in range(args.frames):
            t0 = time.perf_counter()
            r = render_frame(cfg, args.seed, 0, 1 + i)
            times.append(time.perf_counter() - t0)
            f = r.frame
            stats.append((len(f.points), len(f.boxes2d), len(f.gt.boxes3d), len(r.scene.prims),
                          int((f.boxes2d.class_id == 1).sum())))
        s = np.array(stats)
        result[name] = {"frame_s_median": round(statistics.median(times), 4),
                        "frame_s_all": [round(t, 4) for t in times],
                        "points_per_frame": float(s[:, 0].mean()), "boxes2d_per_frame": float(s[:, 1].mean()),
                        "pedestrian_boxes2d_per_frame": float(s[:, 4].mean()),
                        "boxes3d_per_frame": float(s[:, 2].mean()), "primitives_per_frame": float(s[:, 3].mean()),
                        "cameras": [f"{c.camera_id}:{c.width}x{c.height}" for c in f.cameras],
                        "range_image": list(f.range_image_shape)}

    cfg = preset("waymo")
    scene = build_scene(cfg, args.seed, 0, 1)
    origin = scene.ego + np.asarray(cfg.lidar_position)
    tiles, ray_tile = lidar_tiles(cfg)
    dirs = beam_dirs(cfg).reshape(-1, 3)
    result["lidar_sweep_cast"] = _compare(scene.prims, scene.ground, origin, dirs, ray_tile, tiles, cfg.max_range,
                                          len(tiles.planes), args.frames)
    result["lidar_sweep_cast"]["note"] = "3 rays per range-image pixel (centre + 2 footprint sub-rays), first pass only"
    geo = cam.camera_geometry(cfg.cameras[0], cfg.image_scale)
    cdirs, ctile = cam.pixel_rays(geo)
    corigin = scene.ego + geo.extrinsic[:3, 3]
    result["front_camera_cast"] = _compare(scene.prims, scene.ground, corigin, cdirs, ctile, cam.camera_tiles(geo),
                                           cfg.view_distance, len(cam.camera_tiles(geo).planes), args.frames)
    result["front_camera_cast"]["note"] = ("one ray per pixel; the far limit differs from frame rendering (which "
                                           "continues the ground to 3x view_distance), the rays are the same")
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as fh:
        json.dump(result, fh, indent=2)
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
