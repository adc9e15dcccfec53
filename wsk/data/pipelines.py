"""tf.data input pipelines for HCP training (§3.1) and segmentation training (§3.3, §4.2).

Every training pipeline is one stream over all epochs (``epoch_stream``): epoch ``e`` visits
the images in an order drawn from ``(seed, e)`` and every random choice of an element
(scale, crop, flips) comes from a stateless seed derived from ``(seed, e, position)``.
The batches of a run are therefore a pure function of the seed, whatever the number of
parallel calls, and a run resumed at epoch ``e`` (``first_epoch``) sees exactly the
batches an uninterrupted run sees from epoch ``e`` on. Each epoch uses
``len(items) // batch_size`` full batches (the images left over differ from epoch to epoch).

HCP batches (``hcp_image_dataset``, ``hcp_hypothesis_dataset``) are ``(B, M, S, S, 3)``
preprocessed hypotheses and ``(B, c)`` label vectors normalised to sum one: image
fine-tuning uses the whole image as the single hypothesis (M = 1); hypothesis
fine-tuning crops the M selected boxes, each resized to S x S (bilinear, half-pixel
centres, like ``wsk.pseudo.scoring.crop_boxes`` at prediction time) and flipped at random.

Segmentation batches (``segmentation_dataset``) follow DeepLab's training data layer:

1. scale image and target by a factor drawn from ``scale_range`` (image bilinear,
   localization maps bilinear, rough masks nearest);
2. preprocess the image (``wsk.models.preprocess_input``: BGR minus the mean colour);
3. pad bottom and right up to the crop size: the image with the mean colour (zero after
   preprocessing), a rough mask with the ignore label 255, localization maps with zero
   mass in every channel (ignored by ``SoftMultiLabelCrossEntropy``);
4. take a random ``crop_size`` crop and flip it horizontally with probability 1/2,
   image and target with the same geometry;
5. with ``copy_paste`` > 0, paste the objects of a second training pair into the crop
   (``paste_objects``);
6. bring the target to the logits' grid.

Step 5 is not DeepLab's: it is copy-paste (ClassMix, Olsson et al., 2021; Simple Copy-Paste, Ghiasi
et al., 2021). With probability ``copy_paste`` an element takes the object pixels, as its target
gives them, of another training pair (drawn from the element's seed and augmented as in steps 1-4),
image and target alike, wherever the crop has no object of its own. A network trained on
single-label images only (the S* variants) otherwise learns that one image holds one class
(``wsk.recipes``). Objects are pasted whole: a box (CutMix) cuts shapes, and where shape is what
tells classes apart the networks confused them.

Decision for step 6: the **target is subsampled** to DeepLab-LargeFOV's stride-8 grid as
Caffe's ``shrink_factor: 8`` interpolation does: ``target[::8, ::8]``. For crops of side
``8k + 1`` (321 in the paper, 65 in the demo: ``wsk.recipes``) the network gives ``k + 1`` logits per side
and logit ``i`` sits exactly on pixel ``8 i``, so the picked pixels are the logits'
centres and nothing is interpolated; other crop sizes are refused
(``check_crop_size``). A network of output stride 4 (``SegRecipe.output_stride``) takes
``target[::4, ::4]`` the same way. A recipe with ``SegRecipe.loss_on_pixels`` keeps the target at
every pixel instead (stride 1), and the loss up-samples the logits to it as test time does
(``wsk.losses``): 16 (stride 4) or 64 (stride 8) times the loss memory, for soft targets whose
small margins the up-sampling would otherwise blur away (``wsk.recipes``).

Network_A targets are the stored localization maps (Eq. 2) normalised across channels
(§3.3.1: ``p^m / sum_m' p^m'`` at every pixel that has mass), so each target pixel is a
distribution over the c + 1 classes; Network_B targets are the rough masks (Eq. 5) as
class indices with 255 ignored.
"""

import numpy as np
import tensorflow as tf

