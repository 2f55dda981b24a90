"""Point files of the sensor-folder layout (``formats_more.md`` §2.3) -> named float columns.

* ``.npy``: a structured array with named fields (self-describing), or a plain (N, C) array whose columns are
  ``dataset.yaml``'s ``points.columns``;
* ``.bin``: headerless little-endian ``points.bin_dtype`` values, ``points.columns`` per point;
* ``.pcd`` (ASCII, binary or binary_compressed): its FIELDS, read with pypcd4;
* ``.las`` / ``.laz``: x y z, ``intensity`` (uint16, scaled by 1/65535), ``return_number`` - 1 as ``return``,
  and the extra dimensions ``ring`` and ``elongation`` when present, read with laspy (and lazrs).

Fields other than :data:`~.layout.POINT_COLUMNS` are ignored. pypcd4 and laspy come with the ``formats`` extra.
"""
from __future__ import annotations

import io

import numpy as np

from .layout import POINT_COLUMNS, FolderFormatError, PointSchema


def _formats_extra(module: str, path: str):
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise FolderFormatError(path, "", f"reading this file needs {module}: pip install 'mwsis[formats]'") from None


def _named(fields: dict[str, np.ndarray], path: str, frame: str) -> dict[str, np.ndarray]:
    missing = [c for c in ("x", "y", "z") if c not in fields]
    if missing:
        raise FolderFormatError(path, missing[0], f"missing point field (the file has {', '.join(fields) or 'none'})",
                                frame)
    n = len(fields["x"])
    out = {}
    for name, col in fields.items():
        if name not in POINT_COLUMNS:
            continue
        col = np.asarray(col).reshape(-1)
        if len(col) != n:
            raise FolderFormatError(path, name, f"{len(col)} values for {n} points", frame)
        if col.dtype.kind not in "iuf":
            raise FolderFormatError(path, name, f"dtype {col.dtype} is not numeric", frame)
        out[name] = col.astype(np.float64)
        bad = ~np.isfinite(out[name])
        if bad.any():
            raise FolderFormatError(path, name, f"{int(bad.sum())} non-finite values (first: point "
                                    f"{int(np.argmax(bad))})", frame)
    if n == 0:
        raise FolderFormatError(path, "", "no points", frame)
    return out


def _columns(a: np.ndarray, schema: PointSchema, path: str, frame: str) -> dict[str, np.ndarray]:
    if a.ndim != 2 or a.shape[1] != len(schema.columns):
        raise FolderFormatError(path, "points.columns", f"array of shape {a.shape}, expected (N, "
                                f"{len(schema.columns)}) for columns {list(schema.columns)}", frame)
    return {c: a[:, i] for i, c in enumerate(schema.columns)}


def read_points(data: bytes, suffix: str, schema: PointSchema, path: str, frame: str) -> dict[str, np.ndarray]:
    """The named columns (float64, (N,)) of one point file's bytes; ``suffix`` picks the reader."""
    suffix = suffix.lower()
    if suffix == ".bin":
        item = np.dtype(schema.bin_dtype).newbyteorder("<")
        row = item.itemsize * len(schema.columns)
        if len(data) % row:
            raise FolderFormatError(path, "points.columns", f"{len(data)} bytes is not a multiple of {row} "
                                    f"({len(schema.columns)} {schema.bin_dtype} columns: {list(schema.columns)})",
                                    frame)
        return _named(_columns(np.frombuffer(data, item).reshape(-1, len(schema.columns)), schema, path, frame),
                      path, frame)
    if suffix == ".npy":
        try:
            a = np.load(io.BytesIO(data), allow_pickle=False)
        except (ValueError, OSError, EOFError) as e:
            raise FolderFormatError(path, "", f"not a readable .npy file ({e})", frame) from None
        if a.dtype.names:
            return _named({n: a[n] for n in a.dtype.names}, path, frame)
        return _named(_columns(a, schema, path, frame), path, frame)
    if suffix == ".pcd":
        pypcd4 = _formats_extra("pypcd4", path)
        try:
            pc = pypcd4.PointCloud.from_fileobj(io.BytesIO(data))
            arr = pc.pc_data
        except Exception as e:  # pypcd4 raises many types (ValueError, KeyError, pydantic errors) on bad headers
            raise FolderFormatError(path, "", f"not a readable PCD file ({type(e).__name__}: {e})", frame) from None
        return _named({n: arr[n] for n in arr.dtype.names}, path, frame)
    if suffix in (".las", ".laz"):
        laspy = _formats_extra("laspy", path)
        try:
            las = laspy.read(io.BytesIO(data))
        except Exception as e:  # laspy raises LaspyException and plain errors on damaged headers or chunks
            raise FolderFormatError(path, "", f"not a readable LAS/LAZ file ({type(e).__name__}: {e})",
                                    frame) from None
        fields = {"x": np.asarray(las.x), "y": np.asarray(las.y), "z": np.asarray(las.z),
                  "intensity": np.asarray(las.intensity, np.float64) / 65535.0,
                  "return": np.asarray(las.return_number, np.float64) - 1.0}
        extra = set(las.point_format.extra_dimension_names)
        fields.update({n: np.asarray(las[n]) for n in ("ring", "elongation") if n in extra})
        return _named(fields, path, frame)
    raise FolderFormatError(path, "lidar", f"unknown point file type {suffix!r} (use .npy, .bin, .pcd, .las or .laz)",
                            frame)
