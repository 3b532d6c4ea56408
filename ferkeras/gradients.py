"""The reference's question 6 in code: batch-norm and softmax + cross-entropy gradients in NumPy,
checked against TensorFlow's autodiff.

Batch normalisation in training mode (Ioffe & Szegedy 2015), per channel over the m values of a
batch (m = N for (N, C) inputs, N*H*W for conv maps (N, H, W, C)):

    mu = mean(x)   sigma^2 = mean((x - mu)^2)   x_hat = (x - mu) / sqrt(sigma^2 + eps)
    y = gamma * x_hat + beta

and the gradient of softmax + cross-entropy with respect to the logits z, y_hat - y. gradcheck()
compares each closed form with tf.GradientTape on random float64 inputs of random shapes.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

BN_EPSILON = 1e-5  # the model's BatchNorm epsilon (PyTorch's default)
TOLERANCE = 1e-6  # largest relative error accepted in float64
TRIALS = 20  # random inputs per check
GRADIENTS = ("dl/dx_hat", "dl/dsigma^2", "dl/dmu", "dl/dx", "dl/dgamma", "dl/dbeta",
             "dL/dz (softmax + cross-entropy)")


# ---------------------------------------------------------------------------- closed forms

@dataclass
class BatchNormGradients:
    """The six gradients of a loss l through batch normalisation, given dl/dy."""

    x_hat: np.ndarray  # dl/dx_hat, shape of x
    var: np.ndarray  # dl/dsigma^2, (C,)
    mean: np.ndarray  # dl/dmu, (C,): the total derivative, through sigma^2 as well
    x: np.ndarray  # dl/dx, shape of x
    gamma: np.ndarray  # (C,)
    beta: np.ndarray  # (C,)


def _batch_axes(x: np.ndarray) -> tuple[int, ...]:
    """Every axis but the last (channels): the values that one mean and variance cover."""
    return tuple(range(x.ndim - 1))


def batchnorm_forward(x: np.ndarray, gamma: np.ndarray, beta: np.ndarray,
                      eps: float = BN_EPSILON) -> np.ndarray:
    """y = gamma * (x - mu) / sqrt(sigma^2 + eps) + beta with the batch's own mean and variance."""
    axes = _batch_axes(x)
    mu = x.mean(axis=axes)
    var = ((x - mu) ** 2).mean(axis=axes)
    return gamma * (x - mu) / np.sqrt(var + eps) + beta


def batchnorm_backward(dl_dy: np.ndarray, x: np.ndarray, gamma: np.ndarray,
                       eps: float = BN_EPSILON) -> BatchNormGradients:
    """The closed-form gradients of batch normalisation in training mode, from dl/dy."""
    axes = _batch_axes(x)
    m = x.size // x.shape[-1]
    mu = x.mean(axis=axes)
    centred = x - mu
    var = (centred ** 2).mean(axis=axes)
    inv_std = 1.0 / np.sqrt(var + eps)
    x_hat = centred * inv_std

    dl_dx_hat = dl_dy * gamma
    dl_dvar = np.sum(dl_dx_hat * centred, axis=axes) * -0.5 * inv_std ** 3
    # The second term is the path mu -> sigma^2; it is 0 at the batch mean (sum(x - mu) = 0)
    # but belongs to the derivative, and is kept so the formula reads as derived.
    dl_dmu = np.sum(dl_dx_hat, axis=axes) * -inv_std + dl_dvar * np.sum(-2.0 * centred, axis=axes) / m
    dl_dx = dl_dx_hat * inv_std + dl_dvar * 2.0 * centred / m + dl_dmu / m
    return BatchNormGradients(x_hat=dl_dx_hat, var=dl_dvar, mean=dl_dmu, x=dl_dx,
                              gamma=np.sum(dl_dy * x_hat, axis=axes), beta=np.sum(dl_dy, axis=axes))


