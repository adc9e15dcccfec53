"""The per-image stages on Apache Beam (``wsk pipeline``, the optional extra ``wsk[beam]``).

One Beam pipeline runs the per-image entries of ``wsk.stage_list.STAGES`` — proposals -> scoring
(§3.1) -> refinement (§3.2, Eq. 1) -> localization maps (Eq. 2) -> rough masks (Eq. 5) — over the
training split of a ``wsk.run_record.Run``, on any Beam runner (DirectRunner, PrismRunner,
DataflowRunner, FlinkRunner, SparkRunner). Every step is the stage list's own entry, with its
done-check and per-image function, so the files are those of ``wsk run``/``wsk proposals``/``wsk
pseudo``: the two are interchangeable and resumable.

* Each per-image stage is a ``StageDoFn``: its ``setup`` loads the stage's resource once per
  worker (scoring: the HCP model), its ``process`` skips an image whose output is valid.
* The refinement statistics are two Beam combines: the features' ``Moments`` (for the PCA) and
  Eq. 1's ``ClassTotals`` of the projected features, written to ``refinement.npz`` by one
  element; each image's ranking then reads that small file. Nothing gathers the images onto one
  worker: memory per worker is one image's candidates plus the statistics (``O(D^2 + classes x d)``).
* The temporaries a killed run left (``wsk.io.remove_temporaries``) are removed when the pipeline
  is built, before any worker writes, as the local stages do.

ROOT and WORK must be storage every worker reaches: a shared or network filesystem, or a URL of
an object store (``wsk.storage``: ``gs://``, ``s3://``, ...), where each file is uploaded whole in one
``put``, so a worker's done-check sees finished files only.
"""

import functools

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions

from wsk.errors import WskError
from wsk.io import load_npz, remove_temporaries
from wsk.pseudo.files import SCORE_KEYS
from wsk.pseudo.refine_stage import refinement_settings, save_statistics, scores_digest, statistics_made_from
from wsk.pseudo.refinement import ClassTotals, Moments, fit_projection, image_statistics, reduce_with
from wsk.recipes import PIPELINE_STAGES
from wsk.stage_list import PSEUDO_STAGES, STAGES


class StageDoFn(beam.DoFn):
    """One per-image entry of ``STAGES`` (by name): resource loaded in ``setup``, done images skipped."""

    def __init__(self, name, run):
        self.name, self.run = name, run

    def setup(self):
        from wsk.stage_list import get_stage

        self.stage = get_stage(self.name)
        self.resource = self.stage.setup(self.run) if self.stage.setup is not None else None

    def process(self, image_id, *_after):
        if not self.stage.is_done(self.run, image_id):
            self.stage.per_image(self.run, self.resource, image_id)
        yield image_id


def _features(run, image_id):
    rec = load_npz(run.workdir.scores(image_id), required=SCORE_KEYS)
    return rec["features"], rec["candidate_labels"]


def _moments(run, image_id):
    return Moments().add(_features(run, image_id)[0])


def _merge_moments(parts):
    return functools.reduce(Moments.merge, parts, Moments())


def _class_totals(run, image_id, fitted):
    features, labels = _features(run, image_id)
    if not len(labels):
        return ClassTotals()
    return ClassTotals().add(image_statistics(reduce_with(fitted[0], features), labels))


def _merge_totals(parts):
    return functools.reduce(ClassTotals.merge, parts, ClassTotals())


def _write_statistics(totals, run, fitted, ids):
    """Write ``refinement.npz`` unless the one there is made from these scores and settings (then
    its stamp, and every refinement record made from it, stays valid)."""
    config, mode = run.recipe.pseudo, run.recipe.pseudo.score_mode
    settings, digest = refinement_settings(True, config, mode), scores_digest(run.workdir, ids)
    if not statistics_made_from(run.workdir.refinement, settings, digest):
        save_statistics(run.workdir.refinement, settings, digest, fitted[0], totals, fitted[1])
    return run.workdir.refinement


def _statistics(ids, run, all_ids):
    """The refinement statistics (§3.2) as Beam combines, written to ``refinement.npz``."""
    fitted = (ids
              | "moments" >> beam.Map(functools.partial(_moments, run))
              | "sum moments" >> beam.CombineGlobally(_merge_moments)
              | "PCA" >> beam.Map(fit_projection, run.recipe.pseudo.pca_energy))
    return (ids
            | "class statistics" >> beam.Map(functools.partial(_class_totals, run), fitted=beam.pvalue.AsSingleton(fitted))
            | "sum class statistics" >> beam.CombineGlobally(_merge_totals)
            | "refinement.npz" >> beam.Map(_write_statistics, run=run, fitted=beam.pvalue.AsSingleton(fitted),
                                           ids=all_ids))


def selected_stages(stages):
    """The per-image entries of ``STAGES`` that ``wsk pipeline --stages`` names."""
    if stages not in PIPELINE_STAGES:
        raise WskError(f"unknown stages {stages!r}; choose one of {', '.join(PIPELINE_STAGES)}")
    wanted = {"proposals": ("proposals",), "pseudo": PSEUDO_STAGES}.get(stages, ("proposals",) + PSEUDO_STAGES)
    return [s for s in STAGES if s.name in wanted and s.per_image is not None]


def build_pipeline(pipeline, run, stages="all"):
    """Add the stages to the Beam ``pipeline`` for ``run``; returns the PCollection of finished ids.

    ``stages``: ``proposals`` (before HCP is trained: it needs the proposals), ``pseudo`` (from
    scoring on, the proposals and ``WORK/hcp/hcp.keras`` present) or ``all``.
    """
    chosen = selected_stages(stages)
    all_ids = list(run.dataset().ids)
    for stage in chosen:
        remove_temporaries(stage.folder(run.workdir))
    ids = pipeline | "image ids" >> beam.Create(all_ids)
    for stage in chosen:
        after = ()
        if stage.name == "refinement" and run.refine:
            after = (beam.pvalue.AsSingleton(_statistics(ids, run, all_ids)),)
        ids = ids | f"{stage.name} ({stage.section})" >> beam.ParDo(StageDoFn(stage.name, run), *after)
    return ids


def run_pipeline(run, stages="all", beam_args=()):
    """Run the stages on the Beam runner that ``beam_args`` name (``--runner ...``, DirectRunner by
    default); returns when every image's outputs are written."""
    options = PipelineOptions(list(beam_args))
    with beam.Pipeline(options=options) as pipeline:
        build_pipeline(pipeline, run, stages)
