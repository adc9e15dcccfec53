"""wsk.training: validation mAP, HCP fine-tuning, segmentation variants, resumption, distribution."""

import dataclasses
import json
import os
import shutil
import socket
import subprocess
import sys
import textwrap

import numpy as np
import pytest

pytest.importorskip("tensorflow")
keras = pytest.importorskip("keras")

from wsk.metrics import multilabel_average_precision  # noqa: E402
from wsk.models.pretrained import copy_hcp_trunk  # noqa: E402
from wsk.models.saving import load_model, sidecar_path  # noqa: E402
from wsk.training import train_hcp, train_segmentation  # noqa: E402
from wsk.training.callbacks import AtomicBackupAndRestore, MultiLabelMAP  # noqa: E402
from wsk.training.engine import compile_for_training  # noqa: E402
from wsk.training.segmentation import segmentation_training_set  # noqa: E402
from wsk.errors import WskError  # noqa: E402
from wsk.io import label_png_made_from, read_label_png, save_npz, write_label_png  # noqa: E402
from wsk.recipes import HCPRecipe, SegRecipe  # noqa: E402
from wsk.workdir import WorkDir  # noqa: E402

TINY_SEG = SegRecipe(width=0.0625, crop_size=33, batch_size=4, lr=0.01, last_lr=0.01, lr_step_epochs=1,
                     epochs=3, backbone_weights=None, seed=0)
TINY_HCP = HCPRecipe(width=0.0625, image_size=32, hypotheses=3, batch_size=6, image_epochs=1,
                     hypothesis_epochs=1, image_lr=0.003, image_last_lr=0.003, hypothesis_lr=0.001,
                     hypothesis_last_lr=0.001, backbone_weights=None)


def gt_classes(root, image_id):
    return read_label_png(os.path.join(root, "SegmentationClass", f"{image_id}.png"))


def train_ids(root):
    with open(os.path.join(root, "ImageSets", "Segmentation", "train.txt")) as f:
        return f.read().split()


@pytest.fixture(scope="module")
def seg_work(tmp_path_factory, synthetic_root):
    """A work dir whose rough masks are the ground truth and whose localization maps are its
    one-hot encoding (ignore pixels without mass): stand-ins for `wsk pseudo`."""
    work = WorkDir(tmp_path_factory.mktemp("work"))
    num_classes = len(open(os.path.join(synthetic_root, "classes.txt")).read().split())
    for image_id in train_ids(synthetic_root):
        classes = gt_classes(synthetic_root, image_id)
        write_label_png(work.mask(image_id), classes)
        save_npz(work.locmap(image_id),
                 maps=np.stack([classes == k for k in range(num_classes)]).astype(np.float16))
    return work.root


# --- mAP -------------------------------------------------------------------------------------

# Four images, three classes. Class 0: positives ranked 1st and 3rd -> AP = (1/1 + 2/3) / 2.
# Class 1: its one positive ranked 2nd -> AP = 1/2. Class 2 has no positive: left out.
Y_TRUE = np.array([[1, 0, 0], [0, 1, 0], [1, 0, 0], [0, 0, 0]])
Y_SCORE = np.array([[0.9, 0.2, 0.1], [0.8, 0.4, 0.3], [0.3, 0.6, 0.2], [0.1, 0.1, 0.9]])
HAND_AP = {0: (1 + 2 / 3) / 2, 1: 0.5}


def test_multilabel_map_against_hand_computed_average_precision():
    value, per_class = multilabel_average_precision(Y_TRUE, Y_SCORE)
    assert per_class.keys() == HAND_AP.keys()
    for c, ap in HAND_AP.items():
        assert per_class[c] == pytest.approx(ap)
    assert value == pytest.approx((HAND_AP[0] + HAND_AP[1]) / 2)
    with pytest.raises(WskError):
        multilabel_average_precision(Y_TRUE, Y_SCORE[:, :2])


def test_map_callback_reports_the_validation_map():
    model = keras.Sequential([keras.Input((3,)), keras.layers.Identity()])   # predicts its input
    printed = []
    callback = MultiLabelMAP(Y_SCORE.astype(np.float32), Y_TRUE, printer=printed.append)
    callback.set_model(model)
    logs = {}
    callback.on_epoch_end(0, logs)
    assert logs["val_mAP"] == pytest.approx((HAND_AP[0] + HAND_AP[1]) / 2)
    assert "validation mAP 0.6667" in printed[0]


# --- HCP ---------------------------------------------------------------------------------------

