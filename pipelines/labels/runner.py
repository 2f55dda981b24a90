"""Runs pseudo-label stages over shards: slicing (SLURM arrays), resume, failure isolation, process pools.

A stage is a pure per-frame function (``StageSpec.label_frame``) plus its dependencies and config.
The runner alone reads frame and label shards and writes label shards, through ``data/``:

* one output shard per frame shard, written atomically (nothing partial is ever visible);
* one writer per (stage, shard) at a time (``labels/<stage>/.locks/<shard>.parquet.lock``): a second
  runner waits, then skips the finished shard; a full or read-only disk fails the shard with
  ``cannot write <path>: <why> (shard S of stage T)``;
* a finished shard is skipped unless ``force``, or unless its recorded config, code version or input
  checksums differ from the current ones (then it is recomputed);
* a failing frame fails its shard with the frame id and the cause; the other shards go on, and the
  caller gets every failure back to report and to set the exit code.
"""
from __future__ import annotations

import logging
import os
import time
import traceback
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path

from ... import __version__
from ...data.label_store import (LabelShard, label_shard_checksum, label_shard_metadata, label_shard_path,
                                write_label_shard)
from ...data.click_store import ClickShard
from ...data.prediction_store import PredictionShard
from ...data.locks import exclusive_lock, remove_stale_temps, tidy_temps
from ...data.store import StoreError, WriteError, open_dataset
from ..progress import progress_bar
from .stages import STAGES, StagesConfig, resolve_order

log = logging.getLogger(__name__)


@dataclass
class ShardResult:
    stage: str
    shard: str
    status: str  # "done", "skipped", "failed"
    frames: int
    seconds: float = 0.0
    error: str | None = None


def slice_shards(num_shards: int, shard_index: int | None = None, num_slices: int | None = None) -> list[int]:
    """Shard positions for task ``shard_index`` of ``num_slices`` (round robin).

    Without arguments the slice comes from ``SLURM_ARRAY_TASK_ID`` / ``SLURM_ARRAY_TASK_COUNT`` (offset by
    ``SLURM_ARRAY_TASK_MIN``) when they are set, else it is every shard.
    """
    if shard_index is None and num_slices is None and "SLURM_ARRAY_TASK_ID" in os.environ:
        task = int(os.environ["SLURM_ARRAY_TASK_ID"]) - int(os.environ.get("SLURM_ARRAY_TASK_MIN", 0))
        shard_index, num_slices = task, int(os.environ.get("SLURM_ARRAY_TASK_COUNT", 1))
    if shard_index is None and num_slices is None:
        return list(range(num_shards))
    if shard_index is None or num_slices is None or not 0 <= shard_index < num_slices:
        raise ValueError(f"--shard-index {shard_index} / --num-shards {num_slices}: need 0 <= index < count")
    return list(range(shard_index, num_shards, num_slices))


def shard_inputs(root: Path, stage: str, info, cfg: dict, predictions: dict[str, tuple[str, int]],
                 verify: bool = False, made_here: frozenset[str] = frozenset()) -> dict:
    """Verified checksums of everything a stage's output shard depends on: the frame shard (against the
    manifest), prediction and dependency label shards (against their stamps). Size and mtime guard each
    one; ``verify`` hashes every byte. A missing or damaged input raises, naming the file. ``made_here``:
    dependencies being written by the caller (a fused pass), left out."""
    from ...data.click_store import click_shard_path
    from ...data.integrity import check_file
    from ...data.prediction_store import round_dir

    inputs = {"frames": check_file(Path(root) / info.path, info.sha256, verify=verify,
                                   hint="restore it, or convert the dataset again")}
    for name, (source, rnd) in predictions.items():
        path = round_dir(root, source, rnd) / f"{info.name}.parquet"
        if not path.exists():
            raise StoreError(f"{path}: missing; stage '{stage}' needs {source} predictions of round {rnd}")
        inputs[f"predictions/{source}/{name}"] = check_file(path, verify=verify,
                                                            hint=f"export round {rnd} again (`mwsis predict-{source}`)")
    source = STAGES[stage].clicks_fn(cfg) if STAGES[stage].clicks_fn else None
    if source is not None:
        path = click_shard_path(root, source, info.name)
        if not path.exists():
            raise StoreError(f"{path}: missing; stage '{stage}' needs click set '{source}' "
                             f"(make it with `mwsis clicks --data {root} --from ...`)")
        inputs[f"clicks/{source}"] = check_file(path, verify=verify, hint="make the click set again")
    for dep in STAGES[stage].dependencies(cfg):
        if dep in made_here:
            continue
        if not label_shard_path(root, dep, info.name).exists():
            raise StoreError(f"{root}/labels/{dep}/{info.name}.parquet: missing; stage '{stage}' needs stage "
                             f"'{dep}' first (run `mwsis stage {dep} --data {root}`)")
        inputs[f"labels/{dep}"] = label_shard_checksum(root, dep, info.name, verify=verify)
    return inputs


