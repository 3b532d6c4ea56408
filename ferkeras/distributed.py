"""tf.distribute for training: the strategy a run names, which worker is the chief, and the
epoch loop that multi-worker training needs.

`--strategy multiworker` is TensorFlow's MultiWorkerMirroredStrategy, configured by the
TF_CONFIG environment variable of each worker (https://www.tensorflow.org/guide/distributed_training).
Keras 3.15's `model.fit` cannot drive it (keras-team/keras#20585): fit first reduces a batch
of per-worker tensors, then reduces each scalar log along an axis it does not have, and both
raise. `fit_multiworker` is fit's own epoch loop (callbacks, metrics reset, validation) over
Keras' own `train_step` and `test_step`, run on every replica with `strategy.run`; the
metrics are read after each loop, where TensorFlow sums their states across the workers.
"""

from __future__ import annotations

import json
import os

import keras
import tensorflow as tf

from ferkeras.errors import FerkerasError


def make_strategy(name: str) -> tf.distribute.Strategy:
    """The tf.distribute strategy of --strategy; call it before any other TensorFlow work."""
    if name == "mirrored":
        # Mirrors across every visible GPU; with none, across the one CPU device.
        return tf.distribute.MirroredStrategy()
    if name == "multiworker":
        check_tf_config(os.environ.get("TF_CONFIG"))
        return tf.distribute.MultiWorkerMirroredStrategy()
    return tf.distribute.get_strategy()


def check_tf_config(text: str | None) -> None:
    """Refuse a missing or malformed TF_CONFIG with one line (TensorFlow would hang or trace back)."""
    if not text:
        raise FerkerasError("--strategy multiworker: TF_CONFIG is not set; each worker needs "
                            "'{\"cluster\": {\"worker\": [\"host:port\", ...]}, "
                            "\"task\": {\"type\": \"worker\", \"index\": N}}'")
    try:
        config = json.loads(text)
        workers = config["cluster"]["worker"]
        task_type, index = config["task"]["type"], int(config["task"]["index"])
    except (ValueError, KeyError, TypeError) as e:
        raise FerkerasError(f"TF_CONFIG: not a cluster and task as JSON ({e})") from None
    if task_type == "worker" and not 0 <= index < len(workers):
        raise FerkerasError(f"TF_CONFIG: task index {index} is not one of the "
                            f"{len(workers)} workers")


def is_chief(strategy: tf.distribute.Strategy) -> bool:
    """Whether this process writes the run: always, but in a cluster only its chief (or worker 0)."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.task_type:
        return True
    if resolver.task_type == "chief":
        return True
    has_chief = "chief" in resolver.cluster_spec().as_dict()
    return resolver.task_type == "worker" and resolver.task_id == 0 and not has_chief


def is_multiworker(strategy: tf.distribute.Strategy) -> bool:
    """Whether a strategy spans several workers (and so needs fit_multiworker)."""
    return isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)


def with_class_weight(ds: tf.data.Dataset, class_weight: dict[int, float]) -> tf.data.Dataset:
    """Add each image's class weight as its sample weight, as fit's class_weight does."""
    weights = tf.constant([class_weight.get(c, 1.0) for c in range(max(class_weight) + 1)],
                          tf.float32)
    return ds.map(lambda images, targets: (images, targets,
                                           tf.gather(weights, tf.argmax(targets, axis=-1))))


def fit_multiworker(model: keras.Model, strategy: tf.distribute.Strategy,
                    train_ds: tf.data.Dataset, val_ds: tf.data.Dataset, epochs: int,
                    callbacks: list[keras.callbacks.Callback]) -> None:
    """model.fit(train_ds, validation_data=val_ds, epochs, callbacks) across the workers.

    Each worker runs this with the same datasets: TensorFlow splits every global batch
    between them, so the global batch, and the learning-rate schedule, stay the one-worker
    run's.
    """
    with strategy.scope():
        # What fit's first step does, from one plain (undistributed) batch: build the loss,
        # metrics and optimizer variables here, not inside the replicas.
        model._symbolic_build(data_batch=next(iter(train_ds)))
    train_batches = strategy.experimental_distribute_dataset(train_ds)
    val_batches = strategy.experimental_distribute_dataset(val_ds)

    @tf.function
    def train_step(batch):
        strategy.run(model.train_step, args=(batch,))

    @tf.function
    def test_step(batch):
        strategy.run(model.test_step, args=(batch,))

    def read_metrics() -> dict[str, float]:
        return {k: float(v) for k, v in model.get_metrics_result().items()}

    callback_list = keras.callbacks.CallbackList(callbacks, model=model, epochs=epochs)
    model.stop_training = False
    callback_list.on_train_begin()
    for epoch in range(getattr(model, "_initial_epoch", None) or 0, epochs):  # set by BackupAndRestore
        model.reset_metrics()
        callback_list.on_epoch_begin(epoch)
        for step, batch in enumerate(train_batches):
            callback_list.on_train_batch_begin(step)
            train_step(batch)
            callback_list.on_train_batch_end(step)
        logs = read_metrics()
        model.reset_metrics()
        callback_list.on_test_begin()
        for batch in val_batches:
            test_step(batch)
        val_logs = read_metrics()
        callback_list.on_test_end(val_logs)
        logs.update({f"val_{k}": v for k, v in val_logs.items()})
        callback_list.on_epoch_end(epoch, logs)
        if model.stop_training:
            break
    callback_list.on_train_end(logs=None)
