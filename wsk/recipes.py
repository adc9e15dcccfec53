"""The paper's numbers in one place: every stage reads its defaults from a recipe.

``paper`` is §4.2 of Wei et al. (2016) with HCP [30] and DeepLab-LargeFOV [7];
``demo`` keeps the same procedure but uses small networks, small images and few
epochs so the whole pipeline runs on a laptop CPU in minutes; ``tiny`` is a smoke run of it.

Where the demo departs from the paper, and why (measured on the demo's 480 images, seed 0,
first 120 training images, 500 proposals, no refinement; ``benchmarks/bench_scoring.py``):

* **HCP starts from the built-in trunk** ``hcp_vgg16.broad64_480k`` (``wsk pretrain --corpus broad``), ImageNet's
  stand-in offline; its image step trains the lower layers at 0.001 (the paper: 0.0001), 8 epochs. From random weights
  HCP reached val mAP 0.69 after 60 epochs and died on a larger dataset; from the first trunk, ``hcp_vgg16.corpus64``,
  it is at 0.92 after one epoch and 0.95 after fifteen. ``broad64`` continues ``corpus64`` on 39 classes (11 more shapes
  and textures, objects on photograph crops). Chosen on tuning style 1 of ``benchmarks/bench_generalization.py`` (480
  images, dataset seed 11; corpus64 -> broad64): HCP val mAP 0.920 -> 0.942, a label's top proposal IoU 39.1 -> 54.7,
  localization maps 38.4 -> 46.8, rough masks 39.1 -> 45.8. On two test styles: 2498475145, mAP 0.705 -> 0.862, maps
  34.5 -> 52.8, masks 37.4 -> 47.0; 109818995, mAP 0.836 -> 0.872, maps 45.0 -> 57.9, masks 47.3 -> 58.5.
  ``broad64_480k`` continues ``broad64`` on 480,000 broad-corpus images (3 epochs; an H200 with JAX, ``wsk pretrain``
  without TensorFlow): held-out corpus mAP 0.622 -> 0.756 on the same 4,000 images. Chosen on tuning styles 1, 3, 10
  (broad64 -> broad64_480k, everything after the proposals redone): HCP val mAP 0.945, 0.893, 0.871 -> 0.982, 0.946,
  0.905; top proposal IoU 49.5, 55.7, 57.6 -> 57.3, 65.4, 60.4; rough masks 56.7, 65.2, 64.6 -> 61.0, 71.3, 68.1; AN_B
  49.1, 58.0, 39.8 -> 52.1, 64.3, 46.7. On the test styles of 3357fa7's evaluation (376810274, 2802136467, 1980630111):
  mAP 0.868 -> 0.907, rough masks 60.8 -> 62.8, the lowest class's mean in them 23.6 -> 35.1, AN_B 40.7 -> 42.1 (36.1 to
  53.3; 2802136467 fell 45.8 -> 37.0 on level masks, the networks' spread).
* **Proposals are scored ``masked``** (``wsk.pseudo.scoring``) instead of cropped. Crops of the 64 px images' small
  regions magnify their texture far beyond anything HCP was fine-tuned on: the top-scored proposal of a label overlaps
  it at IoU 0.16 (crop) or 0.08 (roi), and the label's best proposal ranks about 215th of 500. Masked scoring shows each
  region in place: top proposal IoU 0.60, best proposal ranked 8th, rough masks 63.5 mIoU (crop 26.7, roi 19.6). Fewer
  proposals cost quality (250: 59.7, 150: 50.5), so the demo keeps 500.
* **Candidates score above 0.9**, not 0.5. Masked, almost every region that holds a whole object scores above 0.5,
  however much background it also holds (117 candidates per label, 28% of them at IoU >= 0.5), and Eq. 2's mean of them
  spreads over the background: localization maps 43.8 mIoU, triangle and cross 2. At 0.9: 36 candidates per label, 57%
  precise, maps 61.0 (every class >= 48), rough masks 66.4 instead of 63.7 (all 360 training images, with refinement).
  14% of labels then have no candidate and take their single best proposal (wsk.pseudo.stage).
* **Each class's threshold is calibrated on the images without it** (``PseudoConfig.candidate_quantile`` 0.75,
  ``wsk.pseudo.calibration``): raised to what the class's highest proposal score reaches on three quarters of the
  training images that do not hold the class. HCP has no background class, and masked, a background region whose edge
  traces an object's outline scores as that object: on tuning style 10 the arrow's top-scored proposal missed the arrow
  (recall < 0.2) for 66% of its labels, though a proposal at IoU 0.64 was there on average. Chosen on tuning styles 1,
  3, 10 from 0.5, 0.75 and 0.9 (also tried: a per-proposal quantile, 0.99 to 0.999, about as good). Rough masks 54.0,
  64.9, 63.1 -> 56.6, 65.2, 64.6, the weakest class 10.0, 37.9, 11.4 -> 25.1, 39.6, 17.4; AN_B val 46.2, 57.7, 37.8 ->
  49.1, 58.0, 39.8 and AN_A 37.5, 45.9, 38.4 -> 41.5, 48.4, 37.4. Labels left without a candidate (they take their best
  proposal) 60, 107, 99 -> 150, 158, 173 of about 580. On fresh test styles (seeds from 3357fa7) rough masks 60.8, AN_B
  40.7 (``bench_generalization``; README).
* **Rough masks vote: the 75 regions of highest Eq. 5 confidence, and a pixel joins the class's mask where at least 35%
  of them cover it** (``PseudoConfig.rough_vote``), instead of the union of the top 10. A union takes the extent of its
  loosest region: at 500 proposals a masked region that holds the object and much background still ranks among the top
  10. Rough masks on the training images of tuning styles 1, 3, 10 of ``benchmarks/bench_generalization.py`` (top 10
  united -> voted): 45.9, 58.1, 56.4 -> 54.0, 64.9, 63.1 (mean 53.5 -> 60.7); on the demo's own dataset 66.5 -> 72.6.
  Chosen on the tuning styles from 40, 50, 75 or 100 regions x 35%, 40% or 45%: every choice from 40 to 100 regions at
  35% or 40% gives a mean of 60.0 to 60.9, and 75 at 35% sits inside that plateau (a first grid of 10 to 50 regions x
  30% to 60%, on styles 1 and 3, put the plateau there).
* **Segmentation: no dropout, last layer at 10x, 45 epochs (lr step at 36), in bfloat16 where the hardware has it**
  (``SegRecipe.precision`` "auto", ``wsk.training.engine.resolve_precision``). The networks underfit: SN_B scored val
  17.8 with the last layer at 10x (11.8, background only, at 1x), 22.9 without dropout, 27.9 after 30 epochs; 0.03
  diverges to background. On tuning style 10 AN_B scored 39.7 on its own training images against its masks' 63.1;
  trained on style 1's ground truth, 63.2 where the stride-8 grid allows 85.1. Epochs 20 -> 30: AN_B, style 3, 52.7 ->
  57.7. In float32, 45 epochs took a style's segmentation from 308 s to 502 s, over the demo's budget (1.1x of 517 s);
  mixed bfloat16 (float32 weights, bfloat16 arithmetic; the saved network is float32) takes a step in 26 ms, not 44, on
  AVX512-BF16: 323 s. It trains as well: AN_A on d8b5c71's test style 3421045044, where its crescent had fallen to 5,
  gave 40.5 and 50.9 in float32 (seeds 0, 1) and 53.1, 53.8 in bfloat16. Tuning styles 10, 1, 3 (30 epochs -> 45 in
  float32 -> 45 in bfloat16): AN_A 65.2 -> 66.4 -> 66.8, SN_A 55.5 -> 57.1 (own-image biases) -> 61.0, AN_B 71.3 -> 75.6
  -> 75.7, SN_B 66.7 -> 71.4 -> 72.3; the lowest class of any 9.7 -> 7.9 -> 14.8. Rejected on 3421045044 (AN_A, 40.5):
  Adam (28.7 at 0.001), a base rate of 0.03 (42.9, crescent 2.7); on styles 1, 3, 10, a random shift of 0 to 7 px.
* **Segmentation at output stride 4** (``SegRecipe.output_stride``; DeepLab-LargeFOV's is 8). The demo's images are 64
  px, so a stride-8 network gives 9 x 9 logits, one per 8 px (on the paper's 500 px photos one per 1.6% of the side;
  here one per 12.5%). Strokes 3 to 6 px wide, the thin shapes of the test styles (bar, keyhole, arrow, chevron), fall
  between its grid points: they were under 15 IoU in every network. Labels picked on the stride-8 grid and up-sampled as
  the network's are score 85.1 mIoU against the ground truth of tuning style 1's val images (its thinnest class 70), on
  the stride-4 grid 98.5 (every class >= 97). ``output_stride=4`` computes the same filters twice as densely, the way
  DeepLab itself made VGG-16 dense (``wsk.models.deeplab``: pool3 at stride 1, conv4, conv5 and fc6 dilated 2, 4 and
  24), so the HCP trunk loads unchanged. AN_B, val mIoU on tuning styles 1, 3, 10 (the same rough masks, stride 8 -> 4):
  52.1, 64.3, 46.7 -> 57.9, 71.4, 56.7; with fc6 dilated 12 instead of 24 (half the field of view): 57.7, 67.7, 56.2.
  Fewer epochs do not pay for the denser grid: 15 gave 37.2, 47.2, 27.1 and 20 gave 54.1, 62.7, 44.0. Every variant,
  mean over the tuning styles (``bench_generalization``, stride 8 -> 4): AN_A 44.9 -> 51.0, SN_A 35.1 -> 39.6, AN_B 54.4
  -> 61.7, SN_B 42.6 -> 47.2; the lowest class of any variant 0.6 -> 5.0. On fresh test styles (seeds from 8fa82c2):
  AN_B 59.3 (47.5 to 69.4); at stride 8, on 3357fa7's test styles, it was 42.1 (36.1 to 53.3).
* **Eq. 1's refinement keeps the closest half** (the paper's procedure as ``wsk.pseudo.refinement`` reads it; the demo's
  until it took the contrast order, next item), though on no dataset measured did it raise the pseudo-labels, and here
  is why. §3.2 assumes that candidates tightly around an object resemble each other across images, so that Eq. 1's
  distance ranks them first. Measured within each image's candidates of a label
  (``benchmarks/bench_refinement_ranking.py``: the first 200 training images, 242 to 269 (image, label) groups of at
  least 4 candidates), the Spearman correlation of Eq. 1's distance with the candidate's IoU is +0.21, +0.08 and +0.09
  on tuning styles 1, 3 and 10 and 0.00 on the demo's dataset: the closest half has a lower mean IoU than all candidates
  (0.42 against 0.47, 0.58 / 0.60, 0.54 / 0.56, 0.56 / 0.57). HCP's features say which class a region shows, not how
  tightly it holds it; on the demo the distance follows the region's area instead (correlation -0.27: the large,
  background-holding regions, the majority, are the typical ones). Keeping half by a ranking that carries no IoU leaves
  Eq. 2 averaging half as many proposals. Localization maps / rough masks, closest -> farthest -> no refinement: style 1
  44.7 / 45.9 -> 51.7 / 48.4 -> 49.3 / 48.4; style 3 54.0 / 58.1 -> 53.7 / 58.1 -> 56.1 / 58.9; style 10 55.9 / 56.4 ->
  57.8 / 57.2 -> 59.2 / 57.2; demo 65.1 / 66.5 -> 58.3 / 64.3 -> 64.9 / 67.3. No order of Eq. 1 holds on every dataset,
  so the demo kept the paper's; ``wsk demo`` reports the pseudo-labels without refinement beside it (Table 3's
  ablation). The networks, as Table 3 measures them (tuning styles 1, 3, 10, gradients clipped; with -> without
  refinement): SN_A 33.8, 35.9, 29.2 -> 31.4, 34.2, 27.2 (refinement +2.1 on average, as the paper's +2), AN_A 36.2,
  46.7, 32.6 -> 38.0, 46.1, 33.5 (-0.7). With calibrated candidate thresholds (the calibration item above) there is less
  for Eq. 1 to remove: SN_A 36.3, 36.2, 30.9 -> 36.2, 36.8, 29.9 (+0.2), AN_A 41.5, 48.4, 37.4 -> 42.2, 48.3, 36.4
  (+0.1).
* **Refinement ranks against the class's false alarms** (``PseudoConfig.refine_order`` ``"contrast"``,
  ``wsk.pseudo.refinement``; the paper recipe keeps Eq. 1's ``"closest"``). The item above finds that Eq. 1's distance
  carries no IoU. What a thin class's candidates hold besides the object shows why (tuning style 10, arrow, first 200
  training images): its top-scored proposal is 52% background and 20% other objects, at IoU 0.24, where a proposal at
  IoU 0.95 scores 0.64 against the top one's 0.93. Masked, a background region whose edge traces the outline, or a part
  of another object, looks like the class. Images without the class show exactly those regions: their top proposals for
  it cannot hold it. ``contrast`` keeps the half of each image's candidates whose Eq. 1 distance minus their average
  distance to those false alarms (10 per image without the class, ``PseudoConfig.refine_negatives``) is smallest. That
  key does carry IoU where Eq. 1's does not (``benchmarks/bench_refinement_ranking.py``, the first 200 training images
  of tuning styles 1, 3, 10, 265 to 279 (image, label) groups): its Spearman correlation with a candidate's IoU is
  -0.44, -0.48, -0.46 against Eq. 1's +0.02, +0.12, +0.04, and the half it keeps has a mean IoU of 0.60, 0.73, 0.68
  against 0.50, 0.62, 0.59 for Eq. 1's closest half (all candidates: 0.50, 0.63, 0.59). Tuning styles 1, 3, 10 of
  ``benchmarks/bench_generalization.py``, closest -> contrast (same proposals and HCP): kept precision 57.3, 68.2, 77.3
  -> 73.5, 86.0, 87.0%; localization maps 52.4, 61.3, 59.1 -> 55.0, 66.6, 61.6; rough masks 61.0, 71.3, 68.1 -> 62.7,
  71.2, 68.7. Also tried, on the same styles: a logistic regression per class on the same candidates and false alarms
  (scikit-learn, C 0.01; the top proposal of a label: kite 0.39 -> 0.46, keyhole 0.31 -> 0.39, arrow 0.22 -> 0.26; maps
  and masks within 1.2 of the nearest-mean rule above, which needs only Eq. 1's streamed sums); discarding regions that
  enclose a hole (a background region around the object: masks 61.0, 71.3, 68.1 -> 60.8, 71.3, 68.2). The networks,
  every variant's mean over the tuning styles (``bench_generalization``, closest -> contrast): AN_A 51.0 -> 54.2, SN_A
  39.6 -> 40.0, AN_B 61.7 -> 61.3, SN_B 47.2 -> 49.1; arrow, whose wrong candidates (the background around its
  silhouette) occur only in images that hold it, fell (masks 25.0 -> 23.9). On fresh test styles (seeds from 626edaf):
  maps 56.9, masks 63.5, AN_B 55.9. On the demo's own dataset (``wsk demo``): maps 62.5 -> 66.7, masks 71.4 -> 72.5
  (62.6 and 72.6 without refinement), AN_A 57.8 -> 61.0, SN_A 35.9 -> 41.2, AN_B 69.1 -> 70.3 (74.4 -> 76.7 with CRF),
  SN_B 47.1 -> 51.6.
* **Network_A learns squared maps on every pixel** (``SegRecipe.target_power`` 2, ``loss_on_pixels``). The A variants
  lost classes whose maps were fine (626edaf's test style 4162626722: crescent maps 61.4, AN_A 10.0). On its own
  training images AN_A gave crescent pixels 0.32 where the maps give 0.60 (``benchmarks/bench_soft_targets.py``; tuning
  style 1's chevron 0.31 against 0.58). Diffuse maps give targets near 0.6 : 0.4, a logit margin of 0.4, and the
  stride-4 logits are up-sampled at test time: beside a background grid point at -2.5 the class keeps a seventh of the
  way. Squaring (0.69 : 0.31) widens the margin; the loss on the up-sampled logits trains the one test time sees. Tuning
  styles 1, 3, 10 (the same pseudo-labels; the paper -> squared -> squared on every pixel): AN_A 49.3, 64.9, 48.5 ->
  49.8, 64.9, 48.9 -> 52.0, 66.2, 47.4 (mean 54.2 -> 55.2); SN_A 39.3, 45.1, 35.6 -> 42.4, 49.1, 32.6 -> 43.3, 49.8,
  34.7 (40.0 -> 42.6); AN_B on every pixel 60.0, 68.7, 55.2 -> 59.5, 71.1, 53.9, so all four variants take it. Also
  tried: gamma 4 (AN_A 50.9, 64.1, 46.3), weights by inverse class frequency (49.3 on style 1). The landed code, run by
  ``bench_generalization`` (the same loss, other float rounding): AN_A 51.1, 63.6, 47.7 (54.1), SN_A 41.7, 50.8, 34.3
  (42.3): AN_A's gain is inside its run-to-run spread (up to 5 points a style). It explains a small part of the loss
  only: chevron's training pixels get 0.33 from AN_A (was 0.31; maps 0.58), and it wins 29% of them (was 23%).
* **Each network's class biases are fitted on pseudo-labels** (``SegRecipe.calibrate_biases``,
  ``wsk.training.class_biases``): the networks still give thin, diffuse classes to background (tuning style 10, arrow:
  AN_A 0.9 IoU, its maps 17.7). One logit bias per class, by coordinate ascent on the mIoU of the labels against the
  targets on the training images; no ground truth, and it travels in ``fc8``. Tuning styles 1, 3, 10 (the same
  networks): AN_A 51.1, 63.6, 47.7 -> 51.6, 67.7, 50.4; SN_A 41.7, 50.8, 34.3 -> 43.5, 52.3, 36.1; AN_B 59.5, 71.1, 53.9
  -> 60.8, 73.4, 57.9; SN_B 48.5, 56.8, 42.2 -> 49.3, 58.2, 44.8 (arrow: AN_A 13.9, AN_B 27.5); matching each class's
  pixel count instead lowered 3 of the 12. Test styles (seeds from 6eca922; the same networks without -> with): AN_A
  50.7 -> 54.6, SN_A 40.8 -> 42.5, AN_B 51.4 -> 54.1, SN_B 48.6 -> 49.4, 11 of 12 up. Also tried, the biases fitted
  after it: each class's loss weighted by its share f of the targets as f ** -0.5 (``SegRecipe.class_balance``): AN_A
  58.0, SN_A 42.6, AN_B 62.8, SN_B 51.7 on the tuning styles, the weakest class lower (SN_A's arrow from 12.1 to 4.9).
  **S* are fitted on the training images they never saw** (the multi-label ones,
  ``wsk.training.segmentation.calibration_set``): on its own images SN_A is confident, and its biases came out -0.25 to
  -1.75, lowering every class on new images. Tuning styles 10, 1, 3 (45-epoch networks, the same weights; own ->
  unseen): SN_A 48.9, 51.4, 70.9 -> 53.7, 53.3, 78.1 (arrow 7.9 -> 18.3, chevron 9.2 -> 18.6), SN_B 66.7, 70.4, 77.2 ->
  67.4, 70.5, 78.0. Test styles (seeds from d8b5c71, the copy-paste networks): SN_A 46.3 -> 49.0 (keyhole 5.1 -> 14.9),
  SN_B 55.7 -> 55.3 (its weakest class mean, arrow, 15.6 -> 23.1).
* **A dense CRF over the rough masks is an option, not the demo's** (``PseudoConfig.rough_crf``): the masks rise on
  every tuning style (62.7, 71.2, 68.7 -> 65.2, 74.0, 72.1), AN_B trained on them does not (60.0, 68.7, 55.2 -> 61.5,
  73.1, 48.7; style 10's arrow 10.0 -> 2.2).
* **Segmentation gradients are clipped at a global norm of 20** (``SegRecipe.clip_norm``; DeepLab does not clip). On
  tuning style 1 SN_B diverged in its 28th of 42 epochs: one step's gradient norm reached 465 (median 3 to 10), and the
  network went to background only (val 13.7). Clipped at 10 or 20: 34.6 and 35.2; at 20, 3% to 7% of the steps are
  clipped. Tuning styles 1, 3, 10: AN_A 36.3, 47.1, 34.3 -> 36.2, 46.7, 32.6, AN_B 40.4, 45.2, 37.9 -> 40.3, 51.6, 38.5.
  A base rate of 0.02, clipped, was worse.
* **S* variants make as many updates as A*** (``SegRecipe.equal_updates``). The demo's 184 single-label images are half
  its 360, so 20 epochs gave SN_A and SN_B half the updates, and they underfit the thin class: val cross IoU 7.5 (SN_A)
  and 26.8 (SN_B), 0.6 and 3.1 after the CRF. With 40 epochs (lr step at 32; the scaling gives 39 and 31): SN_A 34.2 ->
  34.9 mIoU, cross 19.7; SN_B 40.2 -> 42.0, cross 29.2.
* **Every segmentation crop takes the objects of another training image** (``SegRecipe.copy_paste`` 1,
  ``wsk.data.augmentation``; copy-paste, as ClassMix and Simple Copy-Paste do it): its object pixels, image and target
  alike, wherever the crop has no object of its own. The S* networks fit their single-label training images and fail on
  images of several classes, giving objects to background and to each other (tuning style 10, SN_A on its single- /
  multi-label training images: pentagon 84 / 29). Tuning styles 1, 3, 10 (the same pseudo-labels; none -> half the crops
  -> every crop): AN_A 51.6, 67.7, 50.4 -> 57.2, 77.1, 55.9 -> 56.8, 78.9, 59.8; SN_A 43.5, 52.3, 36.1 -> 50.6, 62.5,
  39.1 -> 49.7, 67.8, 49.1; AN_B 60.8, 73.4, 57.9 -> 65.1, 79.3, 64.3 -> 68.7, 79.2, 66.1; SN_B 49.3, 58.2, 44.8 ->
  59.4, 72.0, 51.9 -> 66.4, 71.0, 62.5. Rejected on style 10: a square box instead (CutMix) cuts shapes apart (AN_B 57.9
  -> 39.5); two images' objects per crop (AN_A 59.8 -> 54.2). Test styles (seeds from d8b5c71, the same pseudo-labels,
  none -> every crop): AN_A 47.1 -> 51.5, SN_A 34.2 -> 46.3, AN_B 52.5 -> 57.4, SN_B 41.6 -> 55.7, 10 of 12 up (AN_B
  49.2 -> 43.0 on 3843095033, triangle beside hourglass); the weakest class mean of any variant 4.0 -> 4.9 (AN_A,
  crescent). Demo: AN_B 72.6 -> 80.9.
"""

