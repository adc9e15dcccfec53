"""Pretraining the VGG-16 trunk on the generated corpus (``wsk pretrain``): ImageNet's part, offline.

The paper's networks start from an ImageNet VGG-16 (§4.2). ``pretrain_trunk`` trains the
``wsk.models.hcp`` network (VGG-16 conv1_1..conv5_3, fc6, fc7; one hypothesis, the whole image),
with batch normalisation folded in afterwards (``normalised_trunk``, ``fold_into_hcp``), as a
multi-label classifier of ``wsk.data.corpus``'s shape and texture classes (the basic corpus's 28,
or the broad corpus's 39), from image-level labels only, and keeps the epoch with the best mAP on the corpus's held-out split. The result is an HCP
model whose conv and fc6/fc7 layers a recipe copies by naming it (``backbone_weights=<zoo name>``,
see ``wsk.models.imagenet.load_trunk``); its fc8 (the corpus classes) is never used downstream.

``wsk pretrain --init TRUNK`` starts from a trained trunk instead of random weights
(``unfold_into_trunk``, the inverse of the folding): a curriculum, e.g. the basic corpus's card
then the broad corpus (``--corpus broad``), which from random weights learns slowly (measured:
held-out mAP 0.116, 0.162 after its first two epochs of 80,000 images, the basic corpus 0.18, 0.25).

Outputs in ``OUT``: ``trunk.keras``, ``trunk.json`` (architecture, settings, the command, seconds,
held-out mAP per epoch) and ``history.csv``. Adam, a short linear warm-up, then a cosine decay.
"""

import dataclasses
import os
import time

import keras
import numpy as np

from wsk.data.corpus import corpus_classes, generate_corpus
from wsk.errors import WskError
from wsk.io import load_json, save_json
from wsk.metrics import multilabel_average_precision
from wsk.models import hcp, preprocess_input
from wsk.models.hcp import DROPOUT, FC_CHANNELS
from wsk.models.layers import CaffePooling2D
from wsk.models.description import ModelDescription
from wsk.models.saving import load_model, save_model, sidecar_path
from wsk.models.vgg import PIXEL_RMS, VGG16_BLOCKS, block_conv_names, conv_names, scaled
from wsk.recipes import PretrainConfig

CORPUS = "wsk.data.corpus.generate_corpus"   # what the trunk is trained on


def normalised_trunk(num_classes, size, width):
    """The HCP network with batch normalisation before every ReLU (conv1_1..conv5_3, fc6, fc7):
    ``(B, S, S, 3)`` preprocessed images -> softmax ``(B, num_classes)``.

    Plain VGG-16 at CPU widths barely moves from random weights in hundreds of steps (measured:
    loss at ln K after 400 steps with SGD or Adam); normalised, it trains fast. The
    normalisation is then folded into the weights (``fold_into_hcp``), so the trunk that ships is
    the paper's plain VGG-16.
    """

    inputs = keras.Input((size, size, 3), name="image")
    x = keras.layers.Rescaling(1.0 / PIXEL_RMS, name="unit_scale")(inputs)
    for block, (names, (channels, _)) in enumerate(zip(block_conv_names(), VGG16_BLOCKS), start=1):
        for name in names:
            x = keras.layers.Conv2D(scaled(channels, width), 3, padding="same", use_bias=False,
                                    kernel_initializer="he_normal", name=name)(x)
            x = keras.layers.ReLU(name=f"{name}_relu")(keras.layers.BatchNormalization(name=f"{name}_bn")(x))
        x = CaffePooling2D("max", 2, 2, 0, name=f"pool{block}")(x)
    x = keras.layers.Flatten(name="flatten")(x)
    for name in ("fc6", "fc7"):
        x = keras.layers.Dense(scaled(FC_CHANNELS, width), use_bias=False, kernel_initializer="he_normal",
                               name=name)(x)
        x = keras.layers.ReLU(name=f"{name}_relu")(keras.layers.BatchNormalization(name=f"{name}_bn")(x))
        x = keras.layers.Dropout(DROPOUT, name=f"drop{name[-1]}")(x)
    x = keras.layers.Dense(num_classes, name="fc8")(x)
    return keras.Model(inputs, keras.layers.Softmax(name="prob")(x), name="normalised_trunk")


def fold_into_hcp(trained, num_classes, size, width):
    """A plain ``wsk.models.hcp`` (one hypothesis) computing what ``trained`` computes at inference:
    each batch normalisation folded into the layer before it, the 1/PIXEL_RMS input scale into conv1_1."""
    model = hcp(num_classes=num_classes, hypotheses=1, image_size=size, width=width)
    for name in list(conv_names()) + ["fc6", "fc7"]:
        kernel = trained.get_layer(name).get_weights()[0]
        gamma, beta, mean, var = trained.get_layer(f"{name}_bn").get_weights()
        scale = gamma / np.sqrt(var + trained.get_layer(f"{name}_bn").epsilon)
        if name == "conv1_1":
            kernel = kernel / PIXEL_RMS
        model.get_layer(name).set_weights([kernel * scale, beta - mean * scale])
    model.get_layer("fc8").set_weights(trained.get_layer("fc8").get_weights())
    return model


