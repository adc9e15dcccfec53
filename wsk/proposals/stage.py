"""The proposal stages over a dataset: generate, import MCG, evaluate quality.

Each writes ``WORK/proposals/<id>.npz`` (``Proposals`` format) through
``wsk.stages.run_per_image``: parallel processes, a progress bar, resumable (a valid
output is skipped), failures collected with their file instead of stopping the rest.
"""

import functools
import os

from wsk import storage
from wsk.classes import IGNORE_LABEL
from wsk.data.sources import open_dataset
from wsk.data.voc import MIN_REGION_SHARE
from wsk.errors import WskError
from wsk.io import file_stamp, read_label_png, remove_temporaries
from wsk.proposals.container import Proposals
from wsk.proposals.generate import generate
from wsk.proposals.mcg import load_mcg, mcg_files
from wsk.proposals.quality import DEFAULT_COUNTS, QualityReport, objects_from_classes, objects_from_instances
from wsk.recipes import PseudoConfig
from wsk.stages import progress, run_per_image, say_recomputing
from wsk.workdir import WorkDir


def proposals_done(work, made_from, image_id):
    """Whether the image's proposals file is valid and was made as ``made_from(image_id)`` says."""
    path = WorkDir(work).proposals(image_id)
    if not storage.exists(path):
        return False
    try:
        _, record = Proposals.load_recorded(path)   # one read: valid, and what made it
    except WskError as err:
        say_recomputing(err)
        return False
    return record == made_from(image_id)


def generated_from(root, split, max_proposals, seed, image_id):
    """The ``made_from`` record of generated proposals: method, settings and the image's stamp."""
    image_path = open_dataset(root, split, ids=[image_id]).image_path(image_id)
    return {"method": "wsk.proposals.generate", "max_proposals": max_proposals, "seed": seed,
            "image": file_stamp(image_path)}


def propose_image(root, split, work, max_proposals, seed, image_id):
    """Generate and save the proposals of one image (a worker of ``run_proposals``)."""
    image = open_dataset(root, split, ids=[image_id]).image(image_id)
    generate(image, max_proposals=max_proposals, seed=seed).save(
        WorkDir(work).proposals(image_id), generated_from(root, split, max_proposals, seed, image_id))


def run_proposals(data, work, split="train", jobs=1, max_proposals=PseudoConfig.max_proposals, ids=None, seed=0):
    """Generate proposals (``wsk.proposals.generate``) for every image of ``split`` of DATA (a path or a
    ``wsk.data.sources.DataSource``), or of ``ids``, into ``WorkDir(work).proposals(id)``; returns the
    ``StageReport`` (skipped, done, failed): the ``proposals`` entry of ``wsk.stage_list.STAGES``."""
    import dataclasses

    from wsk.pseudo.stage import pseudo_run
    from wsk.stage_list import run_stage

    run = pseudo_run(data, os.fspath(work), split, jobs=jobs)
    run = dataclasses.replace(run, seed=int(seed), ids=None if ids is None else tuple(ids), recipe=dataclasses.replace(
        run.recipe, pseudo=dataclasses.replace(run.recipe.pseudo, max_proposals=int(max_proposals))))
    return run_stage("proposals", run)


def _imported_from(files, max_proposals, image_id):
    return {"method": "mcg", "max_proposals": max_proposals, "source": file_stamp(files[image_id])}


def _import_image(files, work, max_proposals, image_id):
    load_mcg(files[image_id], max_proposals).save(WorkDir(work).proposals(image_id),
                                                  _imported_from(files, max_proposals, image_id))


def import_mcg(mcg_dir, work, jobs=1, max_proposals=None):
    """Convert every ``MCG_DIR/<id>.mat`` into ``WorkDir(work).proposals(id)``; returns the ``StageReport``."""
    files = mcg_files(os.fspath(mcg_dir))
    if not files:
        raise WskError("no .mat files", mcg_dir)
    work = os.fspath(work)
    worker = functools.partial(_import_image, files, work, max_proposals)
    remove_temporaries(WorkDir(work).proposals_dir)
    made_from = functools.partial(_imported_from, files, max_proposals)
    return run_per_image("import-mcg", sorted(files), worker,
                         is_done=functools.partial(proposals_done, work, made_from), jobs=jobs)


def ground_truth_objects(dataset, image_id, min_fraction=None):
    """``(masks, classes, valid)`` of one image: ``SegmentationObject`` instances where present,
    else connected components of ``SegmentationClass``; ``valid`` excludes the 255 pixels.
    Returns None when the image has no ground-truth mask."""
    class_map = dataset.mask(image_id)
    if class_map is None:
        return None
    instance_path = dataset.object_mask_path(image_id)
    if instance_path is not None:
        instances = read_label_png(instance_path)
        if instances.shape != class_map.shape:
            raise WskError(f"instance map {instances.shape} and class map {class_map.shape} differ in size",
                           instance_path)
        masks, classes = objects_from_instances(instances, class_map)
    else:
        fraction = MIN_REGION_SHARE if min_fraction is None else min_fraction
        masks, classes = objects_from_classes(class_map, fraction)
    return masks, classes, class_map != IGNORE_LABEL


def evaluate_proposals(root, work, split="val", counts=DEFAULT_COUNTS, ids=None, min_fraction=None):
    """ABO and recall at IoU 0.5 of the proposals in ``work`` against the ground truth of ``split``,
    at each number of kept proposals in ``counts``: a ``QualityReport`` (``.summary()``, ``.format()``).

    Images without a mask are skipped; a missing proposals file is a ``WskError``.
    """
    dataset = open_dataset(root, split, ids=ids)
    workdir = WorkDir(work)
    report = QualityReport(dataset.class_names, counts)
    missing = [i for i in dataset.ids if not storage.exists(workdir.proposals(i))]
    if missing:
        raise WskError(f"{len(missing)} image(s) of {split!r} have no proposals, e.g. {missing[0]} "
                       "(run `wsk proposals run` first)", workdir.proposals(missing[0]))
    with progress(dataset.ids, label="proposal quality") as bar:
        for image_id in bar:
            truth = ground_truth_objects(dataset, image_id, min_fraction)
            if truth is None:
                report.skipped.append(image_id)
                continue
            masks, classes, valid = truth
            proposals = Proposals.load(workdir.proposals(image_id))
            if proposals.shape != valid.shape:
                raise WskError(f"proposals of size {proposals.shape} do not match the mask's {valid.shape}",
                               workdir.proposals(image_id))
            report.add(proposals, masks, classes, valid)
    if not report.proposals_per_image:
        raise WskError(f"no image of {split!r} has a ground-truth mask to evaluate against", root)
    return report