def test_hcp_training_steps_decrease_the_loss():
    from wsk.losses import SoftMultiLabelCrossEntropy
    from wsk.models import hcp

    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    classes = np.array([0, 1, 2, 0, 1, 2])
    colours = np.array([[60, -60, 0], [-60, 60, 0], [0, -60, 60]], np.float32)   # one per class
    x = (colours[classes][:, None, None, None] + rng.normal(0, 10, (6, 2, 32, 32, 3))).astype(np.float32)
    y = np.eye(3, dtype=np.float32)[classes]
    model = hcp(num_classes=3, image_size=32, width=0.0625)
    compile_for_training(model, SoftMultiLabelCrossEntropy(from_logits=False), 0.01, 0.01,
                               TINY_HCP, steps_per_epoch=100)
    before = model.evaluate(x, y, verbose=0)
    # The loss is Eq. 4 on the max-pooled softmax: check it by hand once.
    probs = model.predict(x, verbose=0)
    assert before == pytest.approx(-np.mean(np.sum(y * np.log(np.clip(probs, 1e-7, 1)), -1)), rel=1e-4)
    model.fit(x, y, batch_size=6, epochs=30, verbose=0)
    after = model.evaluate(x, y, verbose=0)
    assert after < 0.9 * before


@pytest.mark.parametrize("backbone, conv1_mult", [(None, 1 / 72.0**2), ("imagenet", 1.0)])
def test_conv1_1_step_matches_its_pixel_scale_initialisation(backbone, conv1_mult):
    # From scratch, conv1_1 starts 72 times smaller than He (pixel-valued input): one Caffe SGD
    # step on it must be the step on w' = 72 w with unit-scale input, i.e. lr (g / 72**2 + decay w);
    # with ImageNet weights it is the plain lr (g + decay w). Other kernels: lr (g + decay w).
    import tensorflow as tf

    keras.utils.set_random_seed(0)
    inputs = keras.Input((6, 6, 3))
    x = keras.layers.Conv2D(2, 3, name="conv1_1", kernel_initializer="random_normal")(inputs)
    x = keras.layers.Conv2D(2, 3, name="conv1_2", kernel_initializer="random_normal")(x)
    outputs = keras.layers.Dense(2, name="fc8")(keras.layers.Flatten()(x))
    model = keras.Model(inputs, outputs)
    recipe = dataclasses.replace(TINY_SEG, backbone_weights=backbone, weight_decay=0.01)
    lr = 0.01
    compile_for_training(model, "mse", lr, lr, recipe, steps_per_epoch=10)
    rng = np.random.default_rng(0)
    x_batch = rng.normal(0, 72, (4, 6, 6, 3)).astype(np.float32)
    y_batch = rng.normal(0, 1, (4, 2)).astype(np.float32)
    kernels = {name: model.get_layer(name).kernel for name in ("conv1_1", "conv1_2")}
    with tf.GradientTape() as tape:
        loss = keras.losses.MeanSquaredError()(y_batch, model(x_batch))
    grads = dict(zip(kernels, tape.gradient(loss, list(kernels.values()))))
    before = {name: k.numpy().copy() for name, k in kernels.items()}
    model.train_on_batch(x_batch, y_batch)
    for name, mult in (("conv1_1", conv1_mult), ("conv1_2", 1.0)):
        expected = before[name] - lr * (mult * grads[name].numpy() + 0.01 * before[name])
        np.testing.assert_allclose(kernels[name].numpy(), expected, rtol=1e-4, atol=1e-7)


@pytest.fixture(scope="module")
def proposals_work(tmp_path_factory, synthetic_root):
    from wsk.proposals import run_proposals

    work = tmp_path_factory.mktemp("hcpwork")
    run_proposals(synthetic_root, work, split="train", max_proposals=60).raise_if_failed()
    return work


