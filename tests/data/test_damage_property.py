"""Issue 12, property style: random byte flips, truncations and duplications of every kind of file of a
labelled dataset. Every command then either succeeds with byte-identical output or fails naming the damaged
file; it never exits 0 with different output."""
from __future__ import annotations

import json
import random
import shutil

import pytest
from click.testing import CliRunner

from mwsis.pipelines.cli.main import main
from mwsis.pipelines.labels.runner import run_stages

CASES = 18  # seeded: the same damage every run


@pytest.fixture(scope="module")
def reference(tiny_dataset, tmp_path_factory):
    ref = tmp_path_factory.mktemp("ref") / "ds"
    shutil.copytree(tiny_dataset, ref)
    assert all(r.status == "done" for r in run_stages(ref, ["spg"], show_progress=False))
    return ref, _outputs(ref, tmp_path_factory.mktemp("out"))[1]


def _labels(root):
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted((root / "labels").rglob("*.parquet"))}


def _outputs(root, tmp):
    """(exit codes and messages, outputs): ``pseudolabels`` (the label shards) and ``eval-labels`` (its JSON)."""
    runner = CliRunner()
    r1 = runner.invoke(main, ["pseudolabels", "--data", str(root), "--stages", "spg", "--no-eval"])
    r2 = runner.invoke(main, ["eval-labels", "--data", str(root), "--stages", "spg", "--no-variants", "--json",
                              str(tmp / "q.json")])
    q = json.loads((tmp / "q.json").read_text()) if r2.exit_code == 0 else None
    return [(r1.exit_code, r1.output), (r2.exit_code, r2.output)], {"labels": _labels(root), "eval": q}


def _targets(root):
    files = [root / "manifest.json", *sorted((root / "frames").glob("*.parquet")),
             *sorted((root / "labels").rglob("*.parquet")), *sorted((root / "labels").rglob(".*.sha256"))]
    return [f for f in files if f.is_file()]


def _damage(path, rng: random.Random) -> str:
    data = bytearray(path.read_bytes())
    kind = rng.choice(["flip", "truncate", "duplicate"])
    if kind == "flip":
        for _ in range(rng.randint(1, 16)):
            i = rng.randrange(len(data))
            data[i] ^= 1 << rng.randrange(8)
    elif kind == "truncate":
        data = data[: rng.randrange(len(data))]
    else:  # a chunk written twice, as a buggy copy would
        i = rng.randrange(len(data))
        j = min(len(data), i + rng.randint(1, 4096))
        data = data[:j] + data[i:j] + data[j:]
    path.write_bytes(bytes(data))
    return kind


@pytest.mark.parametrize("case", range(CASES))
def test_damaged_file_never_passes_silently(reference, tmp_path, case):
    ref, expected = reference
    root = tmp_path / "ds"
    shutil.copytree(ref, root)
    rng = random.Random(case)
    targets = _targets(root)
    # cover every kind of file: cases cycle through manifest, frame shards, label shards, stamps
    kinds = [[targets[0]], [t for t in targets if t.parent.name == "frames"],
             [t for t in targets if t.suffix == ".parquet" and "labels" in t.parts],
             [t for t in targets if t.name.endswith(".sha256")]]
    target = rng.choice(kinds[case % 4])
    kind = _damage(target, rng)
    results, outputs = _outputs(root, tmp_path)
    named = target.name if not target.name.endswith(".sha256") else None
    for code, text in results:
        if code == 0:
            continue
        assert "Traceback" not in text, text
        if named is not None:  # a stamp is not an input: damaging it can only force a rewrite
            assert named in text or (named == "manifest.json" and "manifest" in text), (kind, target, text)
        else:
            pytest.fail(f"{kind} of {target}: a damaged stamp must not fail a command:\n{text}")
    if all(code == 0 for code, _ in results):
        assert outputs == expected, f"{kind} of {target}: exit 0 with different output"
