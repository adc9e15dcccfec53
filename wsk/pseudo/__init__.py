"""Pseudo-labels from image-level labels (§3.1-§3.3 of Wei et al., 2016).

* ``score_proposals`` / ``ProposalScorer``: HCP softmax and fc7 features of every proposal (§3.1);
* ``select_candidates``: proposals scoring above 0.5 for a ground-truth label (§3.1);
* §3.2, streaming, as the refinement stage and the Beam pipeline run it: ``Moments`` and
  ``pca_from_moments`` (PCA to 98% energy), ``ClassTotals`` (Eq. 1: ``ClassTotals.distances``),
  ``refinement_statistics`` (both over a dataset, one image at a time) and ``refine_image`` (one
  image's kept candidates); ``cross_image_refinement``: the same two calls over candidates in memory;
* ``localization_maps``: Eq. 2 (§3.3.1); ``rough_masks``: Eq. 5 (§3.3.2);
* ``wsk.pseudo.stage.run_pseudo``: all of it over a dataset split, resumable (``wsk pseudo``).

The package itself imports no Keras (the per-image workers of the maps and masks import it):
``ProposalScorer`` is in ``wsk.pseudo.scoring``, ``run_pseudo`` in ``wsk.pseudo.stage``.
"""

from wsk.pseudo.candidates import select_candidates
from wsk.pseudo.localization import localization_maps
from wsk.pseudo.refinement import (ClassTotals, Moments, cross_image_refinement, pca_from_moments, refine_image,
                                   refinement_statistics)
from wsk.pseudo.rough_masks import rough_masks

__all__ = ["ClassTotals", "Moments", "cross_image_refinement", "localization_maps", "pca_from_moments",
           "refine_image", "refinement_statistics", "rough_masks", "select_candidates"]
