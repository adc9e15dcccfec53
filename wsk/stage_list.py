"""The one declared list of stages, in the paper's order: ``STAGES``.

``wsk run`` runs them all in order (``wsk.driver``), each stage command runs one of them
(``run_stage``), and the Beam pipeline (``wsk.pipeline``) builds its per-image steps from the same
entries, so their done-checks, clean-ups and per-image functions cannot drift apart.

A ``Stage`` has a name, the paper's section, the stages whose outputs it reads (``inputs``), where
it writes in the work directory (``outputs``), and either

* a **per-image** function ``per_image(run, resource, image_id)`` with its done-check
  ``is_done(run, image_id)`` (an output that exists and records exactly the inputs it would be
  made from now) and an optional ``setup(run)`` that loads a resource once per worker (scoring:
  the HCP model; such a stage runs ``in_process``), or
* a **whole-split** function ``run(run)`` (training, the refinement statistics, evaluation, export),
  each resumable on its own terms.

A stage with ``wanted(run)`` runs only where that holds (the refinement statistics: with Eq. 1's
refinement or calibrated candidate thresholds).

Every function takes a ``wsk.run_record.Run``: the recorded dataset, splits and recipe, and the
command's own fields. Nothing here is a framework: ``run_stage`` is a loop over ``STAGES``' entries.
"""

import dataclasses
import functools

from wsk.errors import WskError
from wsk.io import remove_temporaries
from wsk.stages import StageReport, run_per_image


@dataclasses.dataclass(frozen=True)
class Stage:
    """One stage of the pipeline (module docstring)."""

    name: str
    section: str
    inputs: tuple
    outputs: str
    folder: object = None        # folder(workdir) -> the per-image output folder (temporaries cleaned)
    per_image: object = None     # per_image(run, resource, image_id)
    is_done: object = None       # is_done(run, image_id) -> bool
    setup: object = None         # setup(run) -> resource, once per worker
    in_process: bool = False     # the resource stays in one process (no worker pool)
    run: object = None           # run(run) -> StageReport, for whole-split stages
    wanted: object = None        # wanted(run) -> bool: the stage is skipped when False (None: always run)
    pseudo: bool = False         # one of the pseudo-label stages, run again for the --no-refine ablation


# ---------------------------------------------------------------------------------- proposals
def _proposals_made_from(run, image_id):
    from wsk.proposals.stage import generated_from

    return generated_from(run.source, run.split, run.recipe.pseudo.max_proposals, run.seed, image_id)


def proposals_is_done(run, image_id):
    from wsk.proposals.stage import proposals_done

    return proposals_done(run.work, functools.partial(_proposals_made_from, run), image_id)


def proposals_per_image(run, _resource, image_id):
    from wsk.proposals.stage import propose_image

    propose_image(run.source, run.split, run.work, run.recipe.pseudo.max_proposals, run.seed, image_id)


# ------------------------------------------------------------------------------------- HCP
def hcp_run(run):
    from wsk.training import train_hcp

    train_hcp(run.source, run.work, run.recipe, split=run.split, val_split=run.val_split, verbose=run.verbose)
    return StageReport("HCP", done=["hcp"])


# --------------------------------------------------------------------------------- scoring
def scoring_setup(run):
    from wsk.pseudo.score_stage import load_hcp_model
    from wsk.pseudo.scoring import ProposalScorer

    net = load_hcp_model(run.workdir.hcp_model)
    classes = int(net.output_shape[-1])
    if classes != len(run.classes) - 1:
        raise WskError(f"the HCP model has {classes} classes, the dataset {len(run.classes) - 1} object "
                       "classes", run.workdir.hcp_model)
    return ProposalScorer(net, run.recipe.pseudo.score_mode)


def scoring_is_done(run, image_id):
    from wsk.pseudo.candidates import negatives_per_class
    from wsk.pseudo.score_stage import score_inputs, scores_valid

    wd, config = run.workdir, run.recipe.pseudo
    return scores_valid(wd.scores(image_id), config.score_mode, config.candidate_threshold,
                        score_inputs(wd, image_id), negatives_per_class(config))


def scoring_per_image(run, scorer, image_id):
    from wsk.pseudo.candidates import negatives_per_class
    from wsk.pseudo.score_stage import score_image

    config = run.recipe.pseudo
    score_image(scorer, run.dataset(ids=[image_id]), run.workdir, image_id, config.candidate_threshold,
                negatives_per_class(config))


# ------------------------------------------------------------------------------ refinement
def statistics_run(run):
    from wsk.pseudo.refine_stage import statistics_stage

    return statistics_stage(run.dataset(), run.workdir, run.recipe.pseudo, run.recipe.pseudo.score_mode, run.refine)


def statistics_wanted(run):
    from wsk.pseudo.refine_stage import needs_statistics

    return needs_statistics(run.refine, run.recipe.pseudo)


def _settings(run):
    from wsk.pseudo.refine_stage import refinement_settings

    return refinement_settings(run.refine, run.recipe.pseudo, run.recipe.pseudo.score_mode)


def refinement_is_done(run, image_id):
    from wsk.pseudo.refine_stage import refined_valid

    return refined_valid(run.workdir, _settings(run), image_id)


def refinement_per_image(run, _resource, image_id):
    from wsk.pseudo.refine_stage import refine_image_file

    refine_image_file(run.source, run.split, run.work, run.refine, run.recipe.pseudo,
                      run.recipe.pseudo.score_mode, image_id)