from wsk.classes import IGNORE_LABEL
from wsk.data.augmentation import HARD, SOFT, augment_segmentation, paste_objects, split_seed
from wsk.errors import WskError
from wsk.io import image_size as decoded_size, load_npz, read_image, read_label_png
from wsk.models import preprocess_input
from wsk.models.preprocessing import crop_hypothesis
from wsk.models.deeplab import OUTPUT_STRIDE


# --- small pieces (pure functions, tested on their own) --------------------------------------

def check_crop_size(crop_size, stride=OUTPUT_STRIDE):
    """The number of logits per side for a ``crop_size`` crop; a crop that is not
    ``stride * k + 1`` is a ``WskError`` (its labels would not sit on the logits' centres)."""
    if crop_size < 1 or (crop_size - 1) % stride:
        raise WskError(f"crop size {crop_size} must be {stride}k+1 (e.g. 321, 65) so that the "
                       f"stride-{stride} logits sit on pixels 0, {stride}, {2 * stride}, ...")
    return (crop_size - 1) // stride + 1


def hcp_label_vector(labels, num_object_classes):
    """The HCP target of an image (§3.1, [30]): ``(c,)`` float32, ``1/|labels|`` on every label.

    ``labels`` are dataset class indices (1-based, background excluded); HCP column ``j`` is
    dataset class ``j + 1``.
    """
    vector = np.zeros(num_object_classes, np.float32)
    labels = list(labels)
    if not labels:
        raise WskError("an HCP training image needs at least one label")
    for label in labels:
        if not 1 <= label <= num_object_classes:
            raise WskError(f"class {label} is not an object class (1..{num_object_classes})")
        vector[label - 1] = 1.0
    return vector / vector.sum()


def shrink_to_logits(target, stride=OUTPUT_STRIDE):
    """``target[::stride, ::stride]``: a ``(H, W, ...)`` target picked on the logits' grid."""
    return target[::stride, ::stride]


def normalise_soft_target(maps):
    """Localization maps ``(..., C+1)`` divided by their sum over channels where it is positive
    (§3.3.1, "normalized with cross-channel information"); positions without mass stay zero."""
    maps = tf.cast(maps, tf.float32)
    total = tf.reduce_sum(maps, axis=-1, keepdims=True)
    return tf.math.divide_no_nan(maps, total)


def decode_image(path):
    """``(H, W, 3)`` uint8 RGB of the image file ``path`` (a string tensor), decoded by wsk's one
    reader ``wsk.io.read_image`` (EXIF orientation, strict about truncation), so that training
    sees every image exactly as proposals, scoring and prediction do."""
    image = tf.numpy_function(lambda p: read_image(p.decode()), [path], tf.uint8, stateful=False)
    return tf.ensure_shape(image, [None, None, 3])


# decoded images up to this size are read once and kept in memory (the demo's 480 64-px images
# take 6 MB); more are read per element, so a stage's memory stays flat at any dataset size
IN_MEMORY_BYTES = 256 << 20


def _ragged_table(arrays, dtype):
    """``index -> (shape of arrays[index])`` tensor over NumPy ``arrays`` kept as one ragged table."""
    flat = [np.asarray(a, dtype).reshape(-1) for a in arrays]
    table = tf.RaggedTensor.from_row_lengths(np.concatenate(flat) if flat else np.zeros(0, dtype),
                                             [len(f) for f in flat])
    shapes = tf.constant([a.shape for a in arrays], tf.int32)
    return lambda index: tf.reshape(table[index], shapes[index])


