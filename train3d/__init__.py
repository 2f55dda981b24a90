"""3D SparseUNet segmentor with vote head, PVC and RSC (MWSIS Sec. 3.3)."""
