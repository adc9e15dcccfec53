"""Turn a `wsk pretrain` output into the built-in pretrained-trunk card, measured again.

    python benchmarks/make_trunk_card.py PRETRAIN_OUT hcp_vgg16.corpus64
    python benchmarks/make_trunk_card.py PRETRAIN_OUT hcp_vgg16.broad64 \
        --background-source "github:pjreddie/darknet data/*.jpg" --background-licence "..."

The script loads ``PRETRAIN_OUT/trunk.keras`` into the ``wsk.models.hcp`` builder (which checks
that the card's builder reproduces it), regenerates the corpus's held-out split from the settings
recorded in ``trunk.json`` and measures the multi-label mAP on it (it must match the recorded one
within 0.005), then writes ``zoo/weights/NAME.keras`` and ``zoo/cards/NAME.json`` with the sha256,
the exact `wsk pretrain` command, its wall time and the held-out mAP.

A broad-corpus trunk trained with ``--backgrounds`` needs those photographs where ``trunk.json``
recorded them (they stay out of the package). The card records each one's name and sha256, and
where they came from and under which licence (``--background-source``, ``--background-licence``,
both required then).
"""

import os
import sys

import click

import wsk.zoo
from wsk import registry
from wsk.data.corpus import corpus_classes, generate_corpus
from wsk.errors import WskError
from wsk.io import atomic_path
from wsk.metrics import multilabel_average_precision
from wsk.models import preprocess_input
from wsk.models.saving import load_weights_file

TOLERANCE = 0.005


def held_out_map(model, config, backgrounds=None):
    """Multi-label mAP of ``model`` (an HCP) on the corpus's held-out images of ``config``, with the
    extra background photographs it recorded (or ``backgrounds``)."""
    backgrounds = config.get("backgrounds", ()) if backgrounds is None else backgrounds
    images, labels = generate_corpus(config["val_images"], config["size"], config["seed"],
                                     start=config["images"], corpus=config.get("corpus_kind", "basic"),
                                     backgrounds=backgrounds)
    scores = model.predict(preprocess_input(images)[:, None], batch_size=256, verbose=0)
    return multilabel_average_precision(labels, scores)[0]


def background_photos(paths, source, licence):
    """The card's record of the extra background photographs: name and sha256 of each, source, licence."""
    if not paths:
        return None
    if not source or not licence:
        raise WskError("the trunk was trained on extra background photographs: give --background-source "
                       "and --background-licence for its card")
    missing = [p for p in paths if not os.path.isfile(p)]
    if missing:
        raise WskError("the background photographs trunk.json records are needed to measure the held-out "
                       "split; missing", missing[0])
    return {"source": source, "licence": licence, "in_package": False,
            "files": [{"name": os.path.basename(p), "sha256": registry.sha256_of(p)} for p in paths]}


@click.command()
@click.argument("out", type=click.Path(exists=True, file_okay=False))
@click.argument("name")
@click.option("--background-source", default=None, help="Where the extra background photographs came from.")
@click.option("--background-licence", default=None, help="Their licence, as their source states it.")
def main(out, name, background_source, background_licence):
    registry.check_name(name)
    record = wsk.zoo.training_description(os.path.join(out, "trunk.keras"))
    if record is None:
        raise WskError("no trunk.json beside trunk.keras (made by `wsk pretrain`)", out)
    config, recorded = record.recipe, record.metrics
    kind = config.get("corpus_kind", "basic")
    classes = corpus_classes(kind)
    photos = background_photos(config.get("backgrounds", ()), background_source, background_licence)
    builder_args = {"num_classes": len(classes), "hypotheses": 1, "image_size": config["size"],
                    "width": config["width"]}
    model = wsk.zoo.build({"name": name, "builder": "hcp", "builder_args": builder_args})
    load_weights_file(model, os.path.join(out, "trunk.keras"), name)
    measured = held_out_map(model, config)
    if abs(measured - recorded["val_mAP"]) > TOLERANCE:
        raise WskError(f"trunk.json records mAP {recorded['val_mAP']:.4f}, the model measures {measured:.4f}", out)
    metrics = {"mAP": round(measured, 6), "split": "corpus held-out", "images": config["val_images"],
               "command": f"python benchmarks/make_trunk_card.py PRETRAIN_OUT {name}",
               "mAP_per_epoch": recorded["val_mAP_per_epoch"]}
    if photos:   # what anyone can measure again: the photographs stay out of the package
        metrics["mAP_without_extra_photographs"] = round(held_out_map(model, config, backgrounds=()), 6)
    weights_path = os.path.join(registry.WEIGHTS_DIR, f"{name}.keras")
    with atomic_path(weights_path) as tmp:
        model.save(tmp)
    os.chmod(weights_path, 0o644)
    weights = {"file": f"{name}.keras", "url": None, "sha256": registry.sha256_of(weights_path),
               "size": os.path.getsize(weights_path)}
    dataset = {"name": "corpus" if kind == "basic" else f"{kind} corpus",
               "generator": "wsk.data.corpus.generate_corpus", "corpus": kind,
               "images": config["images"], "val_images": config["val_images"], "size": config["size"],
               "seed": config["seed"], "classes": len(classes)}
    if photos:
        dataset["background_photographs"] = photos
    card = wsk.zoo.model_card(
        name, model, list(classes), weights, builder="hcp", builder_args=builder_args,
        recipe="pretrain", licence="Apache-2.0", dataset=dataset,
        metrics=metrics,
        training={"command": record.command, "seconds": round(recorded["seconds"]["total"], 1),
                  "config": config,
                  "machine": recorded.get("machine", "2 CPU cores")},   # the earlier cards' trunk.json had none
        description="VGG-16 trunk (width {w}) pretrained as a multi-label classifier of wsk's generated "
                    "{c} ({k} shape/texture classes, image-level labels only{b}): the offline stand-in "
                    "for ImageNet. Recipes start from it with backbone_weights=\"{n}\"."
                    .format(w=config["width"], c=dataset["name"], k=len(classes), n=name,
                            b=f"; objects also on crops of {len(photos['files'])} photographs" if photos else ""))
    card_path = registry.write_builtin_card(card)
    click.echo(f"{name}: held-out mAP {measured:.4f} (recorded {recorded['val_mAP']:.4f})")
    click.echo(f"wrote {weights_path} ({weights['size']} bytes, sha256 {weights['sha256']})")
    click.echo(f"wrote {card_path}")


if __name__ == "__main__":
    try:
        main(standalone_mode=True)
    except WskError as err:
        sys.exit(f"Error: {err}")