def run_stage_shard(root: str, stage: str, config: StagesConfig, shard_pos: int, force: bool = False,
                    tick=None, verify: bool = False, ds=None) -> ShardResult:
    """Label one shard with one stage. Never raises for data problems: they come back as 'failed'.

    ``config``: the run's resolved ``StagesConfig`` (the stage reads its sections). ``verify``: the up-to-date
    check hashes every input and output byte instead of trusting unchanged sizes and mtimes. ``ds``: the
    dataset opened once by the caller, so that the stages of one run hash each frame shard once.
    """
    t0 = time.time()
    ds = open_dataset(root) if ds is None else ds
    info = ds.manifest.shards[shard_pos]
    where = f"shard {info.name} of stage {stage}"
    dest = label_shard_path(ds.root, stage, info.name)
    try:
        # A finished shard is a whole file (renamed into place), so it can be found current without the lock:
        # rerunning on a read-only copy of a finished dataset still works.
        if not force and (_expected(ds, stage, config, info, verify)[-1]
                          == label_shard_metadata(ds.root, stage, info.name, verify)):
            tidy_temps(dest)  # a writer killed while redoing this finished shard left a temp file
            if tick:
                tick(info.frames)
            return ShardResult(stage, info.name, "skipped", info.frames, time.time() - t0)
        # One writer per (stage, shard). A second runner on the same shard (a SLURM array task started twice)
        # waits here, then finds the shard current and skips it: both exit 0 and the shard is done either way.
        # Failing fast instead would report an error for a shard that ends up fine, or, if the first runner then
        # dies, leave it undone with nobody told. Under the lock no live writer of ``dest`` exists, so temp
        # files beside it are a killed writer's leftovers.
        with exclusive_lock(dest, where) as held:
            if held:
                remove_stale_temps(dest)
            status = _label_shard(ds, stage, config, shard_pos, force, tick)
        return ShardResult(stage, info.name, status, info.frames, time.time() - t0)
    except WriteError as e:  # disk full, read-only: name the file, the shard and the stage
        log.debug("stage %s shard %s failed:\n%s", stage, info.name, traceback.format_exc())
        return ShardResult(stage, info.name, "failed", info.frames, time.time() - t0, str(e.within(where)))
    except Exception as e:
        log.debug("stage %s shard %s failed:\n%s", stage, info.name, traceback.format_exc())
        return ShardResult(stage, info.name, "failed", info.frames, time.time() - t0, str(e))


def _expected(ds, stage: str, config: StagesConfig, info, verify: bool = False) -> tuple:
    """(the stage's config sections, prediction rounds, input checksums, the metadata a current output shard
    records: stage, config as JSON, code version, input checksums)."""
    sections = STAGES[stage].sections
    cfg = config.sections(sections)
    predictions = STAGES[stage].predictions_fn(ds.root, cfg) if STAGES[stage].predictions_fn else {}
    inputs = shard_inputs(ds.root, stage, info, cfg, predictions, verify)
    return cfg, predictions, inputs, {"stage": stage, "config": config.record(sections), "code_version": __version__,
                                      "inputs": inputs}


