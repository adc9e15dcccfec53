"""The per-image stages on Apache Beam (``wsk pipeline``, the optional extra ``wsk[beam]``).

One Beam pipeline runs proposals -> scoring (§3.1) -> cross-image refinement (§3.2, Eq. 1) ->
localization maps (Eq. 2) -> rough masks (Eq. 5) over a split, on any Beam runner
(DirectRunner, PrismRunner, DataflowRunner, FlinkRunner, SparkRunner). Every step calls the
functions the local commands call and writes the same work-directory files, so the two are
interchangeable: a work directory started with ``wsk proposals``/``wsk pseudo`` can be finished
by ``wsk pipeline`` and the other way round, and each image's output is skipped when it is valid
and made from the same inputs (resumable).

* Per-image steps are ``Map``s over the image ids; scoring is a ``DoFn`` whose ``setup`` loads
  the HCP model once per worker.
* Refinement is two Beam combines: the features' ``Moments`` (for the PCA) and Eq. 1's
  ``ClassTotals`` of the projected features, then a ``Map`` ranking each image's candidates
  against them (side inputs). Memory per worker stays one image's candidates plus the
  statistics (``O(D^2 + classes x d)``).
* ``refined.json`` is gathered from the per-image entries and written once; the maps wait for it.

The work directory must be a filesystem every worker sees (shared or network storage): the
stages read and write it with ordinary file I/O (``wsk.io``), so ``gs://`` or ``s3://`` URLs are
not read yet.
"""

import functools

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions

from wsk.data.voc import VOCDataset
from wsk.errors import WskError
from wsk.io import load_npz
from wsk.proposals.stage import generated_from, propose_image, proposals_done
from wsk.pseudo.files import SCORE_KEYS
from wsk.pseudo.refine_stage import kept_proposals, refinement_settings, write_refined
from wsk.pseudo.refinement import ClassTotals, Moments, fit_projection, image_statistics, reduce_with
from wsk.pseudo.score_stage import load_hcp_model, score_image, score_inputs, scores_valid
from wsk.pseudo.scoring import ProposalScorer
from wsk.pseudo.targets import locmap_made_from, locmap_valid, map_image, mask_image, mask_made_from, mask_valid
from wsk.recipes import PIPELINE_STAGES, PseudoConfig
from wsk.workdir import WorkDir


def _propose(root, split, work, max_proposals, seed, image_id):
    made_from = functools.partial(generated_from, root, split, max_proposals, seed)
    if not proposals_done(work, made_from, image_id):
        propose_image(root, split, work, max_proposals, seed, image_id)
    return image_id


class ScoreProposals(beam.DoFn):
    """§3.1: ``scores/<id>.npz`` of each image (the HCP model is loaded once per worker)."""

    def __init__(self, root, split, work, mode, threshold, batch_size=32):
        self.root, self.split, self.work = root, split, work
        self.mode, self.threshold, self.batch_size = mode, threshold, batch_size

    def setup(self):
        self.dataset = VOCDataset(self.root, self.split)
        self.workdir = WorkDir(self.work)
        self.scorer = None

    def process(self, image_id):
        if not scores_valid(self.workdir.scores(image_id), self.mode, self.threshold,
                            score_inputs(self.workdir, image_id)):
            if self.scorer is None:   # loaded on the first image that needs it
                self.scorer = ProposalScorer(load_hcp_model(self.workdir.hcp_model), self.mode,
                                             batch_size=self.batch_size)
            score_image(self.scorer, self.dataset, self.workdir, image_id, self.threshold)
        yield image_id


def _scores(work, image_id):
    return load_npz(WorkDir(work).scores(image_id), required=SCORE_KEYS)


def _moments(work, image_id):
    return Moments().add(_scores(work, image_id)["features"])


def _merge_moments(parts):
    return functools.reduce(Moments.merge, parts, Moments())


def _class_totals(work, image_id, fitted):
    rec = _scores(work, image_id)
    if not len(rec["candidate_labels"]):
        return ClassTotals()
    return ClassTotals().add(image_statistics(reduce_with(fitted[0], rec["features"]), rec["candidate_labels"]))


def _merge_totals(parts):
    return functools.reduce(ClassTotals.merge, parts, ClassTotals())


