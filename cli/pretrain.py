"""``wsk pretrain``: the VGG-16 trunk on the generated corpus (the offline stand-in for ImageNet)."""

import os
import sys

import click

from wsk.recipes import PretrainConfig

_DEFAULTS = PretrainConfig()


@click.command("pretrain")
@click.argument("out", type=click.Path(file_okay=False))
@click.option("--images", type=click.IntRange(64), default=_DEFAULTS.images, show_default=True,
              help="Corpus training images.")
@click.option("--val-images", type=click.IntRange(16), default=_DEFAULTS.val_images, show_default=True,
              help="Held-out corpus images (the mAP of the card).")
@click.option("--size", type=click.IntRange(32), default=_DEFAULTS.size, show_default=True,
              help="Image side (HCP's input size).")
@click.option("--width", type=float, default=_DEFAULTS.width, show_default=True, help="VGG-16 width.")
@click.option("--epochs", type=click.IntRange(1), default=_DEFAULTS.epochs, show_default=True)
@click.option("--batch-size", type=click.IntRange(1), default=_DEFAULTS.batch_size, show_default=True)
@click.option("--lr", type=float, default=_DEFAULTS.lr, show_default=True, help="Peak learning rate.")
@click.option("--seed", type=int, default=_DEFAULTS.seed, show_default=True, help="Corpus and init seed.")
@click.option("--jobs", type=click.IntRange(1), default=2, show_default=True,
              help="Processes generating the corpus.")
@click.option("--corpus", type=click.Choice(["basic", "broad"]), default="basic", show_default=True,
              help="basic: 28 shape/texture classes on 12 skimage photographs and clutter (the built-in "
                   "card's); broad: 39 classes, more photographs, occluders, wider scale (wsk.data.corpus).")
@click.option("--backgrounds", type=click.Path(exists=True, file_okay=False), default=None,
              help="A folder of extra background photographs for the broad corpus (.jpg/.jpeg/.png).")
@click.option("--init", default=None,
              help="Start from this trunk (a trunk.keras or a zoo trunk card, e.g. hcp_vgg16.corpus64) "
                   "instead of random weights; fc8 keeps the classes both corpora have.")
def pretrain(out, images, val_images, size, width, epochs, batch_size, lr, seed, jobs, corpus, backgrounds, init):
    """Pretrain the VGG-16 trunk as a multi-label classifier of the generated corpus.

    Image-level labels only. Writes OUT/trunk.keras and OUT/trunk.json (the held-out mAP);
    `python benchmarks/make_trunk_card.py OUT NAME` turns it into a zoo card.
    """
    # deferred on purpose: `wsk --help` stays fast (the stages import TensorFlow)
    from wsk.pretrain import pretrain_trunk

    photos = ()
    if backgrounds is not None:
        if corpus != "broad":
            raise click.UsageError("--backgrounds is for the broad corpus (--corpus broad)")
        photos = tuple(sorted(os.path.join(os.path.abspath(backgrounds), name) for name in os.listdir(backgrounds)
                              if name.lower().endswith((".jpg", ".jpeg", ".png"))))
        if not photos:
            raise click.UsageError(f"no .jpg/.jpeg/.png photographs in {backgrounds}")
    config = PretrainConfig(images=images, val_images=val_images, size=size, width=width, epochs=epochs,
                            batch_size=batch_size, lr=lr, seed=seed)
    pretrain_trunk(out, config, jobs=jobs, command="wsk pretrain " + " ".join(sys.argv[2:]),
                   printer=click.echo, corpus=corpus, backgrounds=photos, init=init)


COMMANDS = [pretrain]
