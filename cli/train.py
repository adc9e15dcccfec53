"""``wsk train hcp`` and ``wsk train seg``: the training stages of §4.2 (library: ``wsk.training``)."""

import click

from wsk.cli.options import data_options, open_cli_run, pop_data, recipe_option
from wsk.recipes import PRECISIONS, STRATEGIES, VARIANTS

_work = click.argument("work", type=click.Path(file_okay=False))
_force = click.option("--force", is_flag=True, help="Retrain even if the final model exists.")
_quiet = click.option("--quiet", is_flag=True, help="No per-step progress bar.")
_split = click.option("--split", default=None,
                      help="Split of DATA to train on [default: WORK/run.json's; paper_train on VOC (§4.1), "
                           "else train].")


@click.group("train")
def train():
    """Train the HCP classifier (§3.1) or a segmentation network (§3.3).

    Interrupted training resumes from the last finished epoch when the same
    command is run again.
    """


@train.command("hcp")
@data_options
@_work
@recipe_option
@_split
@click.option("--val-split", default=None,
              help="Split of DATA whose mAP is printed after every epoch (none if absent) [default: val].")
@_force
@_quiet
def hcp_command(work, recipe, split, val_split, force, quiet, **kwargs):
    """Fine-tune HCP on the training split of DATA: image fine-tuning, then hypothesis fine-tuning on
    the proposals in WORK (run `wsk proposals` on the same split first).

    Writes WORK/hcp/hcp.keras; prints the validation mAP after each epoch.
    """
    # deferred on purpose: `wsk --help` stays fast (the stages import TensorFlow)
    from wsk.training import train_hcp

    run = open_cli_run(work, pop_data(kwargs), recipe=recipe, split=split, val_split=val_split)
    train_hcp(run.source, run.work, run.recipe, force=force, verbose=2 if quiet else 1, split=run.split,
              val_split=run.val_split)


@train.command("seg")
@data_options
@_work
@click.option("--variant", type=click.Choice(list(VARIANTS)), default="SN_B", show_default=True,
              help="AN_*: all training images, SN_*: single-label images; *_A: localization maps, "
                   "*_B: rough masks.")
@recipe_option
@click.option("--strategy", type=click.Choice(STRATEGIES), default="default", show_default=True,
              help="mirrored: all local GPUs; multiworker: the machines of TF_CONFIG.")
@click.option("--no-refine", is_flag=True,
              help="Train on the targets computed without cross-image refinement (WORK/noref/); "
                   "the model goes to WORK/seg/<variant>-noref/.")
@_split
@click.option("--scale-range", type=(float, float), default=None, metavar="MIN MAX",
              help="Random scaling of the training images, e.g. 0.5 1.5 (DeepLab v2's) [default: the "
                   "recipe's, none: DeepLab-LargeFOV v1 crops and mirrors only].")
@click.option("--output-stride", type=click.Choice(["8", "4"]), default=None,
              help="Pixels per logit: 8 is DeepLab-LargeFOV's, 4 the same filters twice as densely "
                   "[default: the recipe's: 8 for paper, 4 for demo].")
@click.option("--class-balance", type=click.FloatRange(min=0), default=None, metavar="POWER",
              help="Weight each class's loss by its share f of the training targets as f ** -POWER (1: every "
                   "class the same total weight; 0: all 1, the paper) [default: the recipe's].")
@click.option("--copy-paste", type=click.FloatRange(0, 1), default=None, metavar="P",
              help="The probability that a training crop takes the objects of another training image, "
                   "with their targets, where it has none of its own (0: never, the paper) "
                   "[default: the recipe's].")
@click.option("--precision", type=click.Choice(PRECISIONS), default=None,
              help="What the network trains in: float32 (the paper), mixed_bfloat16 (float32 weights, bfloat16 "
                   "arithmetic: faster where the CPU or GPU has it), auto (mixed_bfloat16 where the hardware "
                   "computes it); the saved network is float32 [default: the recipe's: float32 for paper, "
                   "auto for demo].")
@_force
@_quiet
def seg_command(work, variant, recipe, strategy, no_refine, split, scale_range, output_stride, class_balance,
                copy_paste, precision, force, quiet, **kwargs):
    """Train DeepLab-LargeFOV as VARIANT on the pseudo labels in WORK (run `wsk pseudo` first).

    Writes WORK/seg/<variant>/model.keras and its description model.json.
    """
    # deferred on purpose: `wsk --help` stays fast (the stages import TensorFlow)
    from wsk.training import make_strategy, train_segmentation

    distribution = make_strategy(strategy)     # first: MultiWorkerMirroredStrategy must come early
    run = open_cli_run(work, pop_data(kwargs), recipe=recipe, split=split,
                       overrides={"seg.scale_range": tuple(scale_range) if scale_range else None,
                                  "seg.output_stride": int(output_stride) if output_stride else None,
                                  "seg.class_balance": class_balance, "seg.copy_paste": copy_paste,
                                  "seg.precision": precision})
    train_segmentation(run.source, run.work, variant, run.recipe, strategy=distribution, split=run.split,
                       pseudo_dir_refine=not no_refine, force=force, verbose=2 if quiet else 1)


COMMANDS = [train]
