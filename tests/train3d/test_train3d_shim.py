"""spconv CPU shim: sparse conv forward + backward on CPU (train3d/spconv_shim.py)."""
from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
import torch

from mwsis.train3d.spconv_shim import ensure_spconv_cpu, is_patched

_SPARSE_STEP = textwrap.dedent("""
    import torch
    import spconv.pytorch as sp
    {shim}
    torch.manual_seed(0)
    net = sp.SparseSequential(sp.SubMConv3d(4, 8, 3, indice_key="s1"), sp.SparseConv3d(8, 8, 3, stride=2))
    coords = torch.tensor([[0, 1, 1, 1], [0, 1, 2, 1], [0, 3, 3, 3], [1, 2, 2, 2]], dtype=torch.int32)
    feats = torch.randn(4, 4, requires_grad=True)
    y = net(sp.SparseConvTensor(feats, coords, [8, 8, 8], 2))
    y.features.square().sum().backward()
    assert torch.isfinite(feats.grad).all() and feats.grad.abs().sum() > 0
    print("BACKWARD_OK")
""")


def _run(shim: bool) -> subprocess.CompletedProcess:
    code = _SPARSE_STEP.format(shim="from mwsis.train3d.spconv_shim import ensure_spconv_cpu; ensure_spconv_cpu()"
                               if shim else "")
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)


def test_sparse_conv_backward_in_process():
    import spconv.pytorch as sp

    ensure_spconv_cpu()
    ensure_spconv_cpu()  # idempotent
    assert is_patched()
    from spconv.pytorch import cppcore, ops

    assert ops.get_current_stream is cppcore.get_current_stream
    conv = sp.SubMConv3d(2, 3, 3, indice_key="k")
    coords = torch.tensor([[0, 0, 0, 0], [0, 0, 0, 1], [0, 2, 2, 2]], dtype=torch.int32)
    feats = torch.randn(3, 2, requires_grad=True)
    out = conv(sp.SparseConvTensor(feats, coords, [4, 4, 4], 1))
    out.features.sum().backward()
    assert feats.grad is not None and torch.isfinite(feats.grad).all()
    assert conv.weight.grad is not None and conv.weight.grad.abs().sum() > 0


@pytest.mark.skipif(torch.cuda.is_available(), reason="the unpatched failure only exists without CUDA")
def test_shim_is_what_makes_cpu_backward_work():
    with_shim = _run(True)
    assert with_shim.returncode == 0 and "BACKWARD_OK" in with_shim.stdout, with_shim.stderr[-2000:]
    without = _run(False)
    assert without.returncode != 0 and "BACKWARD_OK" not in without.stdout
    assert "NVIDIA" in without.stderr or "CUDA" in without.stderr.upper()


def test_set_spconv_threads_reaches_spconv_libgomp():
    import ctypes

    from mwsis.train3d.spconv_shim import _bundled_libgomp, set_spconv_threads

    libs = _bundled_libgomp()
    if not libs:
        pytest.skip("this spconv build bundles no libgomp")
    lib = ctypes.CDLL(libs[0])
    before = lib.omp_get_max_threads()
    try:
        assert set_spconv_threads(1) and lib.omp_get_max_threads() == 1
        assert set_spconv_threads(3) and lib.omp_get_max_threads() == 3
    finally:
        set_spconv_threads(before)
