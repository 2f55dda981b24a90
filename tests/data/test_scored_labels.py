"""Label shards with instance centres and scores (LABELS_SCHEMA_SCORED): written, verified on read, ranked by
eval-labels; shards without them keep LABELS_SCHEMA."""
from __future__ import annotations

import shutil

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from mwsis.data.label_store import LabelShard, label_shard_path, write_label_shard
from mwsis.data.schema.labels import CENTRE, INST_SCORE, LABELS_SCHEMA, FrameLabels, labels_to_table
from mwsis.data.store import ShardError, open_dataset
from mwsis.pseudolabel.metrics import instances_from_labels
from mwsis.train3d.losses import instance_centres


def _gt_labels(frame, scores):
    """The frame's true labels as a scored stage would write them, one score per instance id."""
    sem = frame.gt.point_semantic.astype(np.int8)
    ids, inst = np.unique(frame.gt.point_instance, return_inverse=True)
    inst = (inst + (0 if ids[0] == 0 else 1)).astype(np.int32)
    k = int(inst.max())
    centre = np.full((k, 3), np.nan, np.float32)
    centre[0] = [1, 2, 3]
    return FrameLabels(frame.frame_id, semantic=sem, instance=inst, centre=centre,
                       inst_score=np.asarray(scores(k), np.float32))


def _first_shard(tiny_dataset, tmp_path, scores, edit=lambda rows: None):
    """A copy of the tiny dataset whose first shard has a scored ``twist`` label shard (``edit`` may damage it)."""
    ds_root = tmp_path / "ds"
    shutil.copytree(tiny_dataset, ds_root)
    ds = open_dataset(ds_root)
    info = ds.manifest.shards[0]
    rows = [_gt_labels(f, scores) for f in ds.shard(0).iter_frames(images=False)]
    edit(rows)
    write_label_shard(ds_root, "twist", info.name, rows, {}, "test", {"frames": info.sha256}, scored=True)
    return ds, info.name, rows


def test_scored_shards_round_trip_and_others_keep_their_schema(tiny_dataset, tmp_path):
    ds, shard, rows = _first_shard(tiny_dataset, tmp_path, lambda k: np.linspace(1, 0.1, k))
    ds_root = ds.root
    back = list(LabelShard(ds, "twist", shard))
    assert back[0].centre.shape == rows[0].centre.shape and back[0].centre[0].tolist() == [1, 2, 3]
    assert np.isnan(back[0].centre[1:]).all() and back[0].inst_score.tolist() == pytest.approx(rows[0].inst_score)
    assert {CENTRE, INST_SCORE} <= set(pq.read_schema(label_shard_path(ds_root, "twist", shard)).names)
    plain = FrameLabels("x", semantic=np.zeros(3, np.int8), instance=np.zeros(3, np.int32))
    assert labels_to_table(plain).schema.names == LABELS_SCHEMA.names  # other stages: unchanged columns
    with pytest.raises(ValueError, match="LABELS_SCHEMA_SCORED"):
        labels_to_table(rows[0])


def test_a_scored_row_without_a_score_per_instance_is_refused_on_read(tiny_dataset, tmp_path):
    def drop_last_centre(rows):
        rows[0].centre = rows[0].centre[:-1]

    ds, shard, _ = _first_shard(tiny_dataset, tmp_path, lambda k: np.ones(max(k - 1, 0)), drop_last_centre)
    with pytest.raises(ShardError, match=r"twist.*row 0: frame .*column 'centre' holds \d+ instances"):
        LabelShard(ds, "twist", shard).labels(0)


def test_instances_rank_by_their_inst_score():
    sem = np.array([0, 0, 1, 1, 3], np.int8)
    inst = np.array([2, 2, 1, 1, 0], np.int32)
    s = instances_from_labels(sem, inst, 3, inst_score=np.array([0.2, 0.9]))
    assert s.classes.tolist() == [1, 0] and s.scores.tolist() == [0.2, 0.9]  # instance 1 (class 1) first
    assert instances_from_labels(sem, inst, 3).scores.tolist() == [1.0, 1.0]


def test_given_centres_replace_the_mean_where_set():
    xyz = torch.tensor([[0.0, 0, 0], [2, 0, 0], [5, 5, 5], [7, 5, 5], [9, 9, 9]])
    inst = torch.tensor([1, 1, 2, 2, 0])
    given = torch.tensor([[1.0, 1, 1], [1, 1, 1], [float("nan")] * 3, [float("nan")] * 3, [3.0, 3, 3]])
    c = instance_centres(xyz, inst, given=given)
    assert c[:2].tolist() == [[1, 1, 1]] * 2 and c[2:4].tolist() == [[6, 5, 5]] * 2 and torch.isnan(c[4]).all()


def test_eval_labels_ranks_a_scored_stage_by_its_scores(tiny_dataset, tmp_path):
    """The same labels (truth plus one false vehicle per frame) score a higher AP when the false instance is
    ranked last than when it is ranked first: eval-labels uses inst_score, not 1.0 for all."""
    from mwsis.pipelines.labels.evaluate import evaluate_labels
    from mwsis.pseudolabel.points import PointSetConfig

    ds_root = tmp_path / "ds"
    shutil.copytree(tiny_dataset, ds_root)
    ds = open_dataset(ds_root)
    ap = {}
    for junk_score in (0.01, 0.99):
        for info, shard in zip(ds.manifest.shards, ds.iter_shards()):
            rows = []
            for f in shard.iter_frames(images=False):
                lab = _gt_labels(f, lambda k: np.full(k, 0.5))
                bg = np.flatnonzero((f.gt.point_semantic == 3) & PointSetConfig().evaluated(f.points))[:40]
                k = len(lab.inst_score)
                lab.semantic[bg], lab.instance[bg] = 0, k + 1
                lab.centre = np.concatenate([lab.centre, np.full((1, 3), np.nan, np.float32)])
                lab.inst_score = np.r_[lab.inst_score, junk_score].astype(np.float32)
                rows.append(lab)
            write_label_shard(ds_root, "twist", info.name, rows, {}, "test", {"frames": info.sha256}, scored=True)
        res = evaluate_labels(ds_root, ["twist"], show_progress=False)["twist"]
        ap[junk_score] = res["ap50"]
        assert res["ap_score_convention"].startswith("each pseudo instance scores")
    assert ap[0.01] > ap[0.99], ap
