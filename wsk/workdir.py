"""The work directory: where stages leave their files, one file per image.

Layout and formats (each written to a temporary name, then renamed):

=============================  ====================================================================
``proposals/<id>.npz``         segment proposals (``wsk.proposals.Proposals``, format version inside)
``hcp/``                       HCP training: ``image_finetuned.keras`` (step 1), ``hcp.keras`` and
                               its ``hcp.json`` sidecar (classes, preprocessing, recipe),
                               ``hypotheses-<m>.npz`` (cached hypothesis boxes),
                               ``checkpoints/{image,hypothesis}/`` (BackupAndRestore),
                               ``logs/{image,hypothesis}/`` (TensorBoard events, history.csv)
``scores/<id>.npz``            per-proposal HCP softmax scores ``scores`` (P, C) float32 and fc7
                               features of the candidates: ``candidates`` (K,) int32 proposal
                               indices, ``candidate_labels`` (K,) int32 class index (1-based),
                               ``features`` (K, D) float16 (``wsk.pseudo.score_stage``); ``mode``
                               (one of ``wsk.recipes.SCORE_MODES``) and ``threshold``, ``inputs``
                               (stamp of hcp.keras and the proposals: stale scores are
                               recomputed); ``version``
``refinement.npz``             what the refinement needs of the whole training set, in one small
                               file (``wsk.pseudo.refine_stage``): the calibrated per-class
                               ``thresholds`` (empty without calibration), the PCA projection
                               ``mean``, ``components`` and Eq. 1's per-class totals, with the
                               settings and the digest of the scores they were made from
``refined/<id>.json``          ``{version, made_from, kept: {label: [proposal indices kept by
                               refinement (Eq. 1), best first]}, fallback: [labels]}``;
                               ``fallback`` lists labels with no candidate (their best proposal)
``locmaps/<id>.npz``           localization maps (Eq. 2): ``maps`` (C+1, H, W) float16, channel 0
                               background; ``labels`` the image's class indices; ``version``
``masks/<id>.png``             rough masks (Eq. 5) as palette PNGs
``seg/<variant>/``             segmentation training: ``checkpoints/``, ``logs/``, ``model.keras``
                               and its ``model.json`` sidecar; ``seg/<variant>-noref/`` when trained
                               on the targets computed without refinement
``predictions/<name>/<id>.png``  predicted label maps
``eval/<name>.json``           evaluation results
``run.json``                   what made this directory: dataset, splits, classes, the recipe's
                               values, the wsk version (``wsk.run_record``)
``dataset/``                   a COCO JSON indexed into per-image records (``wsk.data.coco``)
``run-summary.json``           ``wsk run``'s results and stage times
=============================  ====================================================================

``noref/`` under the work directory holds the same ``refined/``, ``locmaps/`` and
``masks/`` computed without refinement (the ablation of Table 3), and a ``refinement.npz`` with the
calibrated thresholds alone where the recipe calibrates them.
"""

import os


class WorkDir:
    """Paths of a work directory (nothing is created until a stage writes)."""

    def __init__(self, root, refine=True):
        self.root = os.fspath(root)
        self.refine = refine
        self._pseudo_root = self.root if refine else os.path.join(self.root, "noref")

    def path(self, *parts):
        return os.path.join(self.root, *parts)

    @property
    def proposals_dir(self):
        return self.path("proposals")

    def proposals(self, image_id):
        return os.path.join(self.proposals_dir, f"{image_id}.npz")

    @property
    def hcp_dir(self):
        return self.path("hcp")

    @property
    def hcp_model(self):
        return self.path("hcp", "hcp.keras")

    @property
    def scores_dir(self):
        return self.path("scores")

    def scores(self, image_id):
        return os.path.join(self.scores_dir, f"{image_id}.npz")

    @property
    def refinement(self):
        return os.path.join(self._pseudo_root, "refinement.npz")

    @property
    def refined_dir(self):
        return os.path.join(self._pseudo_root, "refined")

    def refined(self, image_id):
        return os.path.join(self.refined_dir, f"{image_id}.json")

    @property
    def run_record(self):
        return self.path("run.json")

    @property
    def dataset_index(self):
        return self.path("dataset")

    @property
    def legacy_refined(self):
        """``refined.json`` of work directories made by wsk 0.1 (read when adopting them)."""
        return os.path.join(self._pseudo_root, "refined.json")

    @property
    def quality(self):
        return os.path.join(self._pseudo_root, "quality.json")

    @property
    def locmaps_dir(self):
        return os.path.join(self._pseudo_root, "locmaps")

    def locmap(self, image_id):
        return os.path.join(self.locmaps_dir, f"{image_id}.npz")

    @property
    def masks_dir(self):
        return os.path.join(self._pseudo_root, "masks")

    def mask(self, image_id):
        return os.path.join(self.masks_dir, f"{image_id}.png")

    def seg_dir(self, variant):
        return self.path("seg", variant)

    def seg_model(self, variant):
        return self.path("seg", variant, "model.keras")

    def predictions(self, name):
        return self.path("predictions", name)

    def eval_json(self, name):
        return self.path("eval", f"{name}.json")