import dataclasses

from wsk.errors import WskError


DEMO_TRUNK = "hcp_vgg16.broad64_480k"  # the built-in trunk card the demo's HCP starts from (zoo/cards)
# §3.2's refinement keeps the candidates closest or farthest first (Eq. 1), or those closer to the class's
# candidates in other images than to its false alarms in the images without it (wsk.pseudo.refinement)
ORDERS = ("closest", "farthest", "contrast")
# proposal scoring (wsk.pseudo.scoring): crop each box (the paper), pool boxes from one trunk pass, or
# the whole image with everything outside the proposal's segment erased
SCORE_MODES = ("crop", "roi", "masked")


@dataclasses.dataclass(frozen=True)
class PseudoConfig:
    """§3.1–§3.3: how proposals become localization maps and rough masks."""

    candidate_threshold: float = 0.5   # §3.1: softmax score above which a proposal is a candidate
    # a class's threshold raised to this quantile of its highest score on each training image
    # without the class (wsk.pseudo.calibration; the demo); None: the fixed threshold alone (the paper)
    candidate_quantile: float | None = None
    pca_energy: float = 0.98           # §3.2: PCA keeps 98% of the feature energy
    refine_keep: float = 0.5           # §3.2: the top half of the re-ranked candidates is kept
    refine_order: str = "closest"      # §3.2: "closest", "farthest" or "contrast" first (wsk.pseudo.refinement)
    # "contrast": the highest-scoring proposals of each class an image does not hold, its false alarms
    refine_negatives: int = 10
    rough_top_regions: int = 10        # §3.3.2: top 10 regions form a class's rough mask
    # §3.3.2 "combines" them: 0 unites them (the paper); f > 0 keeps the pixels that at least a
    # fraction f of them cover (wsk.pseudo.rough_masks.combine_regions; the demo, module docstring)
    rough_vote: float = 0.0
    # a dense CRF over each rough mask, its unary mostly the mask, partly the localization maps
    # (wsk.pseudo.rough_masks.crf_rough_mask; the demo, module docstring); False: Eq. 5's masks (the paper)
    rough_crf: bool = False
    score_mode: str = "crop"           # "crop" (paper), "roi" (fast) or "masked" (wsk.pseudo.scoring)
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
    # training length by validation: each step keeps its epoch of best val mAP, and the hypothesis
    # step's model is kept only if it beats the image step's (``wsk.training.hcp``); the paper
    # trains its fixed epochs (False). Off in every recipe: whole-image val mAP does not measure what
    # scoring needs. With the demo recipe it kept the image step's model on both datasets measured
    # (the hypothesis step lowered val mAP by 0.001 and 0.006), and that model ranks proposals worse:
    # top proposal IoU 60.6 -> 58.8, rough masks 66.1 -> 64.4 (demo, seed 0); 55.3 -> 52.4 and
    # 55.6 -> 55.9 (photo style, seed 3), each with 480 images and the demo recipe otherwise.
    keep_best: bool = False


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
    # random scaling of the training images: none in DeepLab-LargeFOV (v1, [7]: 321 crops and
    # mirroring only); (0.5, 1.5) is DeepLab v2's, kept as an option (wsk train seg --scale-range)
    scale_range: tuple = (1.0, 1.0)
    dropout: float = 0.5   # after fc6 and fc7, as in DeepLab
    # S* variants train on the single-label images only. False: ``epochs`` passes over them (the paper's "about 15
    # epochs" read literally). True: as many updates as A*, epochs and lr steps scaled up (``seg_schedule``).
    equal_updates: bool = False
    # "imagenet", a VGG-16 weights file, None (from scratch), or "hcp": conv1_1..conv5_3 of the
    # HCP trained on the dataset (§3.1; the demo's stand-in for ImageNet, which cannot be downloaded offline)
    backbone_weights: str | None = "imagenet"
    seed: int = 0
    # the largest global norm of a step's gradients (Keras's ``global_clipnorm``); None: none, as DeepLab trains
    clip_norm: float | None = None
    # pixels per logit: 8 is DeepLab-LargeFOV's; 4 computes the same filters twice as densely (wsk.models.deeplab)
    output_stride: int = 8
    # Network_A's targets sharpened, p-hat ~ p^gamma, before Eq. 4's normalisation
    # (wsk.losses.SoftMultiLabelCrossEntropy); 1: the localization maps as they are (the paper)
    target_power: float = 1.0
    # the loss on every pixel of the crop, the logits up-sampled to it as at test time
    # (wsk.losses, ``upsample``); False: on the logits' grid, the targets picked there (DeepLab)
    loss_on_pixels: bool = False
    # one bias per class added to the trained logits, fitted to agree best with the network's own
    # pseudo-labels (wsk.training.class_biases); False: the network as trained (the paper)
    calibrate_biases: bool = False
    # each class's loss weighted by its share f of the training targets as f ** -class_balance
    # (wsk.training.class_weights); 0: every class weighs 1 (the paper)
    class_balance: float = 0.0
    # the probability that a training crop takes another training pair's objects where it has none of its own
    # (copy-paste; wsk.data.augmentation); 0: never (the paper)
    copy_paste: float = 0.0
    # the Keras dtype policy it trains in: "float32" (the paper), "mixed_bfloat16" (float32 weights, bfloat16
    # arithmetic) or "auto" (bfloat16 where the hardware has it); the saved network is float32 (wsk.training.engine)
    precision: str = "float32"


