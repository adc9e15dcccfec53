"""The per-image stages on Apache Beam (``wsk pipeline``, the optional extra ``wsk[beam]``).

One Beam pipeline runs the per-image entries of ``wsk.stage_list.STAGES`` — proposals -> scoring
(§3.1) -> refinement (§3.2, Eq. 1) -> localization maps (Eq. 2) -> rough masks (Eq. 5) — over the
training split of a ``wsk.run_record.Run``, on any Beam runner (DirectRunner, PrismRunner,
DataflowRunner, FlinkRunner, SparkRunner). Every step is the stage list's own entry, with its
done-check and per-image function, so the files are those of ``wsk run``/``wsk proposals``/``wsk
pseudo``: the two are interchangeable and resumable.

* A per-image stage that loads a resource (scoring: the HCP model) is Beam's ``RunInference``
  with ``StageModelHandler``: its ``load_model`` is the stage's ``setup``, which RunInference
  calls in its DoFn's ``setup``, once per worker process (shared by the process's threads, which
  take turns with it); every other per-image stage is a ``StageDoFn``. Both skip an image whose
  output is valid, by the stage's own done-check.
* The refinement statistics are Beam combines: the per-class histograms of the calibrated
  candidate thresholds (``wsk.pseudo.calibration``), the features' ``Moments`` (for the PCA) and
  Eq. 1's ``ClassTotals`` of the projected features (and, for the contrast order, of the false
  alarms), written to ``refinement.npz`` by one
  element; each image's ranking then reads that small file. Nothing gathers the images onto one
  worker: memory per worker is one image's candidates plus the statistics (``O(D^2 + classes x d)``).
* The image ids are read from the split by the workers, in ``id_shards`` shards (a shard is every
  ``shards``-th id), and each step that must wait for the statistics reads them afresh rather than
  wait on a collection of every id: a runner holds no collection of all ids, and the pipeline
  itself (its graph, the launcher) holds none of them (``benchmarks/bench_refinement_memory.py``).
* The temporaries a killed run left (``wsk.io.remove_temporaries``) are removed when the pipeline
  is built, before any worker writes, as the local stages do.

ROOT and WORK must be storage every worker reaches: a shared or network filesystem, or a URL of
an object store (``wsk.storage``: ``gs://``, ``s3://``, ...), where each file is uploaded whole in one
``put``, so a worker's done-check sees finished files only.
"""

import functools
import threading

import apache_beam as beam
from apache_beam.ml.inference.base import ModelHandler, PredictionResult, RunInference
from apache_beam.options.pipeline_options import PipelineOptions

from wsk.errors import WskError
from wsk.io import load_npz, remove_temporaries
from wsk.pseudo.files import SCORE_KEYS
from wsk.pseudo.calibration import NegativeMaxima, calibrated_features, calibrated_thresholds
from wsk.pseudo.refine_stage import (false_alarms, needs_statistics, refinement_settings, save_statistics,
                                     scores_digest, statistics_made_from, uses_negatives)
from wsk.pseudo.refinement import ClassTotals, Moments, class_totals, fit_projection
from wsk.recipes import PIPELINE_STAGES
from wsk.stage_list import PSEUDO_STAGES, STAGES, get_stage

SHARD_IMAGES, MAX_SHARDS = 1000, 64   # id_shards


def _apply(stage, run, resource, image_id):
    """The stage's per-image function on ``image_id`` unless its output is valid; returns the id."""
    if not stage.is_done(run, image_id):
        stage.per_image(run, resource, image_id)
    return image_id


class StageDoFn(beam.DoFn):
    """One per-image entry of ``STAGES`` without a resource (by name): done images skipped."""

    def __init__(self, name, run):
        self.name, self.run = name, run

    def setup(self):
        self.stage = get_stage(self.name)

    def process(self, image_id, *_after):
        yield _apply(self.stage, self.run, None, image_id)


