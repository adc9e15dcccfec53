"""``wsk demo``: the main job."""

import os
import sys

import click

from wsk.crf import CRF_BACKENDS
from wsk.data.styles import STYLES


@click.command("demo")
@click.option("--work", type=click.Path(file_okay=False), default="wsk-demo", show_default=True,
              help="Work directory; rerunning on the same folder resumes.")
@click.option("--images", type=click.IntRange(8), default=480, show_default=True,
              help="Synthetic images to generate (train + val).")
@click.option("--size", type=click.IntRange(32), default=64, show_default=True, help="Image side in pixels.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the synthetic dataset.")
@click.option("--style", type=click.Choice(sorted(STYLES)), default="shapes", show_default=True,
              help="Synthetic dataset style (photo: other shapes on photographs, a generalisation check).")
@click.option("--jobs", type=click.IntRange(1), default=None, help="Worker processes (default: all cores).")
@click.option("--no-crf", is_flag=True, help="Skip the dense-CRF evaluation.")
@click.option("--crf-backend", type=click.Choice(CRF_BACKENDS), default=CRF_BACKENDS[0], show_default=True,
              help="Dense CRF: keras (wsk's own) or densecrf (pydensecrf, pip install 'wsk[densecrf]').")
@click.option("--tiny", is_flag=True, help="One epoch per step and tiny networks: a smoke run, not a result.")
def demo(work, images, size, seed, style, jobs, no_crf, tiny, crf_backend):
    """Run the whole pipeline on a synthetic dataset and print pseudo-label and val mIoU.

    Generates a synthetic VOC-layout dataset, segment proposals, trains HCP, builds
    pseudo-labels with and without cross-image refinement, trains DeepLab-LargeFOV as
    AN_A, SN_A, AN_B and SN_B, and evaluates them on val without and with dense CRF.
    CPU only, no download.
    """
    # deferred on purpose: `wsk --help` stays fast (the stages import TensorFlow)
    from wsk.demo import run_demo

    click.echo(f"wsk demo: work directory {os.path.abspath(work)}", err=True)
    run_demo(work, images=images, size=size, seed=seed, jobs=jobs, tiny=tiny, crf=not no_crf,
             verbose=1 if sys.stderr.isatty() else 2, printer=click.echo, style=style,
             crf_backend=crf_backend)


COMMANDS = [demo]