def softmax(logits: np.ndarray) -> np.ndarray:
    """Softmax over the last axis, shifted by the maximum so exp never overflows."""
    e = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def softmax_cross_entropy_gradient(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """dL/dz of L = -sum_k y_k log softmax(z)_k: y_hat - y (labels summing to 1 per row)."""
    return softmax(logits) - labels


# ---------------------------------------------------------------------------- TensorFlow's autodiff

def autodiff_batchnorm(x: np.ndarray, gamma: np.ndarray, beta: np.ndarray, dl_dy: np.ndarray,
                        eps: float) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """TensorFlow's y and gradients: dl/dx, dl/dgamma, dl/dbeta of keras.layers.BatchNormalization
    in training mode; dl/dx_hat, dl/dsigma^2, dl/dmu of the same forward pass written in tf ops,
    with that intermediate as the watched input (the layer does not expose it)."""
    import keras
    import tensorflow as tf

    # The loss sum(y * dl_dy) has exactly the upstream gradient dl_dy at y.
    upstream = tf.constant(dl_dy)
    layer = keras.layers.BatchNormalization(epsilon=eps, dtype="float64")
    layer.build(x.shape)
    layer.gamma.assign(gamma)
    layer.beta.assign(beta)
    x_t = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(x_t)
        y = layer(x_t, training=True)
        loss = tf.reduce_sum(y * upstream)
    dl_dx, dl_dgamma, dl_dbeta = tape.gradient(loss, [x_t, layer.gamma.value, layer.beta.value])

    axes = list(_batch_axes(x))

    def loss_from(mu, var=None, x_hat=None):
        if var is None:
            var = tf.reduce_mean(tf.square(x_t - mu), axis=axes)  # sigma^2 depends on mu
        if x_hat is None:
            x_hat = (x_t - mu) / tf.sqrt(var + eps)
        return tf.reduce_sum((gamma * x_hat + beta) * upstream)

    mu = tf.constant(x.mean(axis=tuple(axes)))
    var = tf.constant(((x - x.mean(axis=tuple(axes))) ** 2).mean(axis=tuple(axes)))
    x_hat = (x_t - mu) / tf.sqrt(var + eps)
    grads = {}
    for name, leaf, make_loss in (("dl/dmu", mu, lambda v: loss_from(v)),
                                  ("dl/dsigma^2", var, lambda v: loss_from(mu, var=v)),
                                  ("dl/dx_hat", x_hat, lambda v: loss_from(mu, var, x_hat=v))):
        with tf.GradientTape() as tape:
            tape.watch(leaf)
            loss = make_loss(leaf)
        grads[name] = tape.gradient(loss, leaf).numpy()
    grads.update({"dl/dx": dl_dx.numpy(), "dl/dgamma": dl_dgamma.numpy(),
                  "dl/dbeta": dl_dbeta.numpy()})
    return y.numpy(), grads


def autodiff_softmax_cross_entropy(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """dL/dz of TensorFlow's softmax cross-entropy, summed over the batch."""
    import tensorflow as tf

    z = tf.constant(logits)
    with tf.GradientTape() as tape:
        tape.watch(z)
        loss = tf.reduce_sum(tf.nn.softmax_cross_entropy_with_logits(tf.constant(labels), z))
    return tape.gradient(loss, z).numpy()


# ---------------------------------------------------------------------------- the check

def relative_error(ours: np.ndarray, reference: np.ndarray) -> float:
    """max |ours - reference| / max |reference|: the error on the scale of the gradient itself."""
    ours, reference = np.asarray(ours, np.float64), np.asarray(reference, np.float64)
    if ours.shape != reference.shape:
        raise ValueError(f"shapes differ: {ours.shape} against {reference.shape}")
    scale = max(float(np.abs(reference).max()), np.finfo(np.float64).tiny)
    return float(np.abs(ours - reference).max()) / scale


@dataclass
class GradcheckResult:
    """The largest relative error of each closed form against autodiff, over all trials."""

    errors: dict[str, float]
    trials: int
    shapes: list[tuple[int, ...]] = field(default_factory=list)  # batch-norm inputs tried
    forward_error: float = 0.0  # NumPy's y against the Keras layer's: are they the same function?

    @property
    def passed(self) -> bool:
        """Every gradient and the forward pass agree within TOLERANCE."""
        return max([*self.errors.values(), self.forward_error]) < TOLERANCE


def random_batchnorm_case(rng: np.random.Generator) -> tuple[np.ndarray, ...]:
    """(x, gamma, beta, dl_dy): a dense (N, C) or conv (N, H, W, C) batch, channels off-centre."""
    channels = int(rng.integers(1, 7))
    spatial = () if rng.random() < 0.3 else tuple(int(s) for s in rng.integers(1, 6, 2))
    shape = (int(rng.integers(2, 9)), *spatial, channels)
    # Each channel its own mean and scale, so mu and sigma^2 matter.
    x = rng.normal(rng.normal(0, 3, channels), rng.uniform(0.3, 3, channels), shape)
    gamma, beta = rng.normal(1, 0.5, channels), rng.normal(0, 1, channels)
    return x, gamma, beta, rng.normal(0, 1, shape)


def random_softmax_case(rng: np.random.Generator, smooth: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """(logits (N, K), labels): one-hot labels, label-smoothed by smooth (rows still sum to 1)."""
    n, k = int(rng.integers(1, 17)), int(rng.integers(2, 11))
    labels = np.eye(k)[rng.integers(0, k, n)] * (1 - smooth) + smooth / k
    return rng.normal(0, 3, (n, k)), labels


def gradcheck(trials: int = TRIALS, seed: int = 0, eps: float = BN_EPSILON) -> GradcheckResult:
    """Compare every closed-form gradient with TensorFlow's autodiff on random float64 inputs."""
    from ferkeras.errors import FerkerasError

    if trials < 1:
        raise FerkerasError(f"--trials {trials}: must be at least 1")
    rng = np.random.default_rng(seed)
    errors = dict.fromkeys(GRADIENTS, 0.0)
    result = GradcheckResult(errors, trials)
    for trial in range(trials):
        x, gamma, beta, dl_dy = random_batchnorm_case(rng)
        result.shapes.append(x.shape)
        y, autodiff = autodiff_batchnorm(x, gamma, beta, dl_dy, eps)
        result.forward_error = max(result.forward_error,
                                   relative_error(batchnorm_forward(x, gamma, beta, eps), y))
        ours = batchnorm_backward(dl_dy, x, gamma, eps)
        for name, value in (("dl/dx_hat", ours.x_hat), ("dl/dsigma^2", ours.var),
                            ("dl/dmu", ours.mean), ("dl/dx", ours.x), ("dl/dgamma", ours.gamma),
                            ("dl/dbeta", ours.beta)):
            errors[name] = max(errors[name], relative_error(value, autodiff[name]))
        # Every other trial with label smoothing 0.1: y_hat - y needs only sum(y) = 1.
        logits, labels = random_softmax_case(rng, smooth=0.1 if trial % 2 else 0.0)
        name = GRADIENTS[-1]
        errors[name] = max(errors[name], relative_error(
            softmax_cross_entropy_gradient(logits, labels),
            autodiff_softmax_cross_entropy(logits, labels)))
    return result


def format_gradcheck(result: GradcheckResult) -> str:
    """The printed table: each gradient's largest relative error and whether it passes."""
    lines = [f"Closed forms against TensorFlow autodiff, float64, {result.trials} random trials "
             f"(largest relative error, max|ours - tf| / max|tf|; must be < {TOLERANCE:g}):"]
    rows = [("y (forward, against keras BatchNormalization)", result.forward_error),
            *result.errors.items()]
    width = max(len(name) for name, _ in rows)
    for name, error in rows:
        lines.append(f"  {name:<{width}}  {error:.2e}  {'ok' if error < TOLERANCE else 'FAILED'}")
    lines.append("All gradients agree." if result.passed else "Some gradients disagree.")
    return "\n".join(lines)
