"""The paper's numbers in one place: every stage reads its defaults from a recipe.

``paper`` is §4.2 of Wei et al. (2016) with HCP [30] and DeepLab-LargeFOV [7];
``demo`` keeps the same procedure but uses small networks, small images and few
epochs so the whole pipeline runs on a laptop CPU in minutes; ``tiny`` is a smoke run of it.
"""

import dataclasses

from wsk.errors import WskError


@dataclasses.dataclass(frozen=True)
class PseudoConfig:
    """§3.1–§3.3: how proposals become localization maps and rough masks."""

    candidate_threshold: float = 0.5   # §3.1: softmax score above which a proposal is a candidate
    pca_energy: float = 0.98           # §3.2: PCA keeps 98% of the feature energy
    refine_keep: float = 0.5           # §3.2: the top half of the re-ranked candidates is kept
    refine_order: str = "closest"      # §3.2 vs Fig. 3: "closest" (caption) or "farthest" (text)
    rough_top_regions: int = 10        # §3.3.2: top 10 regions form a class's rough mask
    score_mode: str = "crop"           # "crop" (paper) or "roi" (fast)
    max_proposals: int = 2000          # §3.1: about 2,000 MCG proposals per image


@dataclasses.dataclass(frozen=True)
class HCPRecipe:
    """§4.2 and [30]: image fine-tuning, then hypothesis fine-tuning with 10 hypotheses."""

    width: float = 1.0
    image_size: int = 224
    hypotheses: int = 10
    batch_size: int = 30
    image_epochs: int = 15              # §4.2: "about 30 epochs" for both steps together
    hypothesis_epochs: int = 15
    image_lr: float = 0.0001            # other layers, image fine-tuning
    image_last_lr: float = 0.01         # last layer, image fine-tuning
    hypothesis_lr: float = 0.0001       # other layers, hypothesis fine-tuning
    hypothesis_last_lr: float = 0.001   # last layer, hypothesis fine-tuning
    lr_step_epochs: int = 10            # lr x 0.1 every 10 epochs
    lr_gamma: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 0.0005
    backbone_weights: str | None = "imagenet"
    seed: int = 0


@dataclasses.dataclass(frozen=True)
class SegRecipe:
    """§4.2 and DeepLab-LargeFOV: batch 8, lr 0.001 (x10 last layer), /10 every 5 epochs."""

    width: float = 1.0
    crop_size: int = 321
    batch_size: int = 8
    lr: float = 0.001
    last_lr: float = 0.01
    lr_step_epochs: int = 5
    lr_gamma: float = 0.1
    epochs: int = 15
    momentum: float = 0.9
    weight_decay: float = 0.0005
    scale_range: tuple = (0.5, 1.5)
    # "imagenet", a VGG-16 weights file, None (from scratch), or "hcp": conv1_1..conv5_3 of the
    # HCP trained in stage 2 (the demo's stand-in for ImageNet, which cannot be downloaded offline)
    backbone_weights: str | None = "imagenet"
    seed: int = 0


@dataclasses.dataclass(frozen=True)
class Recipe:
    name: str
    hcp: HCPRecipe
    seg: SegRecipe
    pseudo: PseudoConfig


RECIPES = {
    "paper": Recipe("paper", HCPRecipe(), SegRecipe(), PseudoConfig()),
    "demo": Recipe(
        "demo",
        HCPRecipe(width=0.125, image_size=64, batch_size=32, image_epochs=60, hypothesis_epochs=2,
                  image_lr=0.01, image_last_lr=0.01, hypothesis_lr=0.0001, hypothesis_last_lr=0.001,
                  lr_step_epochs=45, backbone_weights=None),
        SegRecipe(width=0.125, crop_size=65, batch_size=8, lr=0.01, last_lr=0.01, lr_step_epochs=24,
                  epochs=30, backbone_weights="hcp", scale_range=(1.0, 1.0)),
        PseudoConfig(max_proposals=500, score_mode="roi"),
    ),
}


# A smoke run of the demo (tests, `wsk demo --tiny`): one epoch per step, tiny networks. Not a result.
RECIPES["tiny"] = Recipe(
    "tiny",
    dataclasses.replace(RECIPES["demo"].hcp, width=0.0625, image_epochs=1, hypothesis_epochs=1),
    dataclasses.replace(RECIPES["demo"].seg, width=0.0625, epochs=1),
    dataclasses.replace(RECIPES["demo"].pseudo, max_proposals=100),
)


def get_recipe(name):
    """The recipe called ``name`` (``paper`` or ``demo``)."""
    try:
        return RECIPES[name]
    except KeyError:
        raise WskError(f"unknown recipe {name!r}; choose one of {', '.join(RECIPES)}") from None
