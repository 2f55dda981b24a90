"""The table of ``docs/experiments/bench-pseudolabels.json`` (a ``mwsis bench --json`` record; issue 19), for
``bench/update_readme.py``: the stages end to end, fused against stage by stage and against the kernels,
DCS, memory and hashing, and where each path's time goes.

    NUMBA_NUM_THREADS=1 mwsis bench --json docs/experiments/bench-pseudolabels.json && python bench/update_readme.py
"""
from __future__ import annotations


def _met(ok: bool) -> str:
    return "met" if ok else "**missed**"


def markdown(rec: dict) -> str:
    e2e, t, m = rec["stages_end_to_end"], rec["targets"], rec["machine"]
    fps = rec["pipeline_frames_per_s"]
    rows = [
        ("stages end to end, fused, 1 worker (`stages_frames_per_s`)", f"{rec['stages_frames_per_s']:.1f} frames/s",
         f"stage by stage (`stages_by_stage_frames_per_s`): {rec['stages_by_stage_frames_per_s']:.1f} frames/s",
         f"{rec['fused_speedup']:.2f}×", ""),
        ("the same against the kernels in memory (`stages_vs_pipeline`)", f"{rec['stages_frames_per_s']:.1f} frames/s",
         f"association + DCS + SPG + CCL in memory (`pipeline_frames_per_s`): {fps:.1f} frames/s",
         f"{rec['stages_vs_pipeline']:.2f}", f"≥ 0.5: {_met(t['stages_vs_pipeline>=0.5'])}"),
        ("stages end to end, fused, 2 workers", f"{e2e['fused_2']['frames_per_s']:.1f} frames/s", "", "", ""),
        ("DCS per frame (`dcs_ms_per_frame`)", f"{rec['dcs_ms_per_frame']:.2f} ms",
         f"plain-Python loop of the same rule: {rec['dcs_python_ms_per_frame']:.0f} ms; the authors' style: "
         f"{rec['dcs_authors_style_python_ms_per_frame'] / 1e3:.2f} s",
         f"{rec['dcs_speedup']:.0f}×; {rec['dcs_speedup_vs_authors_style']:.0f}×",
         f"≤ 1 ms: {_met(t['dcs_ms_per_frame<=1'])}; ≥ 1000× against the authors' style: "
         f"{_met(t['dcs_speedup_vs_authors_style>=1000'])}"),
        ("peak RSS", f"{rec['peak_rss_mb']:.0f} MB main, {rec['peak_rss_mb_worker']:.0f} MB per worker", "", "",
         f"≤ 2 GB: {_met(t['peak_rss_mb<=2048'])}"),
        ("hashing inside a fused 4-stage `--force` run (`integrity.hash_share`)",
         f"{100 * rec['integrity']['hash_share']:.1f} %", "", "", f"≤ 5 %: {_met(t['integrity_hash_share<=0.05'])}"),
    ]
    lines = ["| what | ours | baseline (same run) | ratio | target |", "|---|---|---|---|---|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    lines += ["", "Where the time goes (cProfile over one 4-stage `--force` run, own time per frame, top five; "
                  "profiling slows Python more than native code, so compare shares, not speeds):", ""]
    for name, prof in rec["profile"].items():
        top = ", ".join(f"{k} {ms:.1f} ms ({100 * share:.0f} %)" for k, ms, share in prof["top"])
        lines.append(f"* {name.replace('_', ' ')} ({prof['ms_per_frame']:.0f} ms/frame): {top}")
    lines += ["", f"{rec['frames']} waymo-preset frames ({rec['points_per_frame'] / 1e3:.0f}k points, "
                  f"{rec['boxes_per_frame']:.0f} boxes per frame), one numba thread; {m['cpu']} ({m['cores']} cores), "
                  f"load average {m['load_avg_start'][0]:.1f} at the start and {m['load_avg_end'][0]:.1f} at the end; "
                  f"{rec['date']}; `{rec['command']}`."]
    return "\n".join(lines) + "\n"
