"""``wsk zoo list|info|fetch|add``: the named models of ``wsk.zoo``."""

import json

import click


def _miou(card):
    metrics = card.get("metrics") or {}
    return "-" if metrics.get("miou") is None else f"{100 * metrics['miou']:.1f}"


def _weights(card):
    weights = card["weights"]
    return "shipped" if weights.get("url") is None else weights["url"]


@click.group("zoo")
def zoo():
    """Named pretrained models: `wsk.zoo.load(NAME)` in Keras code, `wsk export NAME OUT` for serving."""


@zoo.command("list")
def list_models():
    """A table of every model: built-in cards, then those of your registry."""
    # deferred on purpose: `wsk --help` stays fast (the stages import TensorFlow)
    from wsk import registry

    cards = registry.all_cards()
    rows = [("name", "task", "classes", "mIoU %", "source", "weights")]
    rows += [(c["name"], c["task"], str(len(c["class_names"])), _miou(c), c["source"], _weights(c))
             for c in cards.values()]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        click.echo("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())
    if not cards:
        click.echo("(no models)")
    click.echo(f"user registry: {registry.registry_path()}", err=True)


@zoo.command("info")
@click.argument("name")
def info(name):
    """The card of model NAME, as JSON."""
    # deferred on purpose: `wsk --help` stays fast (the stages import TensorFlow)
    import wsk.zoo
    from wsk.registry import card_json

    click.echo(card_json(wsk.zoo.info(name)))


@zoo.command("fetch")
@click.argument("name")
@click.option("--force", is_flag=True, help="Download again even if a verified copy is cached.")
def fetch(name, force):
    """Download the weights of NAME into the Keras cache (sha256-checked) and print their path."""
    # deferred on purpose: `wsk --help` stays fast (the stages import TensorFlow)
    import wsk.zoo

    click.echo(wsk.zoo.fetch(name, force=force))


def _parse_args(pairs):
    """``KEY=VALUE`` strings -> dict; values are JSON when they parse (0.125, 21, null), else text."""
    # deferred on purpose: `wsk --help` stays fast (the stages import TensorFlow)
    from wsk.errors import WskError

    args = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.isidentifier():
            raise WskError(f"--arg takes KEY=VALUE, got {pair!r}")
        try:
            args[key] = json.loads(value)
        except ValueError:
            args[key] = value
    return args


@zoo.command("add")
@click.argument("name")
@click.argument("source")
@click.option("--sha256", default=None, help="Expected sha256 of the file (required for a URL).")
@click.option("--classes", type=click.Path(exists=True), default=None,
              help="Dataset root (or its classes.txt) giving the class names; default: those of "
                   "the `wsk train` sidecar (model.json) beside SOURCE, else VOC's when the count fits.")
@click.option("--builder", type=click.Choice(["deeplab_largefov", "hcp"]), default=None,
              help="Rebuild with this wsk.models builder on load (the weights must fit it); "
                   "default: the sidecar's architecture; without either the whole .keras model is "
                   "loaded with safe_mode.")
@click.option("--arg", "builder_args", multiple=True, metavar="KEY=VALUE",
              help="A builder argument, e.g. --arg width=0.125 --arg num_classes=6 (repeatable).")
@click.option("--recipe", default=None, help="Recipe the model was trained with (demo, paper).")
@click.option("--miou", type=float, default=None, help="Measured mIoU in percent.")
@click.option("--miou-command", default=None, help="The command that measured --miou.")
@click.option("--licence", default=None, help="Licence of the weights.")
@click.option("--description", default="", help="One line about the model.")
@click.option("--overwrite", is_flag=True, help="Replace a model of the same name in your registry.")
def add(name, source, sha256, classes, builder, builder_args, recipe, miou, miou_command, licence,
        description, overwrite):
    """Register SOURCE (a .keras file or an http(s)/file URL) as NAME in your zoo registry.

    The registry is $WSK_ZOO_REGISTRY or <keras home>/wsk_zoo.json; the weights are copied into
    the Keras cache. Then `wsk.zoo.load(NAME)` and `wsk export NAME OUT` work.
    """
    # deferred on purpose: `wsk --help` stays fast (the stages import TensorFlow)
    import wsk.zoo
    from wsk.export import class_names_from
    from wsk.registry import registry_path

    names = None
    if classes is not None:
        names = class_names_from(classes)
    extra = {"recipe": recipe, "licence": licence, "description": description}
    if miou is not None:
        extra["metrics"] = {"miou": miou / 100.0, "command": miou_command}
    card = wsk.zoo.add(name, source, sha256=sha256, class_names=names,
                       builder=builder, builder_args=_parse_args(builder_args), overwrite=overwrite,
                       **extra)
    click.echo(f"added {card['name']} ({card['task']}, {len(card['class_names'])} classes) to "
               f"{registry_path()}")


COMMANDS = [zoo]
