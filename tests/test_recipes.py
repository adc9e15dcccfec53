"""The paper recipe is the paper: every number pinned to the sentence of Wei et al. (2016) it comes
from, and the CLI options that depart from a recipe reach the stage they change."""

import dataclasses

from click.testing import CliRunner

from wsk.cli.main import cli
from wsk.recipes import DEMO_TRUNK, ORDERS, RECIPES, SCORE_MODES, STRATEGIES, VARIANTS, get_recipe, seg_schedule

PAPER = get_recipe("paper")


def test_hcp_numbers_are_section_4_2s():
    hcp = PAPER.hcp
    # "In the image-fine-tuning step, the initial learning rates of the last layer and other layers
    # are set as 0.01 and 0.0001"
    assert (hcp.image_last_lr, hcp.image_lr) == (0.01, 0.0001)
    # "In the hypothesis-fine-tuning step, ... 0.001 and 0.0001"
    assert (hcp.hypothesis_last_lr, hcp.hypothesis_lr) == (0.001, 0.0001)
    # "a mini-batch size of 30 images and multiply the learning rate by 0.1 after every 10 epochs"
    assert (hcp.batch_size, hcp.lr_gamma, hcp.lr_step_epochs) == (30, 0.1, 10)
    # "We take the momentum of 0.9 and the weight decay of 0.0005."
    assert (hcp.momentum, hcp.weight_decay) == (0.9, 0.0005)
    # "The HCP network training is performed for about 30 epochs."
    assert hcp.image_epochs + hcp.hypothesis_epochs == 30
    # §3.1: "only 10 specific proposals are selected"; VGG-16 from ImageNet at 224 x 224, full width
    assert (hcp.hypotheses, hcp.backbone_weights, hcp.image_size, hcp.width) == (10, "imagenet", 224, 1.0)


def test_segmentation_numbers_are_section_4_2s():
    seg = PAPER.seg
    # "we use a mini-batch size of 8 images. The initial learning rate is set as 0.001 (0.01 for the
    # final layer) and divided by 10 after every 5 epochs."
    assert (seg.batch_size, seg.lr, seg.last_lr, seg.lr_gamma, seg.lr_step_epochs) == (8, 0.001, 0.01, 0.1, 5)
    # "The momentum and the weight decay are set as 0.9 and 0.0005. ... about 15 epochs."
    assert (seg.momentum, seg.weight_decay, seg.epochs) == (0.9, 0.0005, 15)
    # DeepLab-LargeFOV [7] (v1) from ImageNet VGG-16: 321 x 321 crops, mirroring, no random scaling
    assert (seg.crop_size, seg.backbone_weights, seg.width) == (321, "imagenet", 1.0)
    assert seg.scale_range == (1.0, 1.0)
    assert seg.output_stride == 8   # DeepLab-LargeFOV's logits: 321 -> 41
    assert seg.class_balance == 0.0   # every class weighs 1 in Eq. 4
    assert seg.copy_paste == 0.0   # DeepLab's crops and mirrors, nothing pasted
    assert seg.target_power == 1.0   # Eq. 4 on the localization maps as §3.3.1 normalises them
    assert seg.loss_on_pixels is False   # DeepLab's loss on the logits' grid
    assert seg.calibrate_biases is False   # the network as trained, no biases fitted afterwards


def test_pseudo_label_numbers_are_section_3s():
    pseudo = PAPER.pseudo
    # §3.1: "about 2,000 proposals per image"; "the confidences larger than 0.5 are ... candidates"
    assert (pseudo.max_proposals, pseudo.candidate_threshold) == (2000, 0.5)
    # §3.1: HCP takes the proposals themselves as its hypotheses (crops), not pooled regions
    assert pseudo.score_mode == "crop"
    # §3.2: "PCA to reserve 98% energy"; "the top half of proposals are selected"
    assert (pseudo.pca_energy, pseudo.refine_keep) == (0.98, 0.5)
    assert pseudo.refine_order == "closest"   # the reading of §3.2 (see wsk.pseudo.refinement)
    # §3.3.2: "combine the top 10 candidate regions as the segmentation mask"
    assert pseudo.rough_top_regions == 10
    assert pseudo.rough_vote == 0.0 and pseudo.rough_crf is False   # the regions united, no CRF


def test_demo_starts_hcp_from_the_built_in_trunk_and_scores_masked():
    from wsk.registry import get_card

    demo = RECIPES["demo"]
    assert demo.hcp.backbone_weights == DEMO_TRUNK and demo.seg.backbone_weights == "hcp"
    card = get_card(DEMO_TRUNK)                                 # a built-in card: it ships
    assert card["builder_args"]["width"] == demo.hcp.width     # and fits the demo's networks
    assert demo.pseudo.score_mode == "masked"
    assert RECIPES["tiny"].hcp.backbone_weights is None         # narrower than the card


