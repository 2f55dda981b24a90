"""Cross-modal terms shared by the 2D and the 3D trainer (CSCS, MWSIS §3.4)."""
