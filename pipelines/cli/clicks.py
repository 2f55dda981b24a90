"""``mwsis clicks``: point supervision (one click per object, WISE) beside the boxes."""
from __future__ import annotations

import click


@click.command("clicks")
@click.option("--data", type=click.Path(exists=True, file_okay=False), required=True, help="Dataset directory.")
@click.option("--from", "how", type=click.Choice(["coco", "box-centre", "mask-centre", "mask-random"]), required=True,
              help="coco: import a COCO-style keypoints file (--coco). box-centre: each box's centre (WISE's KITTI "
                   "protocol). mask-centre: the true mask's distance-transform maximum (WISE's COCO protocol, an "
                   "oracle). mask-random: a random pixel of the true mask (human-like; --seed).")
@click.option("--coco", "coco_path", type=click.Path(exists=True, dir_okay=False), default=None,
              help="The keypoints JSON for --from coco (format: docs/data.md, 'Clicks').")
@click.option("--source", default="coco", show_default=True, help="Name of an imported click set.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of mask-random clicks.")
@click.option("--no-progress", is_flag=True, help="Hide the progress bar.")
def clicks_cmd(data, how, coco_path, source, seed, no_progress):
    """Write a click set into DATASET/clicks/<source>/ (one shard per frame shard): imported, or derived from
    the boxes or true masks for experiments. Derived sets are named box-centre, mask-centre and
    mask-random-s<seed>; rerunning rewrites the set."""
    from ..labels.clicks import derive_clicks, import_coco_clicks

    if how == "coco":
        if coco_path is None:
            raise click.UsageError("--from coco needs --coco PATH")
        n = import_coco_clicks(data, coco_path, source, show_progress=not no_progress)
        click.echo(f"{data}: click set '{source}', {n} clicks imported from {coco_path}")
        return
    name = derive_clicks(data, how, seed, show_progress=not no_progress)
    click.echo(f"{data}: click set '{name}' written (clicks/{name}/)")