def seg_schedule(recipe, images, split_images):
    """``recipe`` (a ``SegRecipe``) as a variant trained on ``images`` of the split's
    ``split_images`` runs it: with ``equal_updates``, a variant on fewer images than the split (S*)
    has its ``epochs`` and ``lr_step_epochs`` scaled by ``split_images / images`` (rounded, at
    least 1), so that it makes as many SGD updates, at the same learning rates, as the A* variants."""
    if not recipe.equal_updates or images >= split_images:
        return recipe
    factor = split_images / images
    return dataclasses.replace(recipe, epochs=max(1, round(recipe.epochs * factor)),
                               lr_step_epochs=max(1, round(recipe.lr_step_epochs * factor)))


HCP_BACKBONE = "hcp"   # SegRecipe.backbone_weights: start from the trained HCP's conv layers (demo)
PRECISIONS = ("float32", "mixed_bfloat16", "auto")   # SegRecipe.precision (wsk.training.engine)
STRATEGIES = ("default", "mirrored", "multiworker")   # how training is distributed (wsk.training.engine)
# what `wsk pipeline --stages` runs on Beam (wsk.pipeline): proposals, scoring to masks, or both
PIPELINE_STAGES = ("all", "proposals", "pseudo")


@dataclasses.dataclass(frozen=True)
class Recipe:
    """A named set of values for every stage; ``variant`` is the one ``wsk run`` trains and
    exports on data without validation ground truth (the paper's choice is SN_B, §4.3)."""

    name: str
    hcp: HCPRecipe
    seg: SegRecipe
    pseudo: PseudoConfig
    variant: str = "SN_B"


