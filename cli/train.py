"""``wsk train hcp`` and ``wsk train seg``: the training stages of §4.2 (library: ``wsk.training``)."""

import dataclasses

import click

from wsk.data.voc import PAPER_TRAIN
from wsk.recipes import RECIPES, STRATEGIES, VARIANTS, get_recipe

_root = click.argument("root", type=click.Path(exists=True, file_okay=False))
_work = click.argument("work", type=click.Path(file_okay=False))
_recipe = click.option("--recipe", type=click.Choice(list(RECIPES)), default="paper", show_default=True,
                       help="paper: §4.2's numbers (VGG-16 from ImageNet); "
                            "demo: small and fast, for a CPU (the pretrained trunk); tiny: a smoke run.")
_force = click.option("--force", is_flag=True, help="Retrain even if the final model exists.")
_quiet = click.option("--quiet", is_flag=True, help="No per-step progress bar.")
_split = click.option("--split", default=PAPER_TRAIN, show_default=True,
                      help="Image list of ROOT to train on (ImageSets/Segmentation or Main/<split>.txt; "
                           "paper_train: the paper's training set, §4.1).")


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
@_split
@click.option("--val-split", default="val", show_default=True,
              help="Image list of ROOT whose mAP is printed after every epoch (none if absent).")
@_force
@_quiet
def hcp_command(root, work, recipe, split, val_split, force, quiet):
    """Fine-tune HCP on a split of ROOT: image fine-tuning, then hypothesis fine-tuning on
    the proposals in WORK (run `wsk proposals` on the same split first).

    Writes WORK/hcp/hcp.keras; prints the validation mAP after each epoch.
    """
    # deferred on purpose: `wsk --help` stays fast (the stages import TensorFlow)
    from wsk.training import train_hcp

    train_hcp(root, work, recipe, force=force, verbose=2 if quiet else 1, split=split, val_split=val_split)


@train.command("seg")
@_root
@_work
@click.option("--variant", type=click.Choice(list(VARIANTS)), default="SN_B", show_default=True,
              help="AN_*: all training images, SN_*: single-label images; *_A: localization maps, "
                   "*_B: rough masks.")
@_recipe
@click.option("--strategy", type=click.Choice(STRATEGIES), default="default", show_default=True,
              help="mirrored: all local GPUs; multiworker: the machines of TF_CONFIG.")
@click.option("--no-refine", is_flag=True,
              help="Train on the targets computed without cross-image refinement (WORK/noref/); "
                   "the model goes to WORK/seg/<variant>-noref/.")
@_split
@click.option("--scale-range", type=(float, float), default=None, metavar="MIN MAX",
              help="Random scaling of the training images, e.g. 0.5 1.5 (DeepLab v2's) [default: the "
                   "recipe's, none: DeepLab-LargeFOV v1 crops and mirrors only].")
@_force
@_quiet
def seg_command(root, work, variant, recipe, strategy, no_refine, split, scale_range, force, quiet):
    """Train DeepLab-LargeFOV as VARIANT on the pseudo labels in WORK (run `wsk pseudo` first).

    Writes WORK/seg/<variant>/model.keras and its description model.json.
    """
    # deferred on purpose: `wsk --help` stays fast (the stages import TensorFlow)
    from wsk.training import make_strategy, train_segmentation

    distribution = make_strategy(strategy)     # first: MultiWorkerMirroredStrategy must come early
    seg_recipe = get_recipe(recipe).seg
    if scale_range:
        seg_recipe = dataclasses.replace(seg_recipe, scale_range=tuple(scale_range))
    train_segmentation(root, work, variant, seg_recipe, strategy=distribution, split=split,
                       pseudo_dir_refine=not no_refine, force=force, verbose=2 if quiet else 1)


COMMANDS = [train]