def image_reader(paths, sizes=None):
    """``index -> (H, W, 3) uint8`` image tensor over ``paths``, decoded by ``wsk.io.read_image``.

    When all decoded images fit in ``IN_MEMORY_BYTES`` (from their headers, or ``sizes``), each is
    read once here and kept as one ragged table: reading through ``numpy_function`` at every step
    contends for the GIL with the training loop (measured 3x slower epochs on 2 cores). Larger
    datasets are read per element (``decode_image``), in bounded memory. Both give the same pixels.
    """
    paths = list(paths)
    sizes = [decoded_size(p) for p in paths] if sizes is None else sizes
    if sum(h * w * 3 for h, w in sizes) > IN_MEMORY_BYTES:
        paths_t = tf.constant(paths)
        return lambda index: decode_image(tf.gather(paths_t, index))
    return _ragged_table([read_image(p) for p in paths], np.uint8)


def target_reader(paths, kind, num_classes, sizes):
    """``(index, height, width) -> target`` over the segmentation targets ``paths`` of images of
    ``sizes``: ``(H, W)`` int32 labels (``load_hard_target``) or ``(H, W, C+1)`` float32 maps
    (``load_soft_target``). As ``image_reader``: kept in memory, each read once here, when they fit
    in ``IN_MEMORY_BYTES`` (labels as bytes, maps as the float16 they are stored in, so that the
    values are the same), else read per element through ``numpy_function``."""
    paths, soft = list(paths), kind == SOFT
    loader = load_soft_target if soft else load_hard_target
    per_pixel = 2 * num_classes if soft else 1
    if sum(h * w * per_pixel for h, w in sizes) <= IN_MEMORY_BYTES:
        read = _ragged_table([loader(p, h, w, num_classes) for p, (h, w) in zip(paths, sizes)],
                             np.float16 if soft else np.uint8)
        return lambda index, height, width: tf.cast(read(index), tf.float32 if soft else tf.int32)
    paths_t = tf.constant(paths)

    def load(path, height, width):
        return loader(path.decode(), int(height), int(width), num_classes)

    def read_one(index, height, width):
        target = tf.numpy_function(load, [tf.gather(paths_t, index), height, width],
                                   tf.float32 if soft else tf.int32, stateful=False)
        return tf.ensure_shape(target, [None, None, num_classes] if soft else [None, None])
    return read_one


def _preprocess(image):
    return preprocess_input(image)


# --- the epoch stream ------------------------------------------------------------------------

def steps_per_epoch(num_items, batch_size):
    """Full batches per epoch (at least one item is needed per batch)."""
    if num_items < batch_size:
        raise WskError(f"{num_items} training image(s) cannot fill a batch of {batch_size}")
    return num_items // batch_size


def epoch_stream(num_items, batch_size, epochs, seed, first_epoch=None):
    """A dataset of ``(item index, element seed)`` for epochs ``first_epoch .. epochs - 1``.

    Epoch ``e`` is a permutation of the items drawn from ``(seed, e)``, cut to a whole
    number of batches; the element seed (``(2,)`` int64) is derived from ``(seed, e,
    position)``. ``first_epoch`` is an int or a scalar ``tf.Variable`` read when iteration
    reaches each epoch (``ResumeEpoch`` sets it when ``fit`` resumes).
    """
    per_epoch = steps_per_epoch(num_items, batch_size) * batch_size
    epochs_ds = tf.data.Dataset.range(epochs)
    if first_epoch is not None:
        epochs_ds = epochs_ds.filter(lambda e: e >= tf.cast(first_epoch, tf.int64))

    def one_epoch(epoch):
        epoch_seed = tf.stack([tf.constant(seed, tf.int64), epoch])
        order = tf.random.experimental.stateless_shuffle(
            tf.range(num_items, dtype=tf.int64), seed=epoch_seed)[:per_epoch]
        element_seeds = tf.stack(
            [tf.fill([per_epoch], tf.constant(seed, tf.int64) + 1),
             epoch * per_epoch + tf.range(per_epoch, dtype=tf.int64)], axis=1)
        return tf.data.Dataset.from_tensor_slices((order, element_seeds))

    return epochs_ds.flat_map(one_epoch)


def _finish(dataset, batch_size):
    return dataset.batch(batch_size, drop_remainder=True).prefetch(tf.data.AUTOTUNE)


