"""Keras models built from a trial's hyperparameters: a CNN, an MLP, or the user's own builder.

Only the Keras 3 API is used here, so the same code runs on any Keras backend.
"""

from __future__ import annotations

import functools

import keras

from sweeper.errors import DataError
from sweeper.pipeline.data import Dataset
from sweeper.pipeline.sources import import_object
from sweeper.space.schema import hparam


def build_model(model_cfg: dict, hp: dict, data: Dataset, steps_per_epoch: int,
                max_epochs: int) -> keras.Model:
    """An uncompiled-or-compiled model from the space's model section -> a compiled model."""
    if "function" in model_cfg:
        builder = import_object(model_cfg["function"], "model.function")
        model = builder(hp, data.input_shape, data.num_classes)
        if not isinstance(model, keras.Model):
            raise DataError(f"model.function {model_cfg['function']} returned "
                            f"{type(model).__name__}, not a keras.Model")
    elif model_cfg["name"] == "cnn":
        if not data.is_image:
            raise DataError(f"model cnn needs images, but the dataset has rows of shape "
                            f"{data.input_shape}; use model: {{name: mlp}}")
        model = build_cnn(hp, data.input_shape, data.num_classes)
    else:
        model = build_mlp(hp, data.input_shape, data.num_classes)
    if not getattr(model, "compiled", False):  # a user builder may compile its own
        model.compile(optimizer=make_optimizer(hp, steps_per_epoch * max_epochs),
                      loss="sparse_categorical_crossentropy")
    return model


def augmentation_layers(strength: float, flip: bool) -> list:
    """Random image transforms, active only in training, run on the accelerator with the model.

    strength 0 turns augmentation off; 1 means up to 10% rotation/translation/zoom.
    """
    if strength <= 0:
        return []
    layers = [
        keras.layers.RandomRotation(0.1 * strength, fill_mode="constant"),
        keras.layers.RandomTranslation(0.1 * strength, 0.1 * strength, fill_mode="constant"),
        keras.layers.RandomZoom(0.1 * strength, fill_mode="constant"),
    ]
    if flip:
        layers.append(keras.layers.RandomFlip("horizontal"))
    if keras.backend.backend() == "jax":
        # Keras marks these layers unfit for XLA (TensorFlow's image transform op is), and a
        # model holding one then trains op by op: on JAX ~25x slower per epoch (digits CNN,
        # CPU: 2.5 s against 0.09 s). JAX's own transform compiles, so the train step may too.
        for layer in layers:
            layer.supports_jit = True
    return layers


def build_cnn(hp: dict, input_shape: tuple, num_classes: int) -> keras.Model:
    """Conv blocks (conv -> [batch norm] -> relu -> pool), each doubling the filters, then a
    dense head. Pooling stops when the feature map is down to 1 pixel. Hyperparameters a space
    leaves out take their defaults from sweeper.space.schema."""
    get = functools.partial(hparam, hp, model="cnn")
    inputs = keras.Input(shape=input_shape)
    x = inputs
    for layer in augmentation_layers(get("augment_strength"), get("augment_flip")):
        x = layer(x)
    filters, size = get("filters"), min(input_shape[0], input_shape[1])
    for _ in range(get("conv_blocks")):
        x = keras.layers.Conv2D(filters, get("kernel_size"), padding="same",
                                use_bias=not get("batch_norm"))(x)
        if get("batch_norm"):
            x = keras.layers.BatchNormalization(momentum=0.9)(x)  # small data: few steps per epoch
        x = keras.layers.Activation("relu")(x)
        if size >= 2:
            x = keras.layers.MaxPooling2D(2, padding="same")(x)
            size = (size + 1) // 2
        filters *= 2
    x = keras.layers.GlobalAveragePooling2D()(x)
    if get("dropout") > 0:
        x = keras.layers.Dropout(get("dropout"))(x)
    x = keras.layers.Dense(get("dense_units"), activation="relu")(x)
    outputs = keras.layers.Dense(num_classes, activation="softmax")(x)
    return keras.Model(inputs, outputs, name="cnn")


def build_mlp(hp: dict, input_shape: tuple, num_classes: int) -> keras.Model:
    get = functools.partial(hparam, hp, model="mlp")
    inputs = keras.Input(shape=input_shape)
    x = keras.layers.Flatten()(inputs) if len(input_shape) > 1 else inputs
    for _ in range(get("hidden_layers")):
        x = keras.layers.Dense(get("units"), use_bias=not get("batch_norm"))(x)
        if get("batch_norm"):
            x = keras.layers.BatchNormalization(momentum=0.9)(x)  # small data: few steps per epoch
        x = keras.layers.Activation(get("activation"))(x)
        if get("dropout") > 0:
            x = keras.layers.Dropout(get("dropout"))(x)
    outputs = keras.layers.Dense(num_classes, activation="softmax")(x)
    return keras.Model(inputs, outputs, name="mlp")


def make_optimizer(hp: dict, total_steps: int) -> keras.optimizers.Optimizer:
    get = functools.partial(hparam, hp)
    lr = learning_rate_schedule(get("lr_schedule"), get("learning_rate"), total_steps)
    name = get("optimizer")
    if name == "sgd":
        return keras.optimizers.SGD(lr, momentum=get("momentum"), nesterov=True)
    if name == "rmsprop":
        return keras.optimizers.RMSprop(lr, momentum=get("momentum"))
    if name == "adamw":
        return keras.optimizers.AdamW(lr, weight_decay=get("weight_decay"))
    return keras.optimizers.Adam(lr)


def learning_rate_schedule(kind: str, lr: float, total_steps: int):
    if kind == "cosine":
        return keras.optimizers.schedules.CosineDecay(lr, decay_steps=max(1, total_steps))
    if kind == "exponential":
        # Falls to 1% of the start by the last step.
        return keras.optimizers.schedules.ExponentialDecay(lr, decay_steps=max(1, total_steps),
                                                           decay_rate=0.01)
    return lr