def _label_shard(ds, stage: str, config: StagesConfig, shard_pos: int, force: bool, tick) -> str:
    """Compute and write one label shard unless it is current; "done" or "skipped". Caller holds the lock."""
    spec = STAGES[stage]
    info = ds.manifest.shards[shard_pos]
    cfg, predictions, inputs, expected = _expected(ds, stage, config, info)  # again: another writer may have won
    if not force and label_shard_metadata(ds.root, stage, info.name) == expected:
        if tick:
            tick(info.frames)
        return "skipped"
    ctx = spec.setup(cfg) if spec.setup else None
    deps = {d: LabelShard(ds, d, info.name) for d in spec.dependencies(cfg)}
    preds = {n: PredictionShard(ds, src, rnd, info.name) for n, (src, rnd) in predictions.items()}
    source = spec.clicks_fn(cfg) if spec.clicks_fn else None
    clicks = ClickShard(ds, source, info.name) if source is not None else None

    def rows():
        for i, frame in enumerate(ds.shard(shard_pos).iter_frames(columns=spec.columns)):
            dep_labels = {d: s.labels(i) for d, s in deps.items()}
            for d, lab in dep_labels.items():
                if lab.frame_id != frame.frame_id:
                    raise StoreError(f"labels/{d}/{info.name}: row {i} is frame {lab.frame_id}, "
                                     f"frames shard has {frame.frame_id} (mismatched ids; rerun stage '{d}')")
            for n, p in preds.items():
                fid, probs = p.predictions(i)
                if fid != frame.frame_id:
                    raise StoreError(f"{p.path}: row {i} is frame {fid}, frames shard has {frame.frame_id} "
                                     "(mismatched ids)")
                dep_labels[n] = probs
            if clicks is not None:
                dep_labels["clicks"] = clicks.clicks(i, frame.frame_id)[1]
            try:
                out = spec.label_frame(frame, dep_labels, cfg, ctx)
            except Exception as e:  # name the frame, keep the cause
                raise RuntimeError(f"frame {frame.frame_id}: {type(e).__name__}: {e}") from e
            if tick:
                tick(1)
            yield out

    write_label_shard(ds.root, stage, info.name, rows(), expected["config"], __version__, inputs)
    return "done"


def run_stages(root: Path | str, stages: list[str], config: StagesConfig | dict[str, dict] | None = None,
               shard_positions: list[int] | None = None, workers: int = 1, force: bool = False,
               show_progress: bool = True, verify: bool = False, fused: bool = True) -> list[ShardResult]:
    """Run ``stages`` (plus what they depend on, in graph order) over the given shards.

    ``config``: a ``StagesConfig``, or overrides per section such as ``{"spg": {"fg_thresh": 0.05}}``; resolved
    once here and carried whole to every stage and worker. ``fused``: each shard is read once for all the
    stages (``fused.run_shard_fused``; the same shards, byte for byte); off: stage by stage, every stage over
    every shard before the next stage starts.
    """
    ds = open_dataset(root)
    positions = list(range(ds.num_shards)) if shard_positions is None else shard_positions
    config = StagesConfig.resolve(config)
    order, results = [], []
    for stage in resolve_order(stages):
        spec = STAGES[stage]
        reason = spec.skip_reason(config.sections(spec.sections)) if spec.skip_reason else None
        if reason:
            log.warning("stage %s skipped: %s", stage, reason)
            results.append(ShardResult(stage, "*", "skipped", 0, 0.0, reason))
        else:
            order.append(stage)
    # one pool for every stage: spawning workers (imports, JIT cache loads) costs seconds each time
    pool = (ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn"))
            if workers > 1 and len(positions) > 1 else None)
    try:
        if fused and len(order) > 1:
            results += _run_fused(ds, order, config, positions, force, pool, show_progress, verify)
        else:
            for stage in order:
                results += _run_one_stage(ds, stage, config, positions, force, pool, show_progress, verify)
    finally:
        if pool is not None:
            pool.shutdown()
    return results


def _run_fused(ds, stages: list[str], config: StagesConfig, positions: list[int], force: bool, pool,
               show_progress: bool, verify: bool) -> list[ShardResult]:
    from .fused import run_shard_fused

    frames = sum(ds.manifest.shards[p].frames for p in positions)
    with progress_bar(total=frames, unit="frame", desc="+".join(stages), enabled=show_progress) as bar:
        if pool is None:
            per_shard = [run_shard_fused(str(ds.root), stages, config, p, force, bar.update, verify, ds)
                         for p in positions]
        else:
            per_shard = []
            futs = [pool.submit(run_shard_fused, str(ds.root), stages, config, p, force, None, verify)
                    for p in positions]
            for fut in as_completed(futs):
                per_shard.append(fut.result())
                bar.update(per_shard[-1][0].frames)
    results = []
    for stage in stages:
        results += _log_stage(stage, sorted((r for rs in per_shard for r in rs if r.stage == stage),
                                            key=lambda r: r.shard), timed=False)
    log.info("fused passes: stages %s over %d shards, %.1f s", ",".join(stages), len(per_shard),
             sum(rs[0].seconds for rs in per_shard if rs))
    return results