RECIPES = {
    "paper": Recipe("paper", HCPRecipe(), SegRecipe(), PseudoConfig()),
    "demo": Recipe(
        "demo",
        HCPRecipe(width=0.125, image_size=64, batch_size=32, image_epochs=8, hypothesis_epochs=2,
                  image_lr=0.001, image_last_lr=0.01, hypothesis_lr=0.0001, hypothesis_last_lr=0.001,
                  lr_step_epochs=6, backbone_weights=DEMO_TRUNK),
        SegRecipe(width=0.125, crop_size=65, batch_size=8, lr=0.01, last_lr=0.1, lr_step_epochs=36,
                  epochs=45, backbone_weights="hcp", dropout=0.0, equal_updates=True, clip_norm=20.0,
                  output_stride=4, target_power=2.0, loss_on_pixels=True, calibrate_biases=True,
                  copy_paste=1.0, precision="auto"),
        PseudoConfig(max_proposals=500, score_mode="masked", candidate_threshold=0.9, candidate_quantile=0.75,
                     rough_top_regions=75, rough_vote=0.35, refine_order="contrast"),
        variant="AN_B",   # the best on bench_generalization's tuning styles (75.7), and the demo's: val 82.5, 89.0 with CRF
    ),
}


# A smoke run of the demo (tests, `wsk demo --tiny`): one epoch per step, tiny networks. Not a result.
# Its networks are narrower than the trunk card, so its HCP starts from random weights.
RECIPES["tiny"] = Recipe(
    "tiny",
    dataclasses.replace(RECIPES["demo"].hcp, width=0.0625, image_epochs=1, hypothesis_epochs=1,
                        backbone_weights=None),
    dataclasses.replace(RECIPES["demo"].seg, width=0.0625, epochs=1),
    dataclasses.replace(RECIPES["demo"].pseudo, max_proposals=100),
    variant=RECIPES["demo"].variant,
)