def test_train_hcp_two_steps_end_to_end(synthetic_root, proposals_work, capsys):
    model = train_hcp(synthetic_root, proposals_work, TINY_HCP, verbose=0)
    work = WorkDir(proposals_work)
    assert os.path.exists(work.hcp_model)
    assert os.path.exists(os.path.join(work.hcp_dir, "image_finetuned.keras"))
    description = json.load(open(sidecar_path(work.hcp_model)))
    assert description["class_names"] == ["disc", "square", "triangle", "ring", "cross"]
    assert description["image_size"] == 32
    out = capsys.readouterr().out
    assert "validation mAP" in out and "hypothesis fine-tuning" in out
    # Validation was scored on the whole images (no val proposals): one mAP per step.
    assert out.count("validation mAP") == 2
    scores = model.predict(np.zeros((2, 3, 32, 32, 3), np.float32), verbose=0)
    assert scores.shape == (2, 5)
    np.testing.assert_array_less(scores, 1 + 1e-6)
    # Finished: a rerun loads the model instead of training again.
    again = train_hcp(synthetic_root, proposals_work, TINY_HCP, verbose=0)
    assert "not retrained" in capsys.readouterr().out
    for a, b in zip(model.get_weights(), again.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_new_proposals_or_labels_make_hcp_stale(synthetic_root, proposals_work, tmp_path, capsys):
    """HCP records what it was trained from: its proposals, images and labels, not only the recipe."""
    import shutil

    root, work = tmp_path / "data", tmp_path / "work"
    shutil.copytree(synthetic_root, root)
    shutil.copytree(proposals_work, work)
    train_hcp(root, work, TINY_HCP, verbose=0)     # trained here, or found up to date
    train_hcp(root, work, TINY_HCP, verbose=0)
    assert "not retrained" in capsys.readouterr().out
    from wsk.data.voc import VOCDataset
    from wsk.proposals import run_proposals

    first = VOCDataset(root, "paper_train").ids[0]
    os.remove(WorkDir(work).proposals(first))
    run_proposals(root, work, split="train", max_proposals=40, ids=[first]).raise_if_failed()
    train_hcp(root, work, TINY_HCP, verbose=0)
    assert "other targets: retraining" in capsys.readouterr().out
    xml = root / "Annotations" / f"{first}.xml"
    text = xml.read_text()
    names = [n.split("</name>")[0] for n in text.split("<name>")[1:]]
    other = next(c for c in ("disc", "square", "triangle", "ring", "cross") if c not in names)
    xml.write_text(text.replace(f"<name>{names[0]}</name>", f"<name>{other}</name>"))
    train_hcp(root, work, TINY_HCP, verbose=0)
    assert "other targets: retraining" in capsys.readouterr().out


def test_train_hcp_without_proposals_is_a_wsk_error(synthetic_root, tmp_path):
    with pytest.raises(WskError, match="wsk proposals"):
        train_hcp(synthetic_root, tmp_path, TINY_HCP, verbose=0)


# --- segmentation -------------------------------------------------------------------------------

def test_variants_pick_their_images_and_targets(synthetic_root, seg_work):
    ids = train_ids(synthetic_root)
    single = [i for i in ids if len(set(np.unique(gt_classes(synthetic_root, i))) - {0, 255}) == 1]
    assert 0 < len(single) < len(ids)
    _, got, images, targets = segmentation_training_set(synthetic_root, seg_work, "SN_B")
    assert sorted(got) == sorted(single)
    assert all(t.endswith(".png") for t in targets) and len(images) == len(got)
    _, got, _, targets = segmentation_training_set(synthetic_root, seg_work, "AN_A")
    assert sorted(got) == sorted(ids) and all(t.endswith(".npz") for t in targets)
    with pytest.raises(WskError, match="unknown variant"):
        segmentation_training_set(synthetic_root, seg_work, "XN_C")
    with pytest.raises(WskError, match="wsk pseudo"):
        segmentation_training_set(synthetic_root, seg_work, "SN_A", refine=False)


def test_changed_targets_or_recipe_retrain_an_existing_model(synthetic_root, seg_work, tmp_path):
    import shutil

    shutil.copytree(seg_work, tmp_path / "w")
    recipe = dataclasses.replace(TINY_SEG, epochs=1)
    lines = []
    train_segmentation(synthetic_root, tmp_path / "w", "SN_B", recipe, verbose=0, printer=lines.append)
    path = WorkDir(tmp_path / "w").seg_model("SN_B")
    first = os.stat(path).st_mtime_ns
    train_segmentation(synthetic_root, tmp_path / "w", "SN_B", recipe, verbose=0, printer=lines.append)
    assert os.stat(path).st_mtime_ns == first and "not retrained" in lines[-1]
    mask = WorkDir(tmp_path / "w").mask(segmentation_training_set(synthetic_root, tmp_path / "w",
                                                                        "SN_B")[1][0])
    shutil.copyfile(mask, mask + ".tmp")   # the same pseudo-labels, written again: nothing to retrain
    os.replace(mask + ".tmp", mask)
    train_segmentation(synthetic_root, tmp_path / "w", "SN_B", recipe, verbose=0, printer=lines.append)
    assert os.stat(path).st_mtime_ns == first and "not retrained" in lines[-1]
    labels = read_label_png(mask)   # other pseudo-labels: one pixel's class changed
    labels[0, 0] = 0 if labels[0, 0] else 1
    write_label_png(mask, labels, made_from=label_png_made_from(mask))
    train_segmentation(synthetic_root, tmp_path / "w", "SN_B", recipe, verbose=0, printer=lines.append)
    second = os.stat(path).st_mtime_ns
    assert second != first and any("retraining" in line for line in lines)
    train_segmentation(synthetic_root, tmp_path / "w", "SN_B", dataclasses.replace(recipe, seed=1),
                             verbose=0, printer=lines.append)
    assert os.stat(path).st_mtime_ns != second


def test_damaged_targets_stop_training_before_it_starts(synthetic_root, seg_work, tmp_path):
    import shutil

    shutil.copytree(seg_work, tmp_path / "w")
    ids = train_ids(synthetic_root)
    wd = WorkDir(tmp_path / "w")
    with open(wd.locmap(ids[0]), "wb") as f:
        f.write(b"junk")
    with pytest.raises(WskError) as err:
        train_segmentation(synthetic_root, tmp_path / "w", "AN_A", TINY_SEG, verbose=0)
    assert "1 training target(s) are damaged" in str(err.value) and ids[0] in str(err.value)
    assert not os.path.exists(os.path.join(wd.seg_dir("AN_A"), "checkpoints"))


class _Interrupt(keras.callbacks.Callback):
    def __init__(self, at_epoch):
        super().__init__()
        self.at_epoch = at_epoch

    def on_epoch_begin(self, epoch, logs=None):
        if epoch == self.at_epoch:
            raise KeyboardInterrupt


class _Epochs(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.seen = []

    def on_epoch_begin(self, epoch, logs=None):
        self.seen.append(epoch)


@pytest.mark.parametrize("variant", ["SN_B", "AN_A"])
def test_segmentation_resumes_at_the_saved_epoch_with_the_same_weights(synthetic_root, seg_work,
                                                                       tmp_path, variant):
    import shutil

    straight_work = tmp_path / "straight"
    shutil.copytree(seg_work, straight_work)
    straight = train_segmentation(synthetic_root, straight_work, variant, TINY_SEG, verbose=0)

    work = tmp_path / "interrupted"
    shutil.copytree(seg_work, work)
    with pytest.raises(KeyboardInterrupt):
        train_segmentation(synthetic_root, work, variant, TINY_SEG, verbose=0,
                                 callbacks=[_Interrupt(2)])
    model_path = WorkDir(work).seg_model(variant)
    assert not os.path.exists(model_path)
    state = json.load(open(os.path.join(os.path.dirname(model_path), "checkpoints",
                                        "training_metadata.json")))
    assert state["epoch"] == 2
    epochs = _Epochs()
    resumed = train_segmentation(synthetic_root, work, variant, TINY_SEG, verbose=0,
                                       callbacks=[epochs])
    assert epochs.seen == [2]                        # only the missing epoch ran
    for a, b in zip(straight.get_weights(), resumed.get_weights()):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-7)
    assert not os.path.exists(os.path.join(os.path.dirname(model_path), "checkpoints"))


def test_saved_segmentation_model_and_sidecar(synthetic_root, seg_work, tmp_path):
    import shutil

    shutil.copytree(seg_work, tmp_path / "w")
    recipe = dataclasses.replace(TINY_SEG, epochs=1)
    train_segmentation(synthetic_root, tmp_path / "w", "SN_B", recipe, verbose=0)
    path = WorkDir(tmp_path / "w").seg_model("SN_B")
    description = json.load(open(os.path.join(os.path.dirname(path), "model.json")))
    assert description["class_names"] == ["background", "disc", "square", "triangle", "ring", "cross"]
    assert description["variant"] == "SN_B" and description["output_stride"] == 8
    assert description["preprocessing"]["mean"] == [104.008, 116.669, 122.675]
    model = load_model(path)
    assert model.predict(np.zeros((1, 41, 49, 3), np.float32), verbose=0).shape == (1, 6, 7, 6)
    # TensorBoard event files and the CSV history are written beside the checkpoints.
    logs = os.path.join(os.path.dirname(path), "logs")
    files = [name for _, _, names in os.walk(logs) for name in names]
    assert any(name.startswith("events.out.tfevents") for name in files), files


def test_segmentation_at_output_stride_4_records_it_and_predicts_on_every_fourth_pixel(
        synthetic_root, seg_work, tmp_path):
    import shutil

    from wsk.models import network_output_stride

    shutil.copytree(seg_work, tmp_path / "w")
    recipe = dataclasses.replace(TINY_SEG, epochs=1, output_stride=4)
    train_segmentation(synthetic_root, tmp_path / "w", "SN_B", recipe, verbose=0)
    path = WorkDir(tmp_path / "w").seg_model("SN_B")
    description = json.load(open(os.path.join(os.path.dirname(path), "model.json")))
    assert description["output_stride"] == 4 and description["recipe"]["output_stride"] == 4
    assert description["output"].startswith("logits (N, (H-1)//4+1")
    model = load_model(path)
    assert network_output_stride(model) == 4
    assert model.predict(np.zeros((1, 41, 49, 3), np.float32), verbose=0).shape == (1, 11, 13, 6)


def test_network_a_with_sharpened_targets_on_every_pixel_trains_and_records_it(synthetic_root, seg_work, tmp_path):
    import shutil

    shutil.copytree(seg_work, tmp_path / "w")
    recipe = dataclasses.replace(TINY_SEG, epochs=1, output_stride=4, target_power=2.0, loss_on_pixels=True)
    model = train_segmentation(synthetic_root, tmp_path / "w", "AN_A", recipe, verbose=0)
    path = WorkDir(tmp_path / "w").seg_model("AN_A")
    description = json.load(open(os.path.join(os.path.dirname(path), "model.json")))
    assert description["recipe"]["target_power"] == 2.0 and description["recipe"]["loss_on_pixels"] is True
    config = model.loss.get_config()   # the compiled loss (the saved file keeps the network alone)
    assert config["target_power"] == 2.0 and config["upsample"] is True
    assert model.predict(np.zeros((1, 33, 33, 3), np.float32), verbose=0).shape == (1, 9, 9, 6)


def test_the_biases_of_a_variant_are_fitted_on_the_images_it_did_not_train_on_when_there_are_50(tmp_path):
    """S*: the split's other images that have a target of the variant's kind, in split order, once
    50 of them have one; with 49, its own training images and targets."""
    import types

    from wsk.training.segmentation import calibration_set

    wd = WorkDir(tmp_path)
    dataset = types.SimpleNamespace(ids=[f"{i:03d}" for i in range(70)])
    trained = dataset.ids[::7]                                   # 10 single-label images
    own = [f"own-{i}.png" for i in trained]
    others = [i for i in dataset.ids if i not in trained]          # 60
    os.makedirs(wd.masks_dir)
    for image_id in others[:50]:
        open(wd.mask(image_id), "w").close()
    assert calibration_set(dataset, trained, own, wd, "hard") == (others[:50], [wd.mask(i) for i in others[:50]])
    os.remove(wd.mask(others[0]))
    assert calibration_set(dataset, trained, own, wd, "hard") == (trained, own)
    assert calibration_set(dataset, trained, own, wd, "soft") == (trained, own)   # no maps at all
    os.makedirs(wd.locmaps_dir)
    for image_id in others[5:60]:
        open(wd.locmap(image_id), "w").close()
    assert calibration_set(dataset, trained, own, wd, "soft") == (others[5:60], [wd.locmap(i) for i in others[5:60]])
    assert calibration_set(dataset, dataset.ids, [f"{i}.png" for i in dataset.ids], wd, "soft")[0] == dataset.ids


def test_calibrated_biases_are_recorded_and_raise_the_agreement_with_the_targets(synthetic_root, seg_work,
                                                                                  tmp_path):
    import shutil

    from wsk.models.inference import segment
    from wsk.metrics import confusion_matrix, iou_per_class

    shutil.copytree(seg_work, tmp_path / "w")
    recipe = dataclasses.replace(TINY_SEG, epochs=1, calibrate_biases=True)
    train_segmentation(synthetic_root, tmp_path / "w", "AN_B", recipe, verbose=0)
    path = WorkDir(tmp_path / "w").seg_model("AN_B")
    record = json.load(open(os.path.join(os.path.dirname(path), "model.json")))["metrics"]["calibration"]
    biases = np.array(record["class_biases"], np.float32)
    assert record["images"] == "trained"   # AN_B trains on every image of the split
    assert biases.shape == (6,) and biases[0] == 0.0
    assert np.all(np.abs(biases * 4 - np.round(biases * 4)) < 1e-6)   # on the 0.25 grid
    # (A tiny network after one epoch: its biases may well be 0; tests/test_class_biases.py fits
    # known ones.) The saved network carries the biases; taking them off gives the network as trained. Its labels
    # and the saved one's, against the targets (the ground truth here) on every training image,
    # give the recorded mIoUs, and the saved one's is no lower.
    calibrated = load_model(path)
    trained = load_model(path)
    fc8 = trained.get_layer("fc8")
    kernel, bias = fc8.get_weights()
    fc8.set_weights([kernel, bias - biases])
    matrices = {"before": np.zeros((6, 6), np.int64), "after": np.zeros((6, 6), np.int64)}
    for image_id in train_ids(synthetic_root):
        image = np.asarray(__import__("PIL.Image").Image.open(
            os.path.join(synthetic_root, "JPEGImages", f"{image_id}.jpg")).convert("RGB"))[None]
        truth = gt_classes(synthetic_root, image_id)
        for key, model in (("before", trained), ("after", calibrated)):
            matrices[key] += confusion_matrix(truth, np.asarray(segment(model, image)[0])[0], 6)
    for key, cm in matrices.items():
        assert 100 * np.nanmean(iou_per_class(cm)) == pytest.approx(record["pseudo_label_miou"][key], abs=0.01)
    assert record["pseudo_label_miou"]["after"] >= record["pseudo_label_miou"]["before"]
    assert record["pixels"] == sum(np.sum(gt_classes(synthetic_root, i) != 255) for i in train_ids(synthetic_root))


def test_nan_loss_stops_training_and_keeps_no_model(synthetic_root, seg_work, tmp_path):
    import shutil

    shutil.copytree(seg_work, tmp_path / "w")
    recipe = dataclasses.replace(TINY_SEG, lr=1e30, last_lr=1e30, epochs=2)
    with pytest.raises(WskError, match="diverged"):
        train_segmentation(synthetic_root, tmp_path / "w", "SN_B", recipe, verbose=0)
    assert not os.path.exists(WorkDir(tmp_path / "w").seg_model("SN_B"))


# Callbacks of the distributed-training scripts below (run in their own processes).
REPLICA_CALLBACKS = textwrap.dedent("""
    import keras

    class NoDropout(keras.callbacks.Callback):
        # Dropout draws differ per replica; switch it off before the step is traced.
        def on_train_begin(self, logs=None):
            for layer in self.model.layers:
                if isinstance(layer, keras.layers.Dropout):
                    layer.rate = 0.0

    class Losses(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.values = []
        def on_train_batch_end(self, batch, logs=None):
            self.values.append(float(logs["loss"]))
""")


TWO_DEVICES = textwrap.dedent("""
    import json, shutil, sys
    import tensorflow as tf
    cpu, = tf.config.list_physical_devices("CPU")
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    import keras, numpy as np
    from wsk.io import read_label_png, write_label_png
    from wsk.recipes import SegRecipe
    from wsk.training import train_segmentation
    from wsk.workdir import WorkDir

    root, work = sys.argv[1], sys.argv[2]
""") + REPLICA_CALLBACKS + textwrap.dedent("""
    recipe = SegRecipe(width=0.0625, crop_size=33, batch_size=4, lr=0.01, last_lr=0.01, epochs=1,
                       scale_range=(1.0, 1.0), backbone_weights=None)
    results = {}
    for name, strategy in (("single", "default"),
                           ("mirrored", tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"]))):
        out = f"{work}/{name}"
        shutil.copytree(work + "/base", out)
        losses = Losses()
        model = train_segmentation(root, out, "SN_B", recipe, strategy=strategy, verbose=0,
                                   callbacks=[NoDropout(), losses])
        results[name] = {"losses": losses.values,
                         "weights": [w.tolist() for w in model.get_weights()[-2:]],
                         "replicas": 1 if strategy == "default" else strategy.num_replicas_in_sync}
    print("RESULT" + json.dumps(results))
""")


def masks_without_ignore(synthetic_root, seg_work, work):
    """Hard labels without ignore pixels in ``work``: every replica then averages over as many
    positions. Returns the environment of the training processes."""
    base = WorkDir(work)
    for image_id in train_ids(synthetic_root):
        mask = read_label_png(WorkDir(seg_work).mask(image_id))
        write_label_png(base.mask(image_id), np.where(mask == 255, 0, mask))
    return dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", KERAS_BACKEND="tensorflow")


def test_mirrored_strategy_on_two_devices_matches_one_device(synthetic_root, seg_work, tmp_path):
    env = masks_without_ignore(synthetic_root, seg_work, tmp_path / "base")
    done = subprocess.run([sys.executable, "-c", TWO_DEVICES, str(synthetic_root), str(tmp_path)],
                          capture_output=True, text=True, env=env, timeout=600)
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT")]
    assert lines, done.stdout[-2000:] + done.stderr[-4000:]
    results = json.loads(lines[0][len("RESULT"):])
    single, mirrored = results["single"], results["mirrored"]
    assert mirrored["replicas"] == 2
    single_label = [i for i in train_ids(synthetic_root)
                    if len(set(np.unique(gt_classes(synthetic_root, i))) - {0, 255}) == 1]
    assert len(single["losses"]) == len(single_label) // 4 >= 2     # steps of 4 images
    np.testing.assert_allclose(mirrored["losses"], single["losses"], rtol=1e-5)
    for a, b in zip(single["weights"], mirrored["weights"]):
        np.testing.assert_allclose(np.array(b), np.array(a), rtol=1e-4, atol=1e-6)


def test_segmentation_trunk_initialised_from_hcp(tmp_path):
    """The demo's "hcp" backbone: conv1_1..conv5_3 copied exactly, fc layers left alone."""
    from wsk.models import deeplab_largefov, hcp

    source = hcp(num_classes=5, image_size=32, width=0.0625)
    source.save(tmp_path / "hcp.keras")
    model = deeplab_largefov(num_classes=6, width=0.0625)
    fc6_before = model.get_layer("fc6").get_weights()[0].copy()
    copy_hcp_trunk(model, str(tmp_path / "hcp.keras"))
    for name in ["conv1_1", "conv2_2", "conv3_3", "conv4_1", "conv5_3"]:
        for got, want in zip(model.get_layer(name).get_weights(), source.get_layer(name).get_weights()):
            np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(model.get_layer("fc6").get_weights()[0], fc6_before)
    with pytest.raises(WskError, match="does not fit"):
        copy_hcp_trunk(deeplab_largefov(num_classes=6, width=0.125), str(tmp_path / "hcp.keras"))
    with pytest.raises(WskError, match="wsk train hcp"):
        copy_hcp_trunk(model, str(tmp_path / "missing.keras"))


def test_a_backup_torn_by_a_kill_is_discarded_not_resumed(tmp_path):
    """Keras writes the weights, then the epoch: a kill between them must not resume the new weights
    at the old epoch. AtomicBackupAndRestore's record holds the weights' sha256."""
    import keras


    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile(optimizer="sgd", loss="mse")
    x, y = np.ones((4, 2), np.float32), np.zeros((4, 1), np.float32)
    folder = tmp_path / "checkpoints"
    lines = []

    class Stop(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch == 1:
                raise KeyboardInterrupt   # a kill after epoch 2's backup

    with pytest.raises(KeyboardInterrupt):
        model.fit(x, y, epochs=4, verbose=0, callbacks=[AtomicBackupAndRestore(str(folder)), Stop()])
    record = json.loads((folder / "training_metadata.json").read_text())
    assert record["epoch"] == 2
    # as if the kill came after the next epoch's (other) weights but before its record
    model.set_weights([w + 1 for w in model.get_weights()])
    model.save_weights(str(folder / "latest.weights.h5"), overwrite=True)
    callback = AtomicBackupAndRestore(str(folder), printer=lines.append)
    history = model.fit(x, y, epochs=4, verbose=0, callbacks=[callback])
    assert len(history.history["loss"]) == 4           # restarted from epoch 0, not resumed at 2
    assert lines and "interrupted while being written" in lines[0]


def test_an_intact_backup_resumes_at_its_epoch(tmp_path):
    import keras


    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile(optimizer="sgd", loss="mse")
    x, y = np.ones((4, 2), np.float32), np.zeros((4, 1), np.float32)

    class Stop(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch == 1:
                raise KeyboardInterrupt

    folder = str(tmp_path / "checkpoints")
    with pytest.raises(KeyboardInterrupt):
        model.fit(x, y, epochs=4, verbose=0, callbacks=[AtomicBackupAndRestore(folder), Stop()])
    history = model.fit(x, y, epochs=4, verbose=0, callbacks=[AtomicBackupAndRestore(folder)])
    assert len(history.history["loss"]) == 2           # epochs 3 and 4 only


MULTI_WORKER = textwrap.dedent("""
    import json, os, sys
    import tensorflow as tf
    import keras
    from wsk.recipes import SegRecipe
    from wsk.training import train_segmentation

    root, work, strategy = sys.argv[1], sys.argv[2], sys.argv[3]
    if strategy == "multiworker":   # TF_CONFIG names this worker: create the strategy first
        strategy = tf.distribute.MultiWorkerMirroredStrategy()
""") + REPLICA_CALLBACKS + textwrap.dedent("""
    recipe = SegRecipe(width=0.0625, crop_size=33, batch_size=4, lr=0.01, last_lr=0.01, epochs=1,
                       scale_range=(1.0, 1.0), backbone_weights=None)
    losses = Losses()
    train_segmentation(root, work, "SN_B", recipe, strategy=strategy, verbose=0,
                       callbacks=[NoDropout(), losses])
    print("RESULT" + json.dumps({"losses": losses.values,
                                 "replicas": getattr(strategy, "num_replicas_in_sync", 1)}))
""")


def _free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def _result(done):
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT")]
    assert lines, done.stdout[-2000:] + done.stderr[-4000:]
    return json.loads(lines[0][len("RESULT"):])


def test_multi_worker_strategy_on_two_local_processes_matches_one_process(synthetic_root, seg_work, tmp_path):
    # Two worker processes on localhost (TF_CONFIG, 127.0.0.1 ports), one CPU replica each,
    # sharing the work directory as a cluster shares its storage.
    env = masks_without_ignore(synthetic_root, seg_work, tmp_path / "base")
    shutil.copytree(tmp_path / "base", tmp_path / "single")
    shutil.copytree(tmp_path / "base", tmp_path / "cluster")
    single = _result(subprocess.run([sys.executable, "-c", MULTI_WORKER, str(synthetic_root),
                                     str(tmp_path / "single"), "default"],
                                    capture_output=True, text=True, env=env, timeout=600))
    workers = [f"127.0.0.1:{port}" for port in _free_ports(2)]
    processes = []
    for index in range(2):
        config = {"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}}
        processes.append(subprocess.Popen(
            [sys.executable, "-c", MULTI_WORKER, str(synthetic_root), str(tmp_path / "cluster"), "multiworker"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env=dict(env, TF_CONFIG=json.dumps(config))))
    outputs = []
    for process in processes:
        try:
            stdout, stderr = process.communicate(timeout=600)
        finally:
            for other in processes:
                if other.poll() is None and process.returncode is None:
                    other.kill()
        outputs.append(_result(subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)))
    chief, other = outputs
    assert chief["replicas"] == other["replicas"] == 2
    assert len(single["losses"]) >= 2
    np.testing.assert_allclose(chief["losses"], single["losses"], rtol=1e-5)
    np.testing.assert_allclose(other["losses"], single["losses"], rtol=1e-5)
    assert os.path.exists(WorkDir(tmp_path / "cluster").seg_model("SN_B"))   # written by the chief


def test_class_balance_weights_the_loss_by_the_targets_class_shares(synthetic_root, seg_work, tmp_path):
    import shutil

    shutil.copytree(seg_work, tmp_path / "w")
    recipe = dataclasses.replace(TINY_SEG, epochs=1, class_balance=1.0)
    model = train_segmentation(synthetic_root, tmp_path / "w", "AN_B", recipe, verbose=0)
    path = WorkDir(tmp_path / "w").seg_model("AN_B")
    recorded = json.load(open(os.path.join(os.path.dirname(path), "model.json")))["metrics"]["class_weights"]
    # naive: the masks (the ground truth here) counted class by class; power 1 gives w_c = 1 / (K f_c)
    counts = np.zeros(6)
    for image_id in train_ids(synthetic_root):
        truth = gt_classes(synthetic_root, image_id)
        counts += [np.sum(truth == c) for c in range(6)]
    held = counts > 0
    expected = np.ones(6)
    expected[held] = 1.0 / (held.sum() * counts[held] / counts.sum())
    assert recorded == pytest.approx(expected.tolist(), abs=1e-4)
    assert model.loss.get_config()["class_weights"] == recorded


# --- precision -------------------------------------------------------------------------------

def test_dtype_policy_builds_in_the_policy_and_restores_the_global_one():
    from wsk.training.engine import dtype_policy

    before = keras.config.dtype_policy().name
    with dtype_policy("mixed_bfloat16"):
        layer = keras.layers.Dense(2)
    assert (layer.compute_dtype, layer.variable_dtype) == ("bfloat16", "float32")
    assert keras.config.dtype_policy().name == before
    for name in ("float16", "auto"):   # "auto" is resolved first (resolve_precision)
        with pytest.raises(WskError, match=f"a dtype policy is float32 or mixed_bfloat16, not '{name}'"):
            with dtype_policy(name):
                pass
    assert keras.config.dtype_policy().name == before


def test_as_float32_gives_the_same_weights_computed_in_float32():
    """The twin computes x W + b in float32 (numpy's to 1e-5), where the mixed network rounds to
    bfloat16 (8 bits of mantissa: off by more than 1e-3 on these values)."""
    from wsk.training.engine import as_float32, dtype_policy

    def build():
        return keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, name="d")])

    with dtype_policy("mixed_bfloat16"):
        mixed = build()
    kernel = np.array([[0.1234567, -1.3333333], [2.7182818, 0.5772157], [-0.3010300, 1.4142136]], np.float32)
    bias = np.array([0.0123457, -0.9876543], np.float32)
    mixed.get_layer("d").set_weights([kernel, bias])
    x = np.array([[1.1, 2.2, 3.3], [-0.7, 0.25, 9.5]], np.float32)
    twin = as_float32(mixed, build)
    assert twin is not mixed and twin.compute_dtype == "float32"
    np.testing.assert_array_equal(twin.get_layer("d").get_weights()[0], kernel)
    np.testing.assert_allclose(twin.predict(x, verbose=0), x @ kernel + bias, rtol=1e-5, atol=1e-6)
    assert np.abs(np.asarray(mixed.predict(x, verbose=0), np.float32) - (x @ kernel + bias)).max() > 1e-3
    plain = build()
    assert as_float32(plain, build) is plain


def test_a_network_trained_in_mixed_bfloat16_is_saved_in_float32(synthetic_root, seg_work, tmp_path):
    shutil.copytree(seg_work, tmp_path / "w")
    recipe = dataclasses.replace(TINY_SEG, epochs=1, precision="mixed_bfloat16")
    returned = train_segmentation(synthetic_root, tmp_path / "w", "SN_B", recipe, verbose=0)
    path = WorkDir(tmp_path / "w").seg_model("SN_B")
    description = json.load(open(os.path.join(os.path.dirname(path), "model.json")))
    assert description["recipe"]["precision"] == "mixed_bfloat16"
    assert description["metrics"]["precision"] == "mixed_bfloat16"
    saved = load_model(path)
    assert {layer.compute_dtype for layer in saved.layers} == {"float32"}
    assert returned.compute_dtype == "float32"
    x = np.random.default_rng(0).uniform(-100, 100, (1, 33, 33, 3)).astype(np.float32)
    np.testing.assert_array_equal(saved.predict(x, verbose=0), returned.predict(x, verbose=0))


@pytest.mark.parametrize("flags, expected", [("fpu avx512f avx512_bf16 avx512_vbmi", "mixed_bfloat16"),
                                             ("fpu amx_tile amx_bf16", "mixed_bfloat16"),
                                             ("fpu avx2 avx512f avx512_vnni", "float32"),
                                             (None, "float32")])   # no /proc/cpuinfo (macOS, Windows)
def test_auto_precision_is_bfloat16_where_the_cpu_computes_it(tmp_path, monkeypatch, flags, expected):
    import wsk.training.engine as engine

    cpuinfo = tmp_path / "cpuinfo"
    if flags is not None:
        cpuinfo.write_text(f"processor\t: 0\nflags\t\t: {flags}\n\nprocessor\t: 1\nflags\t\t: {flags}\n")
    monkeypatch.setattr(engine, "CPUINFO", str(cpuinfo))
    monkeypatch.setattr(engine.tf.config, "list_physical_devices", lambda kind=None: [])
    assert engine.resolve_precision("auto") == expected
    assert engine.resolve_precision("float32") == "float32"
    assert engine.resolve_precision("mixed_bfloat16") == "mixed_bfloat16"
    with pytest.raises(WskError, match="precision must be one of float32, mixed_bfloat16, auto, not 'bf16'"):
        engine.resolve_precision("bf16")