class _Loaded:
    """A stage's resource and the lock its users take turns with (weak-referenceable, as Beam's
    ``Shared`` needs)."""

    def __init__(self, resource):
        self.resource, self.lock = resource, threading.Lock()


class StageModelHandler(ModelHandler):
    """One per-image entry of ``STAGES`` with a resource, as ``RunInference``'s model handler:
    ``load_model`` is the stage's ``setup``; ``run_inference`` runs the stage on a batch of image
    ids (one id a batch) and predicts each id. The resource is one Keras model shared by the
    process's threads, so they run it one at a time."""

    def __init__(self, name, run):
        super().__init__(min_batch_size=1, max_batch_size=1)
        self.name, self.run = name, run

    def load_model(self):
        return _Loaded(get_stage(self.name).setup(self.run))

    def run_inference(self, batch, model, inference_args=None):
        stage = get_stage(self.name)
        with model.lock:
            return [PredictionResult(i, _apply(stage, self.run, model.resource, i)) for i in batch]

    def get_num_bytes(self, batch):
        return sum(len(str(i)) for i in batch)


def _example(result):
    return result.example


def stage_step(stage, run):
    """The Beam transform of one per-image entry of ``STAGES``: ids in, the same ids out."""
    if stage.setup is None:
        return beam.ParDo(StageDoFn(stage.name, run))
    return RunInference(StageModelHandler(stage.name, run)) | beam.Map(_example)


def _scores(run, image_id):
    return load_npz(run.workdir.scores(image_id), required=SCORE_KEYS)


def _negative_maxima(run, image_id):
    return NegativeMaxima().add(_scores(run, image_id)["scores"], run.dataset(ids=[image_id]).labels(image_id))


def _merge_maxima(parts):
    return functools.reduce(NegativeMaxima.merge, parts, NegativeMaxima())


def _thresholds(maxima, run):
    config = run.recipe.pseudo
    return calibrated_thresholds(maxima, config.candidate_quantile, config.candidate_threshold)


def _features(run, image_id, thresholds):
    return calibrated_features(_scores(run, image_id), thresholds)


def _moments(run, image_id, thresholds):
    return Moments().add(_features(run, image_id, thresholds)[0])


def _merge_moments(parts):
    return functools.reduce(Moments.merge, parts, Moments())


def _class_totals(run, image_id, fitted, thresholds):
    return class_totals(lambda i: _features(run, i, thresholds), [image_id], fitted[0])


def _merge_totals(parts):
    return functools.reduce(ClassTotals.merge, parts, ClassTotals())


def _alarm_totals(run, image_id, fitted):
    return class_totals(lambda i: false_alarms(_scores(run, i), run.workdir.scores(i)), [image_id], fitted[0])


def _write_statistics(totals, run, fitted, thresholds, negatives=None):
    """Write ``refinement.npz`` unless the one there is made from these scores and settings (then
    its stamp, and every refinement record made from it, stays valid)."""
    config, mode = run.recipe.pseudo, run.recipe.pseudo.score_mode
    settings, digest = refinement_settings(run.refine, config, mode), scores_digest(run.workdir, run.dataset().ids)
    if not statistics_made_from(run.workdir.refinement, settings, digest):
        save_statistics(run.workdir.refinement, settings, digest, fitted[0], totals, fitted[1], thresholds, negatives)
    return run.workdir.refinement


def _write_thresholds(thresholds, run):
    """``refinement.npz`` without refinement: the calibrated thresholds alone."""
    return _write_statistics(ClassTotals(), run, (None, None), thresholds)


