"""What a converter command prints when it is done (``mwsis convert kitti|folder``)."""
from __future__ import annotations

import click


def echo_result(out, res) -> None:
    """Print the shard counts of a ``shards.WriteResult``; list the failed units and exit 1 when any failed."""
    m = res.manifest
    click.echo(f"{out}: {sum(s.frames for s in m.shards)} frames in {len(m.shards)} shards "
               f"({len(res.written)} written, {len(res.skipped)} already done)")
    if res.failed:
        for unit, err in sorted(res.failed.items()):
            click.echo(f"FAILED {unit}: {err}", err=True)
        raise click.ClickException(f"{len(res.failed)} of {len(res.failed) + len(m.shards)} shards failed; "
                                   "fix the files named above and rerun the same command to resume")
