"""``wsk data``: check a dataset, generate a synthetic one."""

import click

from wsk.cli.options import data_options, pop_data, source_of
from wsk.data.styles import STYLES, get_style
from wsk.errors import WskError


@click.group("data")
def data():
    """Check a dataset (VOC folder, labels file, COCO JSON), or generate a synthetic one."""


@data.command("check")
@data_options
def check(**kwargs):
    """Validate the dataset DATA and print a summary.

    DATA is a VOC folder (JPEGImages/, ImageSets/Segmentation or ImageSets/Main lists, and
    Annotations/ XML and/or SegmentationClass(Aug)/ masks, optionally classes.txt), a labels
    file (.csv with header image,labels[,split][,mask], or .jsonl) or a COCO instances .json
    with --images DIR. Prints images per split, images and objects per class, single- vs
    multi-label counts (and the paper's training set when Main/trainval.txt and train_aug exist).
    Every problem is listed with its file; the exit status is non-zero if any was found.
    """
    # deferred on purpose: `wsk --help` stays fast (the stages import TensorFlow)
    from wsk.data.check import check_source

    data = pop_data(kwargs)
    source = source_of(**data)
    report = check_source(source)
    click.echo(report.format())
    if source.kind == "coco":
        from wsk.data.check import source_splits
        from wsk.data.sources import open_dataset

        for split in source_splits(source):
            dropped = open_dataset(source, split).dropped
            if dropped:
                click.echo(f"{split}: {dropped} image(s) without a non-crowd object dropped")
    if not report.ok:
        raise WskError(f"{len(report.problems)} problem(s) found", data["data"])


@data.command("synth")
@click.argument("out", type=click.Path(file_okay=False))
@click.option("--images", "num_images", type=click.IntRange(min=4), default=200, show_default=True,
              help="Number of images (75% train, 25% val).")
@click.option("--size", type=click.IntRange(min=32), default=96, show_default=True,
              help="Side of the square images in pixels.")
@click.option("--seed", type=int, default=0, show_default=True,
              help="Random seed; the same seed writes the same files.")
@click.option("--style", type=click.Choice(sorted(STYLES)), default="shapes", show_default=True,
              help="shapes: the demo's five classes on procedural clutter; photo: five other "
                   "classes (one shape the pretraining corpus lacks) on photographs it never shows.")
@click.option("--force", is_flag=True, help="Replace a dataset already in OUT.")
def synth(out, num_images, size, seed, style, force):
    """Write a synthetic VOC-layout dataset to OUT (an absent or empty folder).

    Five shape classes with their own textures and random colours, 1-3 objects per
    image on cluttered backgrounds (or photographs: --style photo), masks with 255
    borders, XML boxes, train/val lists and classes.txt.
    """
    # deferred on purpose: `wsk --help` stays fast (the stages import TensorFlow)
    from wsk.data.synthetic import generate_dataset

    splits = generate_dataset(out, num_images=num_images, size=size, seed=seed, overwrite=force,
                              style=get_style(style))
    click.echo(f"Wrote {num_images} images of {size}x{size} to {out} "
               f"(train {len(splits['train'])}, val {len(splits['val'])}).")


COMMANDS = [data]