def _map(dataset, fn):
    return dataset.map(fn, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)


# --- HCP ---------------------------------------------------------------------------------------

def crop_hypotheses(image, boxes, size):
    """``(M, size, size, 3)`` float32: each box ``x0, y0, x1, y1`` (exclusive ends) of
    ``image`` resized to ``size`` (bilinear, half-pixel centres). Boxes are clipped to the
    image and kept at least one pixel wide."""
    shape = tf.shape(image)
    height, width = shape[0], shape[1]
    boxes = tf.cast(boxes, tf.int32)
    x0 = tf.clip_by_value(boxes[:, 0], 0, width - 1)
    y0 = tf.clip_by_value(boxes[:, 1], 0, height - 1)
    x1 = tf.clip_by_value(boxes[:, 2], x0 + 1, width)
    y1 = tf.clip_by_value(boxes[:, 3], y0 + 1, height)
    return tf.map_fn(lambda box: crop_hypothesis(image, box, size), tf.stack([x0, y0, x1, y1], axis=1),
                     fn_output_signature=tf.float32)


def _random_flips(hypotheses, seed):
    """Flip each hypothesis ``(M, S, S, 3)`` left-right with probability 1/2."""
    flip = tf.random.stateless_uniform([tf.shape(hypotheses)[0]], seed=seed) < 0.5
    return tf.where(flip[:, None, None, None], tf.reverse(hypotheses, axis=[2]), hypotheses)


def _hcp_element(read, boxes, image_size, augment):
    """The map function: ``(index, seed)`` -> ``(hypotheses (M,S,S,3) preprocessed)``."""

    def load(index, seed):
        image = read(index)
        if boxes is None:
            shape = tf.shape(image)
            box = tf.stack([[0, 0, shape[1], shape[0]]])
        else:
            box = tf.gather(boxes, index)
        hypotheses = crop_hypotheses(image, box, image_size)
        if augment:
            hypotheses = _random_flips(hypotheses, seed)
        return _preprocess(hypotheses)

    return load


def hcp_training_dataset(paths, label_vectors, image_size, batch_size, epochs, seed,
                         boxes=None, first_epoch=None):
    """HCP training batches ``((B, M, S, S, 3), (B, c))`` over all epochs.

    ``boxes`` None: image fine-tuning, the whole image is the one hypothesis;
    ``boxes`` ``(N, M, 4)``: hypothesis fine-tuning with those boxes. Hypotheses are flipped
    at random. ``label_vectors`` ``(N, c)`` come from ``hcp_label_vector``.
    """
    labels_t = tf.constant(np.asarray(label_vectors, np.float32))
    boxes_t = None if boxes is None else tf.constant(np.asarray(boxes, np.int32))
    load = _hcp_element(image_reader(paths), boxes_t, image_size, augment=True)
    stream = epoch_stream(len(paths), batch_size, epochs, seed, first_epoch)
    return _finish(_map(stream, lambda i, s: (load(i, s), tf.gather(labels_t, i))), batch_size)


def hcp_eval_dataset(paths, image_size, batch_size, boxes=None):
    """HCP inputs ``(B, M, S, S, 3)`` in file order, no augmentation (for validation)."""
    boxes_t = None if boxes is None else tf.constant(np.asarray(boxes, np.int32))
    load = _hcp_element(image_reader(paths), boxes_t, image_size, augment=False)
    indices = tf.data.Dataset.range(len(paths))
    dataset = _map(indices, lambda i: load(i, None))
    return dataset.batch(batch_size).prefetch(tf.data.AUTOTUNE)


# --- segmentation ------------------------------------------------------------------------------

