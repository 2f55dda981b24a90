"""A TWIST round in the 3D trainer (Chu et al., CVPR 2023, §3; extensions.md §3.3): the hook that turns the
EMA teacher's predictions into proposal-level pseudo labels, beside the PVC loop and exclusive with it.

Per round, over this rank's shards:

1. the teacher predicts every frame; its vote-shifted clustering (``infer.cluster_instances``, the per-class
   CCL standing in for TWIST's BFS) gives the proposals (Module A);
2. on the fully labelled frames, the re-correction network Ψ (``train3d.twist``) trains on the proposals and
   their box mutations, towards each one's IoU with its true instance and that instance's class (Module B);
3. on the other frames, Ψ scores each proposal, and the certain ones rewrite their points' labels and centres
   (``pseudolabel.twist_update.proposal_update``, Module C); the rest are ignored, or keep the trainer's
   current labels (``twist.uncovered: keep``, mwsis's hybrid mode);
4. the result is written as ``labels/twist`` (scored shards: centres and certainties), which training reads
   from then on. The labelled frames keep training on their ground truth.
"""
from __future__ import annotations

import logging
from dataclasses import replace

import numpy as np
import torch

from ...data.frame import BACKGROUND, CLASS_NAMES, IGNORE, NUM_CLASSES
from ...data.label_store import LabelShard, write_label_shard
from ...data.schema.labels import FrameLabels
from ...pseudolabel.twist_update import (mutate_box, naive_update, proposal_quality, proposal_targets,
                                          proposal_update)
from ...train3d.infer import cluster_instances, predict_semantic
from ...train3d.losses import decode_votes
from ...train3d.model import make_batch
from ...train3d.twist import augment_proposals, recorrection_loss
from ... import __version__
from .samples3d import GROUND_TRUTH, frame_sample
from .trainer import Hook

log = logging.getLogger(__name__)

TWIST_STAGE = "twist"


@torch.no_grad()
def _teacher_proposals(model, sample, infer_cfg, device) -> dict:
    """The teacher's view of one sample: proposals (n,) (0 none), shifted positions (n, 3), features (n, F)."""
    batch = make_batch([{"xyz": sample.xyz, "intensity": sample.intensity, "elongation": sample.elongation}], device)
    out = model.outputs(batch, with_features=True)
    probs = torch.sigmoid(out["sem_logits"].float()).cpu().numpy()
    offsets = decode_votes(out["votes"].float()).cpu().numpy()
    semantic = predict_semantic(probs, infer_cfg.score_thresh)
    instance, _, _ = cluster_instances(sample.xyz, semantic, offsets, probs, infer_cfg)
    cls = np.clip(semantic.astype(np.int64), 0, offsets.shape[1] - 1)
    shifted = sample.xyz + offsets[np.arange(len(cls)), cls]
    return {"proposal": instance, "shifted": shifted, "features": out["features"].float().cpu(), "probs": probs}


def _members(proposal: np.ndarray) -> list[np.ndarray]:
    """The point indices of proposals 1..K, grouped with one sort (not one full-array mask per proposal)."""
    k = int(proposal.max(initial=0))
    order = np.argsort(proposal, kind="stable")
    bounds = np.searchsorted(proposal[order], np.arange(1, k + 2))
    return [order[bounds[j]:bounds[j + 1]] for j in range(k)]


def _proposal_rows(sample, view, rng, mutation) -> list[tuple[np.ndarray, float, int]]:
    """(member indices, IoU target, class target) of each proposal of a labelled sample and of one box mutation
    of it (Module B's augmentation)."""
    iou, cls = proposal_targets(view["proposal"], sample.gt_semantic, sample.gt_instance)  # all at once
    rows = []
    for j, members in enumerate(_members(view["proposal"])):
        if not len(members):
            continue
        rows.append((members, float(iou[j]), int(cls[j])))
        mutated = mutate_box(sample.xyz, members, rng.uniform(*mutation))  # may overlap others: one at a time
        if not len(mutated):  # a flat proposal shrunk to nothing
            continue
        prop = np.zeros(len(sample.xyz), np.int32)
        prop[mutated] = 1
        m_iou, m_cls = proposal_targets(prop, sample.gt_semantic, sample.gt_instance)
        rows.append((mutated, float(m_iou[0]), int(m_cls[0])))
    return rows