def _entry(root, split, work, refine, config, image_id, fitted=(None, None), totals=None):
    labels = [int(k) for k in VOCDataset(root, split, ids=[image_id]).labels(image_id)]
    entry, fallback = kept_proposals(_scores(work, image_id), labels, fitted[0], totals, refine, config)
    return image_id, entry, fallback


def _write_refined(entries, work, refine, config, mode, fitted=(None, None)):
    entries = sorted(entries)
    images = {image_id: entry for image_id, entry, _ in entries}
    fallback = {image_id: labels for image_id, _, labels in entries if labels}
    write_refined(WorkDir(work, refine), refinement_settings(refine, config, mode),
                  fitted[1] if refine else None, images, fallback)
    return len(images)


def _map(work, refine, num_classes, image_id, written=None):
    workdir = WorkDir(work, refine)
    if not locmap_valid(workdir.locmap(image_id), locmap_made_from(workdir, image_id)):
        map_image(work, refine, num_classes, image_id)
    return image_id


def _mask(work, refine, top, image_id):
    workdir = WorkDir(work, refine)
    if not mask_valid(workdir.mask(image_id), mask_made_from(workdir, top, image_id)):
        mask_image(work, refine, top, image_id)
    return image_id




def build_pipeline(pipeline, root, work, split="train", config=PseudoConfig(), mode=None, refine=True,
                   stages="all", max_proposals=None, seed=0):
    """Add the stages to the Beam ``pipeline``; returns the PCollection of finished image ids.

    ``stages``: ``proposals`` (before HCP is trained: it needs the proposals), ``pseudo`` (from
    scoring on, the proposals and ``WORK/hcp/hcp.keras`` present) or ``all``.
    """
    if stages not in PIPELINE_STAGES:
        raise WskError(f"unknown stages {stages!r}; choose one of {', '.join(PIPELINE_STAGES)}")
    mode = mode or config.score_mode
    max_proposals = config.max_proposals if max_proposals is None else max_proposals
    dataset = VOCDataset(root, split)
    ids = pipeline | "image ids" >> beam.Create(list(dataset.ids))
    if stages != "pseudo":
        ids = ids | "proposals" >> beam.Map(functools.partial(_propose, root, split, work, max_proposals, seed))
    if stages == "proposals":
        return ids
    ids = ids | "scoring" >> beam.ParDo(ScoreProposals(root, split, work, mode, config.candidate_threshold))
    entry = functools.partial(_entry, root, split, work, refine, config)
    if refine:
        fitted = (ids
                  | "moments" >> beam.Map(functools.partial(_moments, work))
                  | "sum moments" >> beam.CombineGlobally(_merge_moments)
                  | "PCA" >> beam.Map(fit_projection, config.pca_energy))
        totals = (ids
                  | "class statistics" >> beam.Map(functools.partial(_class_totals, work),
                                                    fitted=beam.pvalue.AsSingleton(fitted))
                  | "sum class statistics" >> beam.CombineGlobally(_merge_totals))
        entries = ids | "refinement (Eq. 1)" >> beam.Map(entry, fitted=beam.pvalue.AsSingleton(fitted),
                                                          totals=beam.pvalue.AsSingleton(totals))
        write = functools.partial(_write_refined, work=work, refine=refine, config=config, mode=mode)
        written = (entries
                   | "gather" >> beam.combiners.ToList()
                   | "refined.json" >> beam.Map(write, fitted=beam.pvalue.AsSingleton(fitted)))
    else:
        written = (ids
                   | "candidates" >> beam.Map(entry)
                   | "gather" >> beam.combiners.ToList()
                   | "refined.json" >> beam.Map(_write_refined, work=work, refine=refine, config=config,
                                                mode=mode))
    return (ids
            | "localization maps (Eq. 2)" >> beam.Map(
                functools.partial(_map, work, refine, dataset.num_classes),
                written=beam.pvalue.AsSingleton(written))
            | "rough masks (Eq. 5)" >> beam.Map(functools.partial(_mask, work, refine, config.rough_top_regions)))


def run_pipeline(root, work, split="train", config=PseudoConfig(), mode=None, refine=True, stages="all",
                 beam_args=(), max_proposals=None, seed=0):
    """Run the stages on the Beam runner that ``beam_args`` name (``--runner ...``, DirectRunner by
    default); returns when every image's outputs are written."""
    options = PipelineOptions(list(beam_args))
    with beam.Pipeline(options=options) as pipeline:
        build_pipeline(pipeline, root, work, split, config, mode, refine, stages, max_proposals, seed)