def load_soft_target(path, height, width, num_classes):
    """Localization maps of ``WORK/locmaps/<id>.npz`` as ``(H, W, C+1)`` float32 (NumPy).

    The file must hold ``maps`` ``(C+1, H, W)`` matching the image; otherwise a ``WskError``
    naming the file.
    """
    maps = load_npz(path, required=("maps",))["maps"]
    if maps.ndim != 3 or maps.shape[0] != num_classes:
        raise WskError(f"localization maps must be ({num_classes}, H, W), found {maps.shape}", path)
    if maps.shape[1:] != (height, width):
        raise WskError(f"localization maps are {maps.shape[1]}x{maps.shape[2]} but the image is "
                       f"{height}x{width}", path)
    maps = maps.astype(np.float32)
    if not np.all(np.isfinite(maps)) or maps.min(initial=0) < 0:
        raise WskError("localization maps hold negative or non-finite values", path)
    return np.ascontiguousarray(maps.transpose(1, 2, 0))


def load_hard_target(path, height, width, num_classes):
    """A rough mask ``WORK/masks/<id>.png`` as ``(H, W)`` int32 class indices (255 = ignore)."""
    mask = read_label_png(path)
    if mask.shape != (height, width):
        raise WskError(f"mask is {mask.shape[0]}x{mask.shape[1]} but the image is {height}x{width}",
                       path)
    bad = np.unique(mask[(mask >= num_classes) & (mask != IGNORE_LABEL)])
    if bad.size:
        raise WskError(f"mask holds value(s) {bad.tolist()} that are no class of {num_classes}", path)
    return mask.astype(np.int32)


def segmentation_dataset(image_paths, target_paths, kind, num_classes, crop_size, batch_size,
                         epochs, seed, scale_range=(1.0, 1.0), flip=True, first_epoch=None,
                         target_stride=OUTPUT_STRIDE, copy_paste=0.0):
    """Segmentation training batches over all epochs (module docstring, steps 1-6).

    ``kind="soft"`` (Network_A): ``target_paths`` are localization-map ``.npz`` files; batches
    are ``(B, crop, crop, 3)`` images and ``(B, g, g, C+1)`` float32 targets normalised across
    channels (rows of zeros where there is no mass). ``kind="hard"`` (Network_B):
    ``target_paths`` are rough-mask PNGs; targets are ``(B, g, g)`` int32 with 255 ignored.
    ``g = (crop_size - 1) // target_stride + 1``: the side of the logits where ``target_stride`` is
    the network's output stride, the crop's where it is 1. ``copy_paste``: the probability of step 5.
    """
    if kind not in (SOFT, HARD):
        raise WskError(f"target kind must be {SOFT!r} or {HARD!r}, not {kind!r}")
    if len(image_paths) != len(target_paths):
        raise WskError(f"{len(image_paths)} images but {len(target_paths)} targets")
    check_crop_size(crop_size, target_stride)
    sizes = [decoded_size(p) for p in image_paths]
    read_image_at = image_reader(image_paths, sizes)
    read_target_at = target_reader(target_paths, kind, num_classes, sizes)

    def crop(index, seed):
        image = read_image_at(index)
        shape = tf.shape(image)
        target = read_target_at(index, shape[0], shape[1])
        return augment_segmentation(_preprocess(image), target, seed, crop_size, scale_range, kind, flip)

    def element(index, seed):
        if copy_paste:
            seed, partner_seed, partner_crop_seed, apply_seed = tf.unstack(split_seed(seed, 4))
            partner = tf.random.stateless_uniform([], seed=partner_seed, maxval=len(image_paths),
                                                  dtype=tf.int64)
            pair = crop(index, seed)
            apply = tf.random.stateless_uniform([], seed=apply_seed) < copy_paste
            # the partner is read and augmented only for the crops that take its objects
            image, target = tf.cond(apply, lambda: paste_objects(pair, crop(partner, partner_crop_seed), kind),
                                    lambda: pair)
        else:
            image, target = crop(index, seed)
        target = shrink_to_logits(target, target_stride)
        if kind == SOFT:
            target = normalise_soft_target(target)
        return image, target

    stream = epoch_stream(len(image_paths), batch_size, epochs, seed, first_epoch)
    return _finish(_map(stream, element), batch_size)