def _psi_batch(view, rows, device):
    xyz = torch.as_tensor(np.concatenate([view["xyz"][m] for m, _, _ in rows]), dtype=torch.float32, device=device)
    feats = torch.cat([view["features"][torch.as_tensor(m)] for m, _, _ in rows]).to(device)
    owner = torch.as_tensor(np.concatenate([np.full(len(m), k) for k, (m, _, _) in enumerate(rows)]), device=device)
    return xyz, feats, owner


def train_psi(psi, optimizer, labelled: list[tuple], cfg, rng, device) -> dict[str, float]:
    """``cfg.psi_steps`` steps of Ψ on the labelled frames' proposal rows; ``labelled``: [(view, rows)]."""
    labelled = [(v, r) for v, r in labelled if r]
    if not labelled:
        return {}
    psi.train()
    last = {}
    for step in range(cfg.psi_steps):
        view, rows = labelled[step % len(labelled)]
        pick = [rows[k] for k in rng.choice(len(rows), size=min(cfg.psi_batch, len(rows)), replace=False)]
        xyz, feats, owner = _psi_batch(view, pick, device)
        g = torch.Generator().manual_seed(int(rng.integers(2 ** 31)))
        xyz = augment_proposals(xyz.cpu(), owner.cpu(), len(pick), g).to(device)
        cls_logits, cert_logits = psi(xyz, feats, owner, len(pick))
        losses = recorrection_loss(cls_logits, cert_logits, torch.tensor([r[1] for r in pick], device=device),
                                   torch.tensor([r[2] for r in pick], device=device), cfg.sem_iou_thresh)
        loss = losses["loss_sc"] + losses["loss_sem"]
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        last = {k: float(v.detach()) for k, v in losses.items()}
    return last


@torch.no_grad()
def score_proposals(psi, view, device) -> tuple[np.ndarray, np.ndarray]:
    """Ψ's (class (K,), certainty (K,)) for every proposal of one sample."""
    k = int(view["proposal"].max(initial=0))
    if k == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.float32)
    rows = [(m, 0.0, -1) for m in _members(view["proposal"])]
    psi.eval()
    cls_logits, cert_logits = psi(*_psi_batch(view, rows, device), k)
    return cls_logits.argmax(1).cpu().numpy(), torch.sigmoid(cert_logits).cpu().numpy()


def round_labels(view, cfg, psi=None, device=None, base_semantic=None, base_instance=None):
    """One sample's new labels under ``cfg.update`` (TWIST's ablation, extensions.md §3.4), in the sample's
    point order: ``recorrected`` (B + C: Ψ's class, proposals Ψ is certain of), ``proposals`` (C alone: every
    proposal, the teacher's class, scored by its mean top probability) or ``naive`` (per-point thresholds 0.4 /
    0.6 on the teacher's probabilities). ``base_*``: the labels uncovered points keep (hybrid), else ignored.
    Returns what ``proposal_update`` returns, and (class (K,), kept (K,) bool) per proposal for diagnostics
    (None for ``naive``, which has no proposal-level decision)."""
    probs, prop = view["probs"], view["proposal"]
    if cfg.update == "naive":
        return naive_update(probs, prop, view["shifted"], base_semantic=base_semantic,
                            base_instance=base_instance), None
    if cfg.update == "proposals":
        groups = _members(prop)
        cls = np.array([probs[m].mean(0).argmax() for m in groups], np.int64).reshape(len(groups))
        sem, inst, centre, score = proposal_update(view["shifted"], prop, cls, np.ones(len(groups), np.float32),
                                                   0.5, base_semantic, base_instance)  # every proposal kept
        score[:len(groups)] = [probs[m].max(1).mean() for m in groups]  # kept proposals come first
        return (sem, inst, centre, score), (cls, np.ones(len(groups), bool))
    cls, cert = score_proposals(psi, view, device)
    return (proposal_update(view["shifted"], prop, cls, cert, cfg.certainty_thresh, base_semantic, base_instance),
            (cls, cert > cfg.certainty_thresh))


