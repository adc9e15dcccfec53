"""The networks of the paper in pure Keras 3 (``keras.ops``; importing this never loads TensorFlow).

* ``deeplab_largefov``: the segmentation network (§3.3, DeepLab-LargeFOV [7]).
* ``hcp``, ``hcp_hypothesis_model``, ``hcp_parts``: the HCP classifier (§3.1, [30]).
* ``preprocess_input``: RGB -> BGR minus DeepLab's mean, for training, inference and export.
* ``segment``, ``Segmenter``: test-time segmentation of raw images (``wsk.models.inference``);
  ``network_output_stride``: a segmentation network's pixels per logit, read off the network.
"""

from wsk.models.deeplab import deeplab_largefov, deeplab_output_size
from wsk.models.hcp import (CrossHypothesisMaxPooling, FoldHypotheses, hcp, hcp_hypothesis_model,
                            hcp_image_size, hcp_parts)
from wsk.models.inference import Segmenter, network_output_stride, segment
from wsk.models.layers import CaffePooling2D
from wsk.models.preprocessing import MEAN_BGR, preprocess_input

__all__ = [
    "CaffePooling2D",
    "CrossHypothesisMaxPooling",
    "FoldHypotheses",
    "MEAN_BGR",
    "Segmenter",
    "deeplab_largefov",
    "deeplab_output_size",
    "hcp",
    "hcp_hypothesis_model",
    "hcp_image_size",
    "hcp_parts",
    "network_output_stride",
    "preprocess_input",
    "segment",
]
