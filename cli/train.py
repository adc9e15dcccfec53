"""``wsk train hcp`` and ``wsk train seg``: the training stages of §4.2 (library: ``wsk.train``)."""

import click

from wsk.recipes import RECIPES
from wsk.train import STRATEGIES, VARIANTS

RECIPE_NAMES = tuple(RECIPES)
VARIANT_NAMES = tuple(VARIANTS)
STRATEGY_NAMES = STRATEGIES

_root = click.argument("root", type=click.Path(exists=True, file_okay=False))
_work = click.argument("work", type=click.Path(file_okay=False))
_recipe = click.option("--recipe", type=click.Choice(RECIPE_NAMES), default="paper", show_default=True,
                       help="paper: §4.2's numbers (VGG-16 from ImageNet); "
                            "demo: small and fast, for a CPU (the pretrained trunk); tiny: a smoke run.")
_force = click.option("--force", is_flag=True, help="Retrain even if the final model exists.")
_quiet = click.option("--quiet", is_flag=True, help="No per-step progress bar.")


@click.group("train")
def train():
    """Train the HCP classifier (§3.1) or a segmentation network (§3.3).

    Interrupted training resumes from the last finished epoch when the same
    command is run again.
    """


@train.command("hcp")
@_root
@_work
@_recipe
@_force
@_quiet
def hcp_command(root, work, recipe, force, quiet):
    """Fine-tune HCP on ROOT's paper_train images: image fine-tuning, then hypothesis
    fine-tuning on the proposals in WORK (run `wsk proposals` first).

    Writes WORK/hcp/hcp.keras; prints the validation mAP (val split) after each epoch.
    """
    from wsk.train import train_hcp

    train_hcp(root, work, recipe, force=force, verbose=2 if quiet else 1)


@train.command("seg")
@_root
@_work
@click.option("--variant", type=click.Choice(VARIANT_NAMES), default="SN_B", show_default=True,
              help="AN_*: all training images, SN_*: single-label images; *_A: localization maps, "
                   "*_B: rough masks.")
@_recipe
@click.option("--strategy", type=click.Choice(STRATEGY_NAMES), default="default", show_default=True,
              help="mirrored: all local GPUs; multiworker: the machines of TF_CONFIG.")
@click.option("--no-refine", is_flag=True,
              help="Train on the targets computed without cross-image refinement (WORK/noref/); "
                   "the model goes to WORK/seg/<variant>-noref/.")
@_force
@_quiet
def seg_command(root, work, variant, recipe, strategy, no_refine, force, quiet):
    """Train DeepLab-LargeFOV as VARIANT on the pseudo labels in WORK (run `wsk pseudo` first).

    Writes WORK/seg/<variant>/model.keras and its description model.json.
    """
    from wsk.train import make_strategy, train_segmentation

    distribution = make_strategy(strategy)     # first: MultiWorkerMirroredStrategy must come early
    train_segmentation(root, work, variant, recipe, strategy=distribution,
                       pseudo_dir_refine=not no_refine, force=force, verbose=2 if quiet else 1)


COMMANDS = [train]
