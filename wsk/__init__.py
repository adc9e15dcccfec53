"""wsk: learning to segment with image-level annotations (Wei et al., 2016) in Keras 3.

The pipeline, in the paper's order (``wsk.stage_list.STAGES`` declares it; ``wsk run`` runs it):
proposals -> HCP classifier -> proposal scoring -> cross-image refinement (Eq. 1)
-> localization maps (Eq. 2) -> rough masks (Eq. 5) -> DeepLab-LargeFOV (Eq. 4 or CE)
-> dense CRF -> mIoU.

Submodules are imported lazily so that ``import wsk.models`` never pulls TensorFlow.
"""

__version__ = "0.2.0"