def frame_update(sample, view, cfg, psi=None, device=None, base=None) -> tuple[FrameLabels, tuple | None]:
    """``round_labels`` on one sample, back in the frame's point order (points the model does not see:
    ignored, or their base label in the hybrid mode), and the per-proposal decisions."""
    n = sample.num_points
    keep_base = base is not None and cfg.uncovered == "keep"
    (sem_s, inst_s, centre, score), decisions = round_labels(
        view, cfg, psi, device, base.semantic[sample.point_index] if keep_base else None,
        base.instance[sample.point_index] if keep_base else None)
    semantic = np.full(n, IGNORE, np.int8)
    instance = np.zeros(n, np.int32)
    if keep_base:  # outside the model's points, too
        semantic[:] = np.where(base.semantic == BACKGROUND, BACKGROUND, IGNORE)
    semantic[sample.point_index], instance[sample.point_index] = sem_s, inst_s
    return FrameLabels(sample.frame_id, semantic=semantic, instance=instance, centre=centre,
                       inst_score=score), decisions


def _unchanged(frame, base: FrameLabels | None) -> FrameLabels:
    """A frame the round does not relabel, in the scored layout: its base labels (ignored without any)."""
    if base is None:
        n = len(frame.points)
        return FrameLabels(frame.frame_id, np.full(n, IGNORE, np.int8), np.zeros(n, np.int32),
                           centre=np.zeros((0, 3), np.float32), inst_score=np.zeros(0, np.float32))
    k = int(base.instance.max(initial=0))
    return FrameLabels(frame.frame_id, base.semantic, base.instance, centre=np.full((k, 3), np.nan, np.float32),
                       inst_score=np.ones(k, np.float32))


class TwistHook(Hook):
    """From ``twist.start_epoch`` on, every ``twist.every`` epochs: a TWIST round over this rank's shards."""

    def after_epoch(self, trainer, epoch: int) -> None:
        cfg = trainer.cfg.twist
        start = trainer.cfg.epochs // 2 if cfg.start_epoch is None else cfg.start_epoch
        done = epoch + 1
        if not cfg.enabled or done < start or (done - start) % max(cfg.every, 1) or done >= trainer.cfg.epochs:
            return
        run_twist_round(trainer, done)


def _view(teacher, frame, cfg, device):
    """(sample, teacher view) of a frame, or (None, None) when the model sees none of its points."""
    if not cfg.points.eligible(frame.points).any():
        return None, None
    s = frame_sample(frame, None, cfg.points)
    return s, {**_teacher_proposals(teacher, s, cfg.infer, device), "xyz": s.xyz}


