"""What a trained model is, in one typed record (as timm's ``PretrainedCfg``): the JSON sidecar
``wsk train`` writes beside every model, and the ``preprocessing`` entry of every zoo card.

``ModelDescription.to_json`` writes it and ``ModelDescription.from_json`` reads it back, refusing
a record that is not one (unknown or missing fields, wrong types) with a ``WskError``.
"""

import dataclasses

from wsk.classes import check_background_first
from wsk.crf import VOC_IMAGE_SIDE
from wsk.errors import WskError
from wsk.models.preprocessing import MEAN_BGR
from wsk.recipes import get_recipe
from wsk.registry import BUILDERS as ARCHITECTURES   # builder -> task

FORMAT = 1
# fields of wsk 0.1's sidecars that the description now derives (num_classes) or leaves out
LEGACY_FIELDS = ("num_classes", "ignore_label", "column_to_dataset_class")


@dataclasses.dataclass(frozen=True)
class Preprocessing:
    """How raw images become network inputs: ``wsk.models.preprocess_input``."""

    function: str = "wsk.models.preprocess_input"
    input: str = "RGB, uint8 or float in [0, 255]"
    channel_order: str = "BGR"
    mean: tuple = tuple(float(v) for v in MEAN_BGR)   # subtracted, in the channel order above

    def to_json(self):
        return dict(dataclasses.asdict(self), mean=list(self.mean))


PREPROCESSING = Preprocessing()


def recipe_max_side(recipe="paper"):
    """The longer side, pixels, at which a segmentation network trained with ``recipe`` (a name or a
    ``wsk.recipes.Recipe``) runs by default: its training scale. The networks train on photos at
    their own scale (``SegRecipe.scale_range`` 1), so this is the side of the recipe's photos:
    PASCAL VOC's 500 px (``wsk.crf.VOC_IMAGE_SIDE``) for ``paper``; the demo's images for ``demo``
    and ``tiny``, whose side is their HCP's ``image_size`` (the demo's HCP takes each whole image at
    its own size). A bare ``SegRecipe`` says nothing of the photos: None."""
    recipe = get_recipe(recipe) if isinstance(recipe, str) else recipe
    if not hasattr(recipe, "hcp"):
        return None
    return int(VOC_IMAGE_SIDE) if recipe.name == "paper" else int(recipe.hcp.image_size)


@dataclasses.dataclass(frozen=True)
class ModelDescription:
    """A trained model: its architecture and builder arguments, classes, input, how it was trained.

    ``class_names`` are the model's outputs in order (a segmentation model's start with
    ``background``; HCP's column ``j`` is dataset class ``j + 1``).
    """

    architecture: str
    class_names: tuple
    width: float
    image_size: int | None = None        # HCP: the hypothesis side S
    hypotheses: int | None = None        # HCP: M in training
    output_stride: int | None = None     # segmentation: pixels per logit
    output: str = ""
    preprocessing: Preprocessing = PREPROCESSING
    variant: str | None = None           # AN_A, SN_A, AN_B, SN_B
    refined: bool | None = None          # trained on targets made with cross-image refinement
    supervision: str | None = None
    single_label_only: bool | None = None
    crop_size: int | None = None
    max_side: int | None = None          # segmentation: longer side, pixels, it runs at (recipe_max_side)
    recipe: dict | None = None
    training_images: int | None = None
    inputs_digest: str | None = None
    command: str | None = None           # the command that made it
    metrics: dict | None = None          # what it measured while being made (mAP, seconds, ...)
    format: int = FORMAT

    def __post_init__(self):
        if self.architecture not in ARCHITECTURES:
            raise WskError(f"unknown architecture {self.architecture!r}; known: {', '.join(ARCHITECTURES)}")
        names = self.class_names
        if not isinstance(names, (list, tuple)) or not names or not all(isinstance(n, str) for n in names):
            raise WskError("class_names must be a non-empty list of strings")
        object.__setattr__(self, "class_names", tuple(names))
        if self.task == "segmentation":
            check_background_first(names)
        if self.task == "classification" and not isinstance(self.image_size, int):
            raise WskError("an HCP description needs its image_size")

    @property
    def task(self):
        return ARCHITECTURES[self.architecture]

    @property
    def num_classes(self):
        return len(self.class_names)

    def builder_args(self):
        """The keyword arguments of ``wsk.models.<architecture>`` that rebuild this model."""
        args = {"num_classes": self.num_classes, "width": self.width}
        if self.task == "classification":
            args["image_size"] = self.image_size
        if self.task == "segmentation" and self.output_stride is not None:
            args["output_stride"] = self.output_stride
        return args

    def to_json(self):
        """A JSON-ready dict (fields that are None are left out)."""
        record = {key: value for key, value in dataclasses.asdict(self).items() if value is not None}
        return dict(record, class_names=list(self.class_names), preprocessing=self.preprocessing.to_json())

    @classmethod
    def from_json(cls, record, source=None):
        """The description a ``to_json`` dict holds; anything else is a ``WskError`` naming ``source``."""
        if not isinstance(record, dict):
            raise WskError("a model description must be a JSON object", source)
        record = {key: value for key, value in record.items() if key not in LEGACY_FIELDS}
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(record) - fields)
        if unknown:
            raise WskError(f"not a wsk model description (unknown fields {', '.join(unknown)})", source)
        values = dict(record)
        preprocessing = dict(values.get("preprocessing", {}))
        if "mean_bgr" in preprocessing:   # wsk 0.1's sidecars
            preprocessing["mean"] = preprocessing.pop("mean_bgr")
        try:
            values["preprocessing"] = Preprocessing(**{**dataclasses.asdict(PREPROCESSING), **preprocessing})
            return cls(**values)
        except (TypeError, WskError) as err:
            raise WskError(f"not a wsk model description ({err})", source) from None


def hcp_description(class_names, recipe, training_images, digest):
    """The description of an HCP model trained by ``wsk.training.hcp`` with ``recipe``."""
    return ModelDescription(
        "hcp", tuple(class_names), recipe.width, image_size=recipe.image_size,
        hypotheses=recipe.hypotheses, output="max over hypotheses of softmax",
        recipe=dataclasses.asdict(recipe), training_images=training_images, inputs_digest=digest)


def segmentation_description(class_names, variant, soft, single_label, refined, recipe, training_images,
                             digest, max_side=None):
    """The description of a DeepLab-LargeFOV trained by ``wsk.training.segmentation`` as ``variant``
    with ``recipe`` (its ``SegRecipe``); ``max_side``: ``recipe_max_side`` of the whole recipe."""
    return ModelDescription(
        "deeplab_largefov", tuple(class_names), recipe.width, output_stride=recipe.output_stride,
        output=f"logits (N, (H-1)//{recipe.output_stride}+1, (W-1)//{recipe.output_stride}+1, num_classes)",
        variant=variant, refined=bool(refined),
        supervision=("localization maps (Eq. 2), soft cross-entropy (Eq. 4)" if soft
                     else "rough masks (Eq. 5), cross-entropy ignoring 255"),
        single_label_only=bool(single_label), crop_size=recipe.crop_size, max_side=max_side,
        recipe=dataclasses.asdict(recipe), training_images=training_images, inputs_digest=digest)