def unfold_into_trunk(model, trunk, sample, class_names=None, trunk_classes=None):
    """Start the normalised trunk ``model`` from a folded HCP ``trunk`` (``fold_into_hcp``'s inverse).

    Every conv/fc kernel is the trunk's (conv1_1 times the 1/PIXEL_RMS input scale), and every batch
    normalisation is set from the layer's pre-activation mean and variance over ``sample``
    (preprocessed images) so that it adds back the trunk's bias: in inference mode ``model``
    computes the trunk's fc7 exactly, in training mode nearly (batch statistics). fc8 columns of
    the classes both know (``class_names`` of ``model``, ``trunk_classes`` of ``trunk``) are the
    trunk's; the others keep their init. Returns ``model``.
    """
    names = list(conv_names()) + ["fc6", "fc7"]
    biases = {}
    for name in names:
        kernel, bias = trunk.get_layer(name).get_weights()
        have = tuple(model.get_layer(name).weights[0].shape)
        if have != kernel.shape:
            raise WskError(f"layer {name} of the starting trunk has shape {kernel.shape}, the "
                           f"pretrained network's {have} (another width or image size?)")
        model.get_layer(name).set_weights([kernel * PIXEL_RMS if name == "conv1_1" else kernel])
        bn = model.get_layer(f"{name}_bn")
        bn.set_weights([np.ones_like(bias), bias, np.zeros_like(bias), np.full_like(bias, 1 - bn.epsilon)])
        biases[name] = bias
    probe = keras.Model(model.input, [model.get_layer(name).output for name in names])
    for name, z in zip(names, probe.predict(sample, batch_size=256, verbose=0)):
        z = z.reshape(-1, z.shape[-1]).astype(np.float64)
        mean, var = z.mean(axis=0), z.var(axis=0)
        bn = model.get_layer(f"{name}_bn")
        bn.set_weights([np.sqrt(var + bn.epsilon), mean + biases[name], mean, var])
    if class_names is not None and trunk_classes is not None:
        kernel, bias = model.get_layer("fc8").get_weights()
        old_kernel, old_bias = trunk.get_layer("fc8").get_weights()
        for j, name in enumerate(class_names):
            if name in trunk_classes:
                i = list(trunk_classes).index(name)
                kernel[:, j], bias[j] = old_kernel[:, i], old_bias[i]
        model.get_layer("fc8").set_weights([kernel, bias])
    return model


def load_start_trunk(init):
    """``(folded HCP model, its class names or None)`` of ``init``: a ``trunk.keras`` path (class
    names from its sidecar) or a trunk card of the zoo."""
    if os.path.exists(os.fspath(init)):
        path = os.fspath(init)
        classes = None
        if os.path.exists(sidecar_path(path)):
            classes = load_json(sidecar_path(path)).get("class_names")
        return keras.saving.load_model(path, compile=False, safe_mode=True), classes
    from wsk.registry import fetch, get_card

    card = get_card(init)
    return load_model(fetch(init)), card.get("class_names")


class CorpusBatches(keras.utils.PyDataset):
    """Shuffled, augmented training batches of in-memory corpus images, made in NumPy so that
    pretraining runs on any Keras backend (JAX on an accelerator machine without TensorFlow).

    Batch ``i`` of an epoch: ``(B, S, S, 3)`` preprocessed images, each flipped left-right with
    probability 1/2 and cut at a random offset out of its 4-pixel reflect-padded copy, and the
    labels normalised to sum to 1 (the softmax cross-entropy target). A new order every epoch.
    """

    PAD = 4

    def __init__(self, images, labels, batch_size, seed):
        super().__init__()
        if len(images) < batch_size:
            raise WskError(f"a pretraining corpus of {len(images)} images holds no batch of {batch_size}")
        self.images = images
        self.targets = (labels / np.maximum(labels.sum(axis=1, keepdims=True), 1)).astype(np.float32)
        self.batch_size = batch_size
        self.rng = np.random.default_rng(seed)
        self.order = self.rng.permutation(len(images))

    def __len__(self):
        return len(self.images) // self.batch_size

    def __getitem__(self, index):
        chosen = np.sort(self.order[index * self.batch_size:(index + 1) * self.batch_size])
        return preprocess_input(augment(self.images[chosen], self.rng, self.PAD)), self.targets[chosen]

    def on_epoch_end(self):
        self.order = self.rng.permutation(len(self.images))


def augment(images, rng, pad):
    """``(N, S, S, C)`` images, each flipped left-right with probability 1/2, then cut ``S x S`` at a
    uniform random offset in ``[0, 2 pad]`` out of its reflect-padded copy (``pad`` pixels a side)."""
    n, size = images.shape[0], images.shape[1]
    flip = rng.random(n) < 0.5
    images = np.where(flip[:, None, None, None], images[:, :, ::-1], images)
    padded = np.pad(images, ((0, 0), (pad, pad), (pad, pad), (0, 0)), mode="reflect")
    dy, dx = rng.integers(0, 2 * pad + 1, size=(2, n))
    steps = np.arange(size)
    rows = (dy[:, None] + steps)[:, :, None]
    cols = (dx[:, None] + steps)[:, None, :]
    return padded[np.arange(n)[:, None, None], rows, cols]


