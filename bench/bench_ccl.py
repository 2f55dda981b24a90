"""Benchmark the CCL kernel (``pseudolabel/ccl.py``) on a dense ``waymo``-preset frame.

    NUMBA_NUM_THREADS=1 python bench/bench_ccl.py --out bench/results/ccl.json [--repeat 7]

The frame is ``make_frame(preset("waymo"), seed, 0, 0)`` (or frame 0 of ``--dataset``). The calls that
``spg_frame`` and ``ccl_frame`` make to ``largest_component_per_box`` are captured (SPG: foreground
pairs only; CCL baseline: every claimed pair; each once plain and once with the exclusive second pass),
then the plain ones are timed against a straightforward baseline in the same run: per box, scipy
``cKDTree.query_pairs`` (radius graph, filtered to the strict ``dist < r`` with the ``cdist`` formula)
+ ``scipy.sparse.csgraph.connected_components`` + the largest component; both must keep the same pairs.
Reports median wall times in ms (after a warm-up call that pays JIT loading) and the baseline/new ratio,
plus the end-to-end ``spg_frame`` / ``ccl_frame`` times. Single core: NUMBA_NUM_THREADS defaults to 1.
"""
from __future__ import annotations

import os

os.environ.setdefault("NUMBA_NUM_THREADS", "1")

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

import numba  # noqa: E402
import numpy as np  # noqa: E402
import scipy  # noqa: E402
from scipy.sparse import coo_matrix  # noqa: E402
from scipy.sparse.csgraph import connected_components as scipy_cc  # noqa: E402
from scipy.spatial import cKDTree  # noqa: E402

from mwsis.pipelines.experiments.bench import cpu_model  # noqa: E402
from mwsis.pseudolabel import ccl, spg  # noqa: E402
from mwsis.pseudolabel.spg import SPGConfig, ccl_frame, spg_frame  # noqa: E402


def _timed(fn, repeat: int):
    times, out = [], None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out




def baseline_largest_per_box(xyz, claims, box_class, radii, mode="xy", pair_mask=None):
    """Per box: cKDTree radius pairs -> strict ``dist < r`` -> csgraph components -> largest (ties: lowest label)."""
    nd = 2 if mode == "xy" else 3
    keep = np.zeros(len(claims), bool)
    sel = np.arange(len(claims)) if pair_mask is None else np.flatnonzero(pair_mask)
    sel = sel[np.argsort(claims.box[sel], kind="stable")]
    bounds = np.searchsorted(claims.box[sel], np.arange(claims.n_boxes + 1))
    for b in range(claims.n_boxes):
        s = sel[bounds[b]:bounds[b + 1]]
        if s.size == 0:
            continue
        pts = np.asarray(xyz, np.float64)[claims.point[s], :nd]
        r = float(radii[int(box_class[b])])
        pairs = cKDTree(pts).query_pairs(r * (1 + 1e-9), output_type="ndarray")
        diff = pts[pairs[:, 0]] - pts[pairs[:, 1]]
        acc = diff[:, 0] ** 2
        for d in range(1, nd):
            acc = acc + diff[:, d] ** 2  # the cdist formula, summed in axis order
        pairs = pairs[np.sqrt(acc) < r]
        n = s.size
        graph = coo_matrix((np.ones(len(pairs), bool), (pairs[:, 0], pairs[:, 1])), shape=(n, n))
        _, lab = scipy_cc(graph, directed=False)
        keep[s] = lab == np.argmax(np.bincount(lab))
    return keep


def _capture(frame, cfg):
    """The (args, kwargs) of every largest_component_per_box call of spg_frame and ccl_frame."""
    calls, orig = [], spg.largest_component_per_box

    def spy(*args, **kwargs):
        calls.append((args, kwargs))
        return orig(*args, **kwargs)

    sizes = frame.image_sizes
    spg.largest_component_per_box = spy
    try:
        spg_frame(frame.points, frame.boxes2d, sizes, cfg, frame.range_image_shape)
        n_spg = len(calls)
        ccl_frame(frame.points, frame.boxes2d, sizes, cfg)
    finally:
        spg.largest_component_per_box = orig
    return calls[:n_spg], calls[n_spg:], sizes


