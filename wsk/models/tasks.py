"""What a network does, read off its input: the one place that knows the two tasks."""

from wsk.errors import WskError

INPUT_RANKS = {4: "segmentation", 5: "classification"}   # (B, H, W, 3) images, HCP's (B, M, S, S, 3)


def raw_network(model):
    """The network a ``wsk.models.Segmenter`` wraps (its ``network``), or ``model`` itself."""
    return getattr(model, "network", model)


def model_task(model):
    """``segmentation`` for a network on images ``(B, H, W, 3)`` (or a ``Segmenter``),
    ``classification`` for HCP's hypotheses ``(B, M, S, S, 3)``; anything else is a ``WskError``."""
    shape = tuple(raw_network(model).inputs[0].shape)
    if len(shape) not in INPUT_RANKS:
        raise WskError(f"a model with input shape {shape} is neither a segmentation (B, H, W, 3) nor an "
                       "HCP (B, M, S, S, 3) model")
    return INPUT_RANKS[len(shape)]