def run_twist_round(trainer, rnd: int) -> None:
    """One round (module docstring); writes ``labels/twist`` for this rank's shards and trains on it. Frames
    are predicted one at a time (memory stays bounded on a fleet): first the labelled ones, for Ψ; then the
    others shard by shard, each relabelled and written as soon as its shard is done."""
    cfg, tcfg, ds, device = trainer.cfg, trainer.cfg.twist, trainer.ds, trainer.device
    teacher = trainer.teacher.model.eval()
    labelled = set(trainer.state.get("labelled_frames", ()))
    base_stage = cfg.labels  # the box labels: every round starts from them (not from the previous round's)
    rng = np.random.default_rng([cfg.seed, rnd, 7])
    mine = set(trainer.positions)
    rows = []
    # shard and frame order: the order Ψ's batches are drawn in; only B + C uses Ψ (the others skip its training)
    for fid in sorted(labelled, key=ds.locate) if tcfg.update == "recorrected" else ():
        pos, i = ds.locate(fid)
        if pos in mine:
            s, view = _view(teacher, ds.shard(pos).frame(i, images=False), cfg, device)
            if s is not None and s.gt_semantic is not None:
                rows.append((view, _proposal_rows(s, view, rng, tcfg.mutation)))
    losses = train_psi(trainer.psi, trainer.psi_optimizer, rows, tcfg, rng, device)
    del rows
    kept = total = 0
    quality = np.zeros((NUM_CLASSES, 4), np.int64)
    for pos in trainer.positions:
        info = ds.manifest.shards[pos]
        base = LabelShard(ds, base_stage, info.name) if base_stage != GROUND_TRUTH else None
        out = []
        for i, frame in enumerate(ds.shard(pos).iter_frames(images=False)):
            b = base.labels(i) if base is not None else None
            s, view = (None, None) if frame.frame_id in labelled else _view(teacher, frame, cfg, device)
            if s is None:  # trained on its ground truth, or not seen at all
                out.append(_unchanged(frame, b))
                continue
            labels, decisions = frame_update(s, view, tcfg, trainer.psi, device, b)
            out.append(labels)
            if decisions is None:
                continue
            cls, keep = decisions
            kept, total = kept + int(keep.sum()), total + len(keep)
            if s.gt_semantic is not None:  # diagnostics where the data has truth (synthetic, benchmarks)
                quality += proposal_quality(view["proposal"], cls, keep, s.gt_semantic, s.gt_instance, NUM_CLASSES)
        write_label_shard(ds.root, TWIST_STAGE, info.name, out, {"twist": {"round": rnd, "base": base_stage}},
                          __version__, {"frames": info.sha256}, scored=True)
    trainer.state["labels"] = TWIST_STAGE
    trainer.state.setdefault("twist_rounds", []).append(rnd)
    # per class (Psi's): kept, kept matching a true instance (IoU >= 0.5), dropped, dropped matching
    trainer.state.setdefault("twist_quality", {})[rnd] = {
        name: dict(zip(("kept", "kept_true", "dropped", "dropped_true"), map(int, quality[c])))
        for c, name in enumerate(CLASS_NAMES)}
    log.info("twist round %d: %d of %d proposals kept; psi %s", rnd, kept, total, losses)


def label_variants(model, psi, psi_optimizer, ds, cfg, labelled: set[str], device, seed: int = 0) -> dict:
    """TWIST's ablation on one teacher (extensions.md §3.4): for every frame outside ``labelled``, the labels of
    the naive point-threshold update (PVC's 0.4 / 0.6), of Module C alone (every proposal kept, the teacher's
    class, score = its mean class probability) and of B + C (Ψ trained here on the labelled frames, then
    certain proposals only). Returns {variant: [(frame, FrameLabels)]} in the sample's point order."""
    tcfg = cfg.twist
    rng = np.random.default_rng([seed, 11])
    views = [(f, *_view(model, f, cfg, device)) for f in ds.iter_frames(images=False)]
    views = [(f, s, v) for f, s, v in views if s is not None]
    rows = [(v, _proposal_rows(s, v, rng, tcfg.mutation)) for f, s, v in views if f.frame_id in labelled]
    train_psi(psi, psi_optimizer, rows, tcfg, rng, device)
    out = {}
    for variant, update in (("naive", "naive"), ("C", "proposals"), ("B+C", "recorrected")):
        vcfg = replace(tcfg, update=update)
        out[variant] = [(frame, s, round_labels(v, vcfg, psi, device)[0]) for frame, s, v in views
                        if frame.frame_id not in labelled]
    return out