# ------------------------------------------------------------------------ maps and masks
def locmaps_is_done(run, image_id):
    from wsk.pseudo.targets import locmap_made_from, locmap_valid

    wd = run.workdir
    return locmap_valid(wd.locmap(image_id), locmap_made_from(wd, image_id))


def locmaps_per_image(run, _resource, image_id):
    from wsk.pseudo.targets import map_image

    map_image(run.work, run.refine, len(run.classes), image_id)


def masks_is_done(run, image_id):
    from wsk.pseudo.targets import mask_made_from, mask_valid

    config = run.recipe.pseudo
    return mask_valid(run.workdir.mask(image_id), mask_made_from(
        run.workdir, config.rough_top_regions, config.rough_vote, image_id, crf=config.rough_crf))


def masks_per_image(run, _resource, image_id):
    from wsk.pseudo.targets import mask_image

    config = run.recipe.pseudo
    image = run.dataset(ids=[image_id]).image(image_id) if config.rough_crf else None
    mask_image(run.work, run.refine, config.rough_top_regions, config.rough_vote, image_id, image)


# ---------------------------------------------------------------------- segmentation, eval
def segmentation_run(run):
    from wsk.training import train_segmentation

    report = StageReport("segmentation")
    for variant in run.variants or (run.recipe.variant,):
        train_segmentation(run.source, run.work, variant, run.recipe, split=run.split, pseudo_dir_refine=run.refine,
                           verbose=run.verbose)
        report.done.append(variant)
    return report


def evaluation_run(run):
    from wsk.evaluation_stage import evaluate_variants

    return evaluate_variants(run)


def export_run(run):
    from wsk.evaluation_stage import export_best

    return export_best(run)


STAGES = (
    Stage("proposals", "§3.1", (), "proposals/<id>.npz", folder=lambda wd: wd.proposals_dir,
          per_image=proposals_per_image, is_done=proposals_is_done),
    Stage("hcp", "§3.1, §4.2", ("proposals",), "hcp/hcp.keras", run=hcp_run),
    Stage("scoring", "§3.1", ("proposals", "hcp"), "scores/<id>.npz", folder=lambda wd: wd.scores_dir,
          per_image=scoring_per_image, is_done=scoring_is_done, setup=scoring_setup, in_process=True, pseudo=True),
    Stage("refinement statistics", "§3.1, §3.2", ("scoring",), "refinement.npz", run=statistics_run,
          wanted=statistics_wanted, pseudo=True),
    Stage("refinement", "§3.2, Eq. 1", ("scoring", "refinement statistics"), "refined/<id>.json",
          folder=lambda wd: wd.refined_dir, per_image=refinement_per_image, is_done=refinement_is_done, pseudo=True),
    Stage("localization maps", "§3.3.1, Eq. 2", ("proposals", "refinement"), "locmaps/<id>.npz",
          folder=lambda wd: wd.locmaps_dir, per_image=locmaps_per_image, is_done=locmaps_is_done, pseudo=True),
    Stage("rough masks", "§3.3.2, Eq. 5", ("proposals", "scoring", "localization maps"), "masks/<id>.png",
          folder=lambda wd: wd.masks_dir, per_image=masks_per_image, is_done=masks_is_done, pseudo=True),
    Stage("segmentation", "§4.2", ("localization maps", "rough masks"), "seg/<variant>/model.keras",
          run=segmentation_run),
    Stage("evaluation", "§4.3", ("segmentation",), "eval/<variant>.json", run=evaluation_run),
    Stage("export", "", ("evaluation",), "export/<variant>/", run=export_run),
)
STAGE_NAMES = tuple(stage.name for stage in STAGES)
PSEUDO_STAGES = tuple(stage.name for stage in STAGES if stage.pseudo)


def get_stage(name):
    """The entry of ``STAGES`` called ``name``."""
    for stage in STAGES:
        if stage.name == name:
            return stage
    raise WskError(f"unknown stage {name!r}; one of {', '.join(STAGE_NAMES)}")


def stages_until(until=None):
    """The entries of ``STAGES`` up to and including ``until`` (all of them for None)."""
    if until is None:
        return STAGES
    return STAGES[:STAGE_NAMES.index(get_stage(until).name) + 1]


def _apply(name, run, resource, image_id):
    get_stage(name).per_image(run, resource, image_id)   # by name: workers receive picklable arguments


def run_stage(stage, run, pool=None):
    """Run one entry of ``STAGES`` locally over ``run``'s training split; returns its ``StageReport``
    (a failed image does not stop the others: ``report.raise_if_failed()`` names each one's file)."""
    stage = get_stage(stage) if isinstance(stage, str) else stage
    if stage.wanted is not None and not stage.wanted(run):
        return StageReport(stage.name)
    if stage.per_image is None:
        return stage.run(run)
    ids = run.dataset().ids
    remove_temporaries(stage.folder(run.workdir))
    done = bytearray(bool(stage.is_done(run, i)) for i in ids)   # a byte an image, not a set of ids
    resource = stage.setup(run) if stage.setup is not None and not all(done) else None
    report = run_per_image(stage.name, ids, functools.partial(_apply, stage.name, run, resource), is_done=done,
                           jobs=1 if stage.in_process else run.jobs, pool=None if stage.in_process else pool)
    return report


def run_stages(names, run, pool=None):
    """``run_stage`` for each named stage in ``STAGES``' order, stopping at the first stage with a
    failed image (``WskError``); returns ``{name: StageReport}``."""
    reports = {}
    for stage in STAGES:
        if stage.name in names:
            reports[stage.name] = run_stage(stage, run, pool)
            reports[stage.name].raise_if_failed()
    return reports
