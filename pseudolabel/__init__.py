"""3D pseudo labels from 2D boxes (MWSIS §3.3): one frame-level entry per stage (``frustum_frame``,
``ccl_frame``, ``frame_segments`` for DCS, ``spg_frame``, ``sam_frame``), the PVC vote and RSC. Pure functions
over numpy arrays; nothing here reads or writes files (``mwsis.pipelines.labels`` runs them over shards)."""
from .points import PointSetConfig
from .pvc import PVCConfig, pvc_vote
from .rsc import rsc_correct
from .sam import SAMConfig, sam_frame, sam_predictor
from .spg import SPGConfig, ccl_frame, frame_segments, frustum_frame, spg_frame

__all__ = ["PointSetConfig", "SPGConfig", "frustum_frame", "ccl_frame", "frame_segments", "spg_frame",
           "SAMConfig", "sam_frame", "sam_predictor", "PVCConfig", "pvc_vote", "rsc_correct"]