def held_out_map(model, images, labels, hypotheses_axis):
    """Multi-label mAP of ``model`` on preprocessed ``images`` (an HCP takes a hypotheses axis)."""
    inputs = preprocess_input(images)
    scores = model.predict(inputs[:, None] if hypotheses_axis else inputs, batch_size=256, verbose=0)
    return multilabel_average_precision(labels, scores)[0]


def machine():
    """Where a trunk was trained, for its card: CPU cores, the Keras backend and its accelerators."""
    text = f"{os.cpu_count()} CPU cores, KERAS_BACKEND={keras.backend.backend()}"
    if keras.backend.backend() == "jax":
        import jax

        accelerators = [d.device_kind for d in jax.devices() if d.platform != "cpu"]
        if accelerators:
            text += ", " + ", ".join(accelerators)
    return text


def pretrain_trunk(out, config=PretrainConfig(), jobs=2, command=None, verbose=2, printer=print,
                   corpus="basic", backgrounds=(), init=None):
    """Train the trunk into ``out`` (see the module docstring); return the path of ``trunk.keras``.

    ``corpus``: ``"basic"`` or ``"broad"`` (``wsk.data.corpus``); ``backgrounds``: paths of extra
    background photographs of the broad corpus; ``init``: a trunk (``trunk.keras`` path or zoo
    card) to start from (``unfold_into_trunk``) instead of random weights. All three are recorded in
    ``trunk.json``'s recipe.
    """

    os.makedirs(out, exist_ok=True)
    start = time.perf_counter()
    class_names = corpus_classes(corpus)
    backgrounds = tuple(str(p) for p in backgrounds)
    printer(f"generating {config.images} + {config.val_images} {corpus} corpus images at {config.size} px"
            + (f" ({len(backgrounds)} extra background photographs)" if backgrounds else ""))
    train_x, train_y = generate_corpus(config.images, config.size, config.seed, jobs=jobs, corpus=corpus,
                                       backgrounds=backgrounds)
    val_x, val_y = generate_corpus(config.val_images, config.size, config.seed, start=config.images,
                                   jobs=jobs, corpus=corpus, backgrounds=backgrounds)
    generated = time.perf_counter() - start
    printer(f"corpus generated in {generated:.0f} s")
    keras.utils.set_random_seed(config.seed)
    k = len(class_names)
    model = normalised_trunk(k, config.size, config.width)
    if init is not None:
        start_trunk, start_classes = load_start_trunk(init)
        unfold_into_trunk(model, start_trunk, preprocess_input(train_x[:1024]), class_names, start_classes)
        printer(f"starting from trunk {init}: held-out mAP "
                f"{held_out_map(model, val_x, val_y, hypotheses_axis=False):.4f} before training")
    batches = CorpusBatches(train_x, train_y, config.batch_size, config.seed)
    steps = len(batches)
    warmup = min(config.warmup_steps, steps * config.epochs // 4)
    schedule = keras.optimizers.schedules.CosineDecay(
        0.0, decay_steps=steps * config.epochs - warmup, warmup_target=config.lr, warmup_steps=warmup)
    model.compile(optimizer=keras.optimizers.Adam(schedule), loss=keras.losses.CategoricalCrossentropy())
    best_path = os.path.join(out, "trunk.keras")
    history = []

    class KeepBest(keras.callbacks.Callback):
        """Held-out mAP after every epoch; the best epoch is folded and saved as the trunk."""

        best = -1.0

        def on_epoch_end(self, epoch, logs=None):
            value = held_out_map(self.model, val_x, val_y, hypotheses_axis=False)
            history.append(value)
            printer(f"epoch {epoch + 1}: held-out mAP {value:.4f}")
            if value > self.best:
                self.best = value
                save_model(fold_into_hcp(self.model, k, config.size, config.width), best_path)

    fit = model.fit(batches, epochs=config.epochs, verbose=verbose,
                    callbacks=[KeepBest(), keras.callbacks.CSVLogger(os.path.join(out, "history.csv"))])
    trunk = keras.saving.load_model(best_path, compile=False, safe_mode=True)
    val_map = held_out_map(trunk, val_x, val_y, hypotheses_axis=True)   # the folded, plain VGG-16
    description = ModelDescription(
        "hcp", class_names, config.width, image_size=config.size, hypotheses=1,
        output="softmax over the corpus classes",
        recipe=dict(dataclasses.asdict(config), corpus=CORPUS, corpus_kind=corpus, backgrounds=list(backgrounds),
                    init=None if init is None else str(init)),
        training_images=config.images, command=command,
        metrics={"val_mAP": val_map, "val_mAP_per_epoch": history,
                 "train_loss_per_epoch": [float(v) for v in fit.history["loss"]],
                 "seconds": {"corpus": generated, "total": time.perf_counter() - start},
                 "machine": machine()})
    save_json(sidecar_path(best_path), description.to_json())
    printer(f"trunk: held-out mAP {val_map:.4f} over {k} classes; {best_path}")
    return best_path