def _statistics(scored, run, shards):
    """The statistics of the refinement stage as Beam combines, written to ``refinement.npz``: the
    per-class histograms of the calibrated thresholds (with ``candidate_quantile``), then, with
    refinement (§3.2), the moments and Eq. 1's totals of the candidates that pass them. The first
    pass reads ``scored`` (the ids whose scores are written); each later one reads the ids afresh
    once what it needs is made."""
    pipeline, config = scored.pipeline, run.recipe.pseudo
    if config.candidate_quantile is None:
        thresholds, ids = pipeline | "no calibration" >> beam.Create([None]), scored
    else:
        thresholds = (scored
                      | "negative maxima" >> beam.Map(functools.partial(_negative_maxima, run))
                      | "sum negative maxima" >> beam.CombineGlobally(_merge_maxima)
                      | "calibrated thresholds" >> beam.Map(_thresholds, run))
        ids = image_ids(pipeline, run, "moments", shards)
    if not run.refine:
        return thresholds | "refinement.npz" >> beam.Map(_write_thresholds, run)
    calibrated = beam.pvalue.AsSingleton(thresholds)
    fitted = (ids
              | "moments" >> beam.Map(functools.partial(_moments, run), thresholds=calibrated)
              | "sum moments" >> beam.CombineGlobally(_merge_moments)
              | "PCA" >> beam.Map(fit_projection, run.recipe.pseudo.pca_energy))
    fitted = beam.pvalue.AsSingleton(fitted)
    negatives = beam.pvalue.AsSingleton(pipeline | "no false alarms" >> beam.Create([None]))
    if uses_negatives(run.refine, config):   # the contrast order: Eq. 1's totals over the false alarms
        negatives = beam.pvalue.AsSingleton(
            image_ids(pipeline, run, "false alarms", shards)
            | "false alarms" >> beam.Map(functools.partial(_alarm_totals, run), fitted=fitted)
            | "sum false alarms" >> beam.CombineGlobally(_merge_totals))
    return (image_ids(pipeline, run, "class statistics", shards)
            | "class statistics" >> beam.Map(functools.partial(_class_totals, run), fitted=fitted,
                                             thresholds=calibrated)
            | "sum class statistics" >> beam.CombineGlobally(_merge_totals)
            | "refinement.npz" >> beam.Map(_write_statistics, run=run, fitted=fitted, thresholds=calibrated,
                                           negatives=negatives))


def id_shards(images):
    """How many shards the split's ids are read in: about ``SHARD_IMAGES`` ids a shard, at most
    ``MAX_SHARDS`` (each shard's reader reads the split's list)."""
    return max(1, min(MAX_SHARDS, -(-images // SHARD_IMAGES)))


def _shard_ids(shard, run, shards):
    """Every ``shards``-th id of ``run``'s training split from the ``shard``-th, read by the worker."""
    yield from run.dataset().ids[shard::shards]


def image_ids(pipeline, run, label, shards):
    """A new PCollection of the training split's ids, read by the workers in ``shards`` shards."""
    return (pipeline
            | f"{label}: shards" >> beam.Create(range(shards))
            | f"{label}: image ids" >> beam.FlatMap(_shard_ids, run, shards))


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
    shards = id_shards(len(run.dataset()))   # a missing or bad split is a WskError here, before any worker starts
    ids = image_ids(pipeline, run, "split", shards)
    for stage in chosen:
        remove_temporaries(stage.folder(run.workdir))
    for stage in chosen:
        if stage.name == "refinement" and needs_statistics(run.refine, run.recipe.pseudo):
            statistics = beam.pvalue.AsSingleton(_statistics(ids, run, shards))
            ids = image_ids(pipeline, run, "refinement", shards) | f"{stage.name} ({stage.section})" >> beam.ParDo(
                StageDoFn(stage.name, run), statistics)
        else:
            ids = ids | f"{stage.name} ({stage.section})" >> stage_step(stage, run)
    return ids


def run_pipeline(run, stages="all", beam_args=()):
    """Run the stages on the Beam runner that ``beam_args`` name (``--runner ...``, DirectRunner by
    default); returns when every image's outputs are written."""
    options = PipelineOptions(list(beam_args))
    with beam.Pipeline(options=options) as pipeline:
        build_pipeline(pipeline, run, stages)
