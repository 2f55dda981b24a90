"""Fused stage execution: every requested stage of a run over one frame shard, reading each frame once.

Stage by stage (``runner.run_stage_shard``), a four-stage run opens and decodes every frame shard four times,
and SPG reads back what DCS wrote. Here one pass over the shard's frames runs each stage that is not up to
date on every frame, in dependency order; a stage computed in the pass hands its labels to the stages that
need them in memory (SPG takes DCS's segments without reading ``labels/dcs``), and the frame is decoded
only with the columns the stages read (``StageSpec.columns``; pixels only for SAM).

What makes a stage's shard trustworthy stays per stage, so the shards are byte-identical to the stage-by-stage
ones whatever the grouping (``tests/pipelines/test_fused.py``):

* each (stage, shard) is checked up to date on its own and skipped when it is (a stage whose dependency is
  recomputed in the pass is recomputed with it);
* the pass holds the lock of every stage it writes (taken in stage order, so runners cannot deadlock), and
  checks again under them;
* each stage writes through its own ``LabelShardWriter``: atomic, sealed, and recording the checksums of its
  inputs. A stage whose dependency is written in the same pass learns that checksum only when the dependency
  commits, so its rows wait in a spill file until then;
* a frame that fails a stage fails that stage's shard (and its dependents'), named by frame and cause; the
  other stages of the shard go on; a killed pass leaves only temp files, which the next writer removes.
"""
from __future__ import annotations

import logging
import time
import traceback
from contextlib import ExitStack

from ...data.click_store import ClickShard
from ...data.label_store import LabelShard, LabelShardWriter, label_shard_metadata, label_shard_path
from ...data.locks import exclusive_lock, remove_stale_temps, tidy_temps
from ...data.prediction_store import PredictionShard
from ...data.store import StoreError, WriteError, open_dataset
from .runner import ShardResult, _expected, shard_inputs
from .stages import SHARED, STAGES, FrameShared

log = logging.getLogger(__name__)


def _todo(ds, stages: list[str], config, info, force: bool, verify: bool) -> list[str]:
    """The stages (in the given dependency order) whose shard must be written: forced, not up to date, or
    depending on a stage written in this pass. A stage whose inputs are missing counts as to do (its
    preparation then fails it with the cause)."""
    todo: list[str] = []
    for stage in stages:
        deps = STAGES[stage].dependencies(config.sections(STAGES[stage].sections))
        if force or any(d in todo for d in deps):
            todo.append(stage)
            continue
        try:
            current = _expected(ds, stage, config, info, verify)[-1] == label_shard_metadata(ds.root, stage, info.name,
                                                                                               verify)
        except Exception:  # missing or damaged input: the stage fails in the pass, with the cause
            current = False
        if not current:
            todo.append(stage)
    return todo


class _StagePlan:
    """One stage's part of the pass over a shard: its config, readers of inputs not made in the pass, writer."""

    def __init__(self, ds, stage: str, config, shard_pos: int, in_pass: set[str], stack: ExitStack):
        spec = self.spec = STAGES[stage]
        info = ds.manifest.shards[shard_pos]
        self.stage = stage
        self.deps = spec.dependencies(config.sections(spec.sections))
        self.record_known = not any(d in in_pass for d in self.deps)
        if not self.record_known:  # the record waits for those shards' checksums; the other inputs are checked
            self.cfg = config.sections(spec.sections)
            self.predictions = spec.predictions_fn(ds.root, self.cfg) if spec.predictions_fn else {}
            shard_inputs(ds.root, stage, info, self.cfg, self.predictions, made_here=frozenset(in_pass))
            record = None
        else:
            self.cfg, self.predictions, _, meta = _expected(ds, stage, config, info)
            record = (meta["config"], meta["code_version"], meta["inputs"])
        self.readers = {d: LabelShard(ds, d, info.name) for d in self.deps if d not in in_pass}
        self.preds = {n: PredictionShard(ds, src, rnd, info.name) for n, (src, rnd) in self.predictions.items()}
        source = spec.clicks_fn(self.cfg) if spec.clicks_fn else None
        self.clicks = ClickShard(ds, source, info.name) if source is not None else None
        self.ctx = spec.setup(self.cfg) if spec.setup else None
        self.writer = stack.enter_context(LabelShardWriter(ds.root, stage, info.name, record=record))

    def label(self, i: int, frame, made: dict):
        """This stage's labels of frame ``i``; ``made``: the labels of the stages already run on it, and the
        frame's ``FrameShared``."""
        deps = {SHARED: made[SHARED]}
        for d in self.deps:
            if d in made:
                deps[d] = made[d]
                continue
            deps[d] = self.readers[d].labels(i)
            if deps[d].frame_id != frame.frame_id:
                raise StoreError(f"labels/{d}/{self.readers[d].shard}: row {i} is frame {deps[d].frame_id}, frames "
                                 f"shard has {frame.frame_id} (mismatched ids; rerun stage '{d}')")
        for n, p in self.preds.items():
            fid, deps[n] = p.predictions(i)
            if fid != frame.frame_id:
                raise StoreError(f"{p.path}: row {i} is frame {fid}, frames shard has {frame.frame_id} (mismatched ids)")
        if self.clicks is not None:
            deps["clicks"] = self.clicks.clicks(i, frame.frame_id)[1]
        try:
            return self.spec.label_frame(frame, deps, self.cfg, self.ctx)
        except Exception as e:  # name the frame, keep the cause
            raise RuntimeError(f"frame {frame.frame_id}: {type(e).__name__}: {e}") from e