def test_names_are_the_papers_and_the_clis_choices_come_from_them():
    assert list(VARIANTS) == ["AN_A", "SN_A", "AN_B", "SN_B"]   # §4.2's list, in Table 1's order
    assert [v.target for v in VARIANTS.values()] == ["soft", "soft", "hard", "hard"]
    assert [v.single_label for v in VARIANTS.values()] == [False, True, False, True]
    assert {"paper", "demo", "tiny"} <= set(RECIPES)
    for command, names in ((["train", "seg", "--help"], list(VARIANTS) + list(STRATEGIES)),
                           (["train", "hcp", "--help"], list(RECIPES)),
                           (["pseudo", "--help"], list(ORDERS) + list(SCORE_MODES))):
        text = CliRunner().invoke(cli, command).output
        assert all(name in text for name in names), (command, names)


def test_refine_order_and_scale_range_options_reach_their_stage(monkeypatch, tmp_path):
    import wsk.stage_list
    import wsk.training

    seen = {}
    monkeypatch.setattr(wsk.stage_list, "run_stages", lambda names, run, pool=None: seen.update(pseudo=run) or {})
    monkeypatch.setattr(wsk.training, "train_segmentation", lambda *a, **k: seen.update(seg=(a, k)))
    root = tmp_path / "root"
    (root / "ImageSets" / "Segmentation").mkdir(parents=True)
    (root / "ImageSets" / "Segmentation" / "mine.txt").write_text("x\n")
    result = CliRunner().invoke(cli, ["pseudo", str(root), str(tmp_path / "w"), "--refine-order", "farthest",
                                      "--no-report", "--split", "mine"])
    assert result.exit_code == 0, result.output
    assert seen["pseudo"].recipe.pseudo == dataclasses.replace(PAPER.pseudo, refine_order="farthest")
    result = CliRunner().invoke(cli, ["pseudo", str(root), str(tmp_path / "w3"), "--rough-crf",
                                      "--no-report", "--split", "mine"])
    assert result.exit_code == 0, result.output
    assert seen["pseudo"].recipe.pseudo == dataclasses.replace(PAPER.pseudo, rough_crf=True)
    result = CliRunner().invoke(cli, ["train", "seg", str(root), str(tmp_path / "w2"), "--scale-range", "0.5",
                                      "1.5", "--split", "mine"])
    assert result.exit_code == 0, result.output
    args, kwargs = seen["seg"]
    assert args[3].seg == dataclasses.replace(PAPER.seg, scale_range=(0.5, 1.5)) and kwargs["split"] == "mine"
    result = CliRunner().invoke(cli, ["train", "seg", str(root), str(tmp_path / "w4"), "--class-balance", "0.5",
                                      "--split", "mine"])
    assert result.exit_code == 0, result.output
    assert seen["seg"][0][3].seg == dataclasses.replace(PAPER.seg, class_balance=0.5)
    result = CliRunner().invoke(cli, ["train", "seg", str(root), str(tmp_path / "w5"), "--copy-paste", "0.25",
                                      "--split", "mine"])
    assert result.exit_code == 0, result.output
    assert seen["seg"][0][3].seg == dataclasses.replace(PAPER.seg, copy_paste=0.25)
    result = CliRunner().invoke(cli, ["train", "seg", str(root), str(tmp_path / "w6"),
                                      "--precision", "mixed_bfloat16", "--split", "mine"])
    assert result.exit_code == 0, result.output
    assert seen["seg"][0][3].seg == dataclasses.replace(PAPER.seg, precision="mixed_bfloat16")
    result = CliRunner().invoke(cli, ["train", "seg", str(root), str(tmp_path / "w7"), "--precision", "float16"])
    assert result.exit_code == 2 and "'float16' is not one of 'float32', 'mixed_bfloat16', 'auto'" in result.output


def test_single_label_variants_make_as_many_updates_as_all_images_with_equal_updates():
    seg = dataclasses.replace(get_recipe("demo").seg, epochs=20, lr_step_epochs=16, equal_updates=True)
    # 184 of 360 images: 20 * 360 / 184 = 39.13 -> 39 epochs, 16 * 360 / 184 = 31.30 -> 31
    scaled = seg_schedule(seg, 184, 360)
    assert (scaled.epochs, scaled.lr_step_epochs) == (39, 31)
    assert scaled.lr == seg.lr and scaled.batch_size == seg.batch_size
    # A* variants, and S* without equal_updates (the paper read literally), keep the recipe
    assert seg_schedule(seg, 360, 360) == seg
    literal = dataclasses.replace(seg, equal_updates=False)
    assert seg_schedule(literal, 184, 360) == literal
    assert get_recipe("demo").seg.equal_updates and not get_recipe("paper").seg.equal_updates