@dataclasses.dataclass(frozen=True)
class Variant:
    """One segmentation network of §4.2: its supervision and its training images."""

    name: str
    target: str          # "soft": localization maps (Network_A); "hard": rough masks (Network_B)
    single_label: bool   # S*: single-label images only; A*: all training images


VARIANTS = {
    "AN_A": Variant("AN_A", "soft", False),
    "SN_A": Variant("SN_A", "soft", True),
    "AN_B": Variant("AN_B", "hard", False),
    "SN_B": Variant("SN_B", "hard", True),
}


def get_variant(name):
    """The ``Variant`` called ``name``; an unknown name is a ``WskError`` listing the four."""
    if name not in VARIANTS:
        raise WskError(f"unknown variant {name!r}; choose one of {', '.join(VARIANTS)}")
    return VARIANTS[name]


@dataclasses.dataclass(frozen=True)
class PretrainConfig:
    """``wsk pretrain``: how a trunk card is made (``wsk.pretrain``). The built-in card
    ``hcp_vgg16.corpus64`` was made with 80,000 images and 10 epochs, ``hcp_vgg16.broad64`` from it
    with 40,000 broad-corpus images and 10 epochs; each card records its command."""

    images: int = 40000
    val_images: int = 2000
    size: int = 64
    width: float = 0.125
    epochs: int = 8
    batch_size: int = 64
    lr: float = 0.001
    warmup_steps: int = 300
    seed: int = 0


def get_recipe(name):
    """The recipe called ``name`` (``paper`` or ``demo``)."""
    try:
        return RECIPES[name]
    except KeyError:
        raise WskError(f"unknown recipe {name!r}; choose one of {', '.join(RECIPES)}") from None