def _run_one_stage(ds, stage: str, config: StagesConfig, positions: list[int], force: bool, pool,
                   show_progress: bool, verify: bool = False) -> list[ShardResult]:
    frames = sum(ds.manifest.shards[p].frames for p in positions)
    with progress_bar(total=frames, unit="frame", desc=stage, enabled=show_progress) as bar:
        if pool is None:
            batch = [run_stage_shard(str(ds.root), stage, config, p, force, tick=bar.update, verify=verify,
                                     ds=ds) for p in positions]
        else:
            batch = []
            futs = [pool.submit(run_stage_shard, str(ds.root), stage, config, p, force, None, verify)
                    for p in positions]
            for fut in as_completed(futs):
                res = fut.result()
                bar.update(res.frames)
                batch.append(res)
            batch.sort(key=lambda r: r.shard)
    return _log_stage(stage, batch)


def _log_stage(stage: str, batch: list[ShardResult], timed: bool = True) -> list[ShardResult]:
    """Log a stage's failures and counts; ``timed``: with its seconds (a fused pass times all stages at once,
    so its stages are logged without, and the passes once)."""
    for r in batch:
        if r.status == "failed":
            log.error("stage %s shard %s failed: %s", stage, r.shard, r.error)
    log.info("stage %s: %d shards written, %d up to date, %d failed (%d frames%s)", stage,
             sum(r.status == "done" for r in batch), sum(r.status == "skipped" for r in batch),
             sum(r.status == "failed" for r in batch), sum(r.frames for r in batch),
             f", {sum(r.seconds for r in batch):.1f} s" if timed else "")
    return batch


def shard_is_current(root, stage: str, config: StagesConfig, shard_pos: int) -> bool:
    """Whether ``stage``'s output shard at ``shard_pos`` is up to date: the test ``run_stage_shard`` uses to
    skip it (recorded stage, config, code version and input checksums equal to the current ones).

    ``root`` is a dataset directory or an open ``Dataset`` (callers checking many shards open it once);
    ``config``: the resolved ``StagesConfig``. Missing inputs (a dependency not labelled yet) -> False.
    """
    ds = root if hasattr(root, "manifest") else open_dataset(root)
    info = ds.manifest.shards[shard_pos]
    recorded = label_shard_metadata(ds.root, stage, info.name)
    if recorded is None:
        return False  # cheap exit before checksumming the dependencies
    try:
        return _expected(ds, stage, config, info)[-1] == recorded
    except (StoreError, ValueError):
        return False


def parse_shard_list(text: str, num_shards: int) -> list[int]:
    """``"0-2,5"`` -> [0, 1, 2, 5]: shard positions (manifest order) for ``mwsis stage --shards``.

    Sorted and deduplicated; a position outside 0..num_shards-1 or a malformed item is a ValueError."""
    out: set[int] = set()
    for item in (t.strip() for t in text.split(",")):
        lo, dash, hi = item.partition("-")
        try:
            a, b = int(lo), int(hi if dash else lo)
        except ValueError:
            raise ValueError(f"--shards {text!r}: {item!r} is not a position or a range A-B") from None
        if a > b:
            raise ValueError(f"--shards {text!r}: {item!r} is a reversed range; write {b}-{a}")
        if not 0 <= a <= b < num_shards:
            raise ValueError(f"--shards {text!r}: {item!r} is outside 0-{num_shards - 1} "
                             f"(the dataset has {num_shards} shards)")
        out.update(range(a, b + 1))
    return sorted(out)


def format_shard_list(positions) -> str:
    """[0, 1, 2, 5] -> ``"0-2,5"`` (the inverse of ``parse_shard_list``; keeps batch scripts short)."""
    ps = sorted(set(positions))
    runs: list[str] = []
    i = 0
    while i < len(ps):
        j = i
        while j + 1 < len(ps) and ps[j + 1] == ps[j] + 1:
            j += 1
        runs.append(str(ps[i]) if i == j else f"{ps[i]}-{ps[j]}")
        i = j + 1
    return ",".join(runs)