def run_shard_fused(root: str, stages: list[str], config, shard_pos: int, force: bool = False, tick=None,
                    verify: bool = False, ds=None) -> list[ShardResult]:
    """Label one shard with ``stages`` (resolved, dependencies first) in one pass over its frames; one
    ``ShardResult`` per stage, in ``stages`` order. Never raises for data problems ('failed' results).
    ``tick(n)``: progress in frames of the shard (each frame once, whatever the number of stages)."""
    t0 = time.time()
    ds = open_dataset(root) if ds is None else ds
    info = ds.manifest.shards[shard_pos]
    status: dict[str, tuple[str, str | None]] = {}
    todo = _todo(ds, stages, config, info, force, verify)
    for stage in stages:
        if stage not in todo:
            tidy_temps(label_shard_path(ds.root, stage, info.name))  # a killed redo of a finished shard
            status[stage] = ("skipped", None)
    if todo:
        with ExitStack() as locks:
            for stage in todo:  # stage order: two runners never hold one lock each and wait for the other's
                dest = label_shard_path(ds.root, stage, info.name)
                if locks.enter_context(exclusive_lock(dest, f"shard {info.name} of stage {stage}")):
                    remove_stale_temps(dest)
            again = _todo(ds, todo, config, info, force, verify)  # another runner may have finished some
            status.update({s: ("skipped", None) for s in todo if s not in again})
            status.update(_pass(ds, again, config, shard_pos, tick))
    elif tick:
        tick(info.frames)
    seconds = time.time() - t0
    return [ShardResult(s, info.name, status[s][0], info.frames, seconds, status[s][1]) for s in stages]


def _fail(e: Exception, stage: str, shard: str) -> str:
    log.debug("stage %s shard %s failed:\n%s", stage, shard, traceback.format_exc())
    return str(e.within(f"shard {shard} of stage {stage}")) if isinstance(e, WriteError) else str(e)


def _pass(ds, todo: list[str], config, shard_pos: int, tick) -> dict[str, tuple[str, str | None]]:
    """Run ``todo`` over the shard's frames once (the caller holds their locks); {stage: (status, error)}."""
    info = ds.manifest.shards[shard_pos]
    failed: dict[str, str] = {}
    with ExitStack() as stack:
        plans: dict[str, _StagePlan] = {}
        for stage in todo:
            bad = [d for d in STAGES[stage].dependencies(config.sections(STAGES[stage].sections)) if d in failed]
            if bad:
                failed[stage] = f"stage '{bad[0]}' failed on this shard"
                continue
            try:
                plans[stage] = _StagePlan(ds, stage, config, shard_pos, set(todo), stack)
            except Exception as e:
                failed[stage] = _fail(e, stage, info.name)
        columns = sorted({c for p in plans.values() for c in p.spec.columns}, key=_column_order)
        done = 0
        frames = ds.shard(shard_pos).iter_frames(columns=tuple(columns)) if plans else ()  # nothing to read
        try:
            for i, frame in enumerate(frames):
                made = {SHARED: FrameShared(frame)}  # eligibility and box association, once per frame
                for stage, plan in plans.items():
                    if stage in failed:
                        continue
                    if any(d in failed for d in plan.deps):
                        failed[stage] = f"stage '{next(d for d in plan.deps if d in failed)}' failed on this shard"
                        continue
                    try:
                        made[stage] = plan.label(i, frame, made)
                        plan.writer.add(made[stage])
                    except Exception as e:
                        failed[stage] = _fail(e, stage, info.name)
                done += 1
                if tick:
                    tick(1)
        except Exception as e:  # the frame shard itself: every stage still running fails with the cause
            failed.update({s: _fail(e, s, info.name) for s in plans if s not in failed})
        for stage, plan in plans.items():  # dependencies first: their checksums go into their dependents' records
            if stage in failed or any(d in failed for d in plan.deps):
                failed.setdefault(stage, "a stage it depends on failed on this shard")
                continue
            try:
                record = None
                if not plan.record_known:  # its dependencies' shards were written in this pass: known now
                    meta = _expected(ds, stage, config, info)[-1]
                    record = (meta["config"], meta["code_version"], meta["inputs"])
                plan.writer.commit(record)
            except Exception as e:
                failed[stage] = _fail(e, stage, info.name)
    if tick and done < info.frames:
        tick(info.frames - done)
    return {s: ("failed", failed[s]) if s in failed else ("done", None) for s in todo}


def _column_order(name: str) -> int:
    from ...data.schema import FRAMES_SCHEMA

    return FRAMES_SCHEMA.names.index(name)