def test_the_equation_functions_take_the_papers_numbers_from_the_recipes():
    """Each paper number a function defaults to is ``wsk.recipes``'s field, not a literal of its own."""
    import importlib
    import inspect

    from wsk.proposals import generate, select_hypotheses
    from wsk.proposals.stage import run_proposals
    from wsk.recipes import HCPRecipe, PseudoConfig

    candidates, refinement, rough_masks, scoring = (importlib.import_module(f"wsk.pseudo.{name}")
                                                    for name in ("candidates", "refinement", "rough_masks", "scoring"))

    expected = [
        (candidates.select_candidates, "threshold", "PseudoConfig.candidate_threshold", 0.5),
        (rough_masks.rough_masks, "top", "PseudoConfig.rough_top_regions", 10),
        (rough_masks.rough_masks, "vote", "PseudoConfig.rough_vote", 0.0),   # the union
        (rough_masks.combine_regions, "vote", "PseudoConfig.rough_vote", 0.0),
        (refinement.pca_from_moments, "energy", "PseudoConfig.pca_energy", 0.98),
        (refinement.fit_projection, "energy", "PseudoConfig.pca_energy", 0.98),
        (refinement.refinement_statistics, "energy", "PseudoConfig.pca_energy", 0.98),
        (refinement.cross_image_refinement, "energy", "PseudoConfig.pca_energy", 0.98),
        (refinement.rank_and_keep, "keep", "PseudoConfig.refine_keep", 0.5),
        (refinement.refine_image, "keep", "PseudoConfig.refine_keep", 0.5),
        (refinement.cross_image_refinement, "keep", "PseudoConfig.refine_keep", 0.5),
        (refinement.rank_and_keep, "order", "PseudoConfig.refine_order", "closest"),
        (refinement.refine_image, "order", "PseudoConfig.refine_order", "closest"),
        (refinement.cross_image_refinement, "order", "PseudoConfig.refine_order", "closest"),
        (scoring.ProposalScorer.__init__, "mode", "PseudoConfig.score_mode", "crop"),
        (scoring.score_proposals, "mode", "PseudoConfig.score_mode", "crop"),
        (select_hypotheses, "m", "HCPRecipe.hypotheses", 10),
        (generate, "max_proposals", "PseudoConfig.max_proposals", 2000),
        (run_proposals, "max_proposals", "PseudoConfig.max_proposals", 2000),
    ]
    for function, parameter, field, paper in expected:
        assert inspect.signature(function).parameters[parameter].default == paper, function   # §3.1-§3.3, [30]
        header = inspect.getsource(function).split('"""')[0]
        assert f"{parameter}={field}" in header.replace(" ", "").replace("\n", ""), (function, header)
    assert (PseudoConfig.candidate_threshold, HCPRecipe.hypotheses) == (0.5, 10)


def test_no_equation_module_writes_a_paper_number_as_a_literal_default():
    """Every function of the modules that implement §3 (all of them, not only those listed above):
    no parameter defaults to a literal that is one of the paper's numbers in ``wsk.recipes``."""
    import ast
    import importlib
    import inspect

    from wsk.recipes import HCPRecipe, PseudoConfig

    paper = {PseudoConfig.candidate_threshold, PseudoConfig.pca_energy, PseudoConfig.refine_keep,
             PseudoConfig.refine_order, PseudoConfig.rough_top_regions, PseudoConfig.score_mode,
             PseudoConfig.max_proposals, HCPRecipe.hypotheses}
    assert paper == {0.5, 0.98, 10, "closest", "crop", 2000}
    modules = [f"wsk.pseudo.{name}" for name in ("candidates", "localization", "refinement", "refine_stage",
                                                  "regions", "rough_masks", "score_stage", "scoring", "targets")]
    modules += [f"wsk.proposals.{name}" for name in ("generate", "hypotheses", "stage")]
    literals = []
    for name in modules:
        tree = ast.parse(inspect.getsource(importlib.import_module(name)))
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                for default in node.args.defaults + [d for d in node.args.kw_defaults if d is not None]:
                    if (isinstance(default, ast.Constant) and not isinstance(default.value, bool)
                            and default.value in paper):
                        literals.append(f"{name}.{node.name}: {default.value!r}")
    assert literals == []
