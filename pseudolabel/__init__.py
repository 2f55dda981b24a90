"""3D pseudo labels from 2D boxes (MWSIS Sec. 3.3): frustum association, CCL, DCS, SPG, SAM prompts."""