def _max_per_cell(xyz, radius, nd):
    cell = radius / np.sqrt(nd)
    _, counts = np.unique(np.floor(np.asarray(xyz, np.float64)[:, :nd] / cell).astype(np.int64), axis=0,
                          return_counts=True)
    return int(counts.max()) if counts.size else 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True, help="JSON file to write")
    ap.add_argument("--repeat", type=int, default=7, help="timed repetitions of the new kernel (median)")
    ap.add_argument("--baseline-repeat", type=int, default=3, help="timed repetitions of the scipy baseline")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--dataset", default=None, help="use frame 0 of this dataset instead of rendering one")
    args = ap.parse_args(argv)

    result = {"machine": {"platform": platform.platform(), "processor": platform.processor(), "cpu": cpu_model(),
                          "cpu_count": os.cpu_count(), "python": sys.version.split()[0],
                          "numba": numba.__version__, "numpy": np.__version__, "scipy": scipy.__version__,
                          "numba_num_threads": numba.config.NUMBA_NUM_THREADS}}
    if args.dataset:
        from mwsis.data.store import open_dataset
        ds = open_dataset(args.dataset)
        frame = ds.frame(ds.frame_ids[0], images=False)
        source = f"{args.dataset} frame {ds.frame_ids[0]}"
    else:
        from mwsis.data.synthetic import make_frame, preset
        frame = make_frame(preset("waymo"), seed=args.seed, sequence=0, index=0)
        source = f"make_frame(preset('waymo'), seed={args.seed}, sequence=0, index=0)"
    cfg = SPGConfig()
    spg_calls, ccl_calls, sizes = _capture(frame, cfg)  # also the warm-up of the whole pipeline
    xyz = frame.points.xyz
    claims = spg_calls[0][0][1]
    veh = claims.point[np.isin(claims.box, np.flatnonzero(np.asarray(frame.boxes2d.class_id) == 0))]
    result["frame"] = {"source": source, "points": len(frame.points), "boxes2d": len(frame.boxes2d),
                       "claims": len(claims), "spg_foreground_claims": int(spg_calls[0][1]["pair_mask"].sum()),
                       "max_points_per_vehicle_radius_xy_cell": _max_per_cell(xyz[np.unique(veh)], cfg.radii[0], 2),
                       "radii": list(cfg.radii), "mode": cfg.ccl_mode}

    # 1) kernel vs scipy baseline, on the plain (non-exclusive) calls, xy (the authors') and xyz
    comparisons = {}
    for name, (a, kw) in (("spg_foreground", spg_calls[0]), ("ccl_all_claims", ccl_calls[0])):
        for mode in ("xy", "xyz"):
            call_args = a[:4] + (mode,)
            new = lambda: ccl.largest_component_per_box(*call_args, **kw)  # noqa: E731
            new()
            t_new, keep_new = _timed(new, args.repeat)
            base = lambda: baseline_largest_per_box(*call_args, pair_mask=kw.get("pair_mask"))  # noqa: E731
            t_base, keep_base = _timed(base, args.baseline_repeat)
            comparisons[f"{name}_{mode}"] = {
                "pairs": int(len(a[1]) if kw.get("pair_mask") is None else kw["pair_mask"].sum()),
                "new_ms": round(1e3 * t_new, 3), "baseline_scipy_ms": round(1e3 * t_base, 3),
                "ratio_baseline_over_new": round(t_base / t_new, 1),
                "same_keep": bool(np.array_equal(keep_new, keep_base))}
    result["largest_component_per_box"] = comparisons

    # 2) the calls exactly as the pipeline makes them (plain + exclusive pass each)
    pipeline = {}
    for name, calls in (("spg_frame", spg_calls), ("ccl_frame", ccl_calls)):
        t_calls = [_timed(lambda a=a, kw=kw: ccl.largest_component_per_box(*a, **kw), args.repeat)[0]
                   for a, kw in calls]
        pipeline[name] = {"ccl_calls": len(calls), "ccl_calls_ms": [round(1e3 * t, 3) for t in t_calls],
                          "ccl_total_ms": round(1e3 * sum(t_calls), 3)}
    pipeline["spg_frame"]["end_to_end_ms"] = round(1e3 * _timed(
        lambda: spg_frame(frame.points, frame.boxes2d, sizes, cfg, frame.range_image_shape), args.repeat)[0], 3)
    pipeline["ccl_frame"]["end_to_end_ms"] = round(1e3 * _timed(
        lambda: ccl_frame(frame.points, frame.boxes2d, sizes, cfg), args.repeat)[0], 3)
    result["pipeline"] = pipeline

    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as fh:
        json.dump(result, fh, indent=2)
    print(json.dumps(result, indent=2))
    return 0 if all(c["same_keep"] for c in comparisons.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
