"""Procedural 48x48 gray faces in the 7 FER2013 classes, for runs without FER2013.

Each face is drawn in canonical face coordinates (u to the right, v down, one unit
is about half a face width) and mapped to the image by a random shift, scale and
in-plane rotation. The expression lives only in the brows, eyes and mouth, whose
geometry is drawn from per-class distributions that overlap (angry/disgust,
fear/surprise, neutral/sad). Everything else (head shape, skin and background
brightness, lighting, contrast, blur, noise) is drawn independently of the label,
so the returned masks (the features dilated by about 2 px) hold all the class
information. Brows and eyes are mirror-symmetric and the one asymmetric cue (the
raised upper lip of disgust) picks its side at random, so every class is
invariant in distribution under horizontal flips.
"""

import numpy as np

from ferkeras.spec import IMAGE_SIZE, NUM_CLASSES

MASK_RADIUS_PX = 2  # dilation of the drawn features; covers the 1-px blur and anti-aliasing
CHUNK = 1000  # images rendered at once; bounds the float32 temporaries to ~300 MB

# Per-class expression parameters, one row per class (FER2013 order), as
# (mean, spread) per column; a sample is mean + spread * standard normal.
#   brow_raise: brows moved up (+) or down (-)        brow_tilt: inner ends up (+) / down (-)
#   eye_open:   eye half-height                       mouth_curve: corners up (+) / down (-)
#   mouth_open: half-gap between the lips             mouth_width: mouth half-width
#   lip_raise:  one-sided lift of the upper lip (disgust)
PARAM_NAMES = ("brow_raise", "brow_tilt", "eye_open", "mouth_curve", "mouth_open", "mouth_width", "lip_raise")
CLASS_PARAM_MEAN = np.array([
    # raise  tilt   eye    curve  open   width  lip
    [-0.09, -0.18, 0.055, -0.02, 0.000, 0.24, 0.00],  # 0 angry
    [-0.06, -0.09, 0.050, -0.09, 0.015, 0.28, 0.09],  # 1 disgust
    [0.11, 0.11, 0.120, -0.03, 0.050, 0.28, 0.00],  # 2 fear
    [0.01, 0.00, 0.065, 0.16, 0.035, 0.36, 0.00],  # 3 happy
    [0.01, 0.16, 0.070, -0.11, 0.000, 0.29, 0.00],  # 4 sad
    [0.15, 0.02, 0.130, 0.00, 0.130, 0.19, 0.00],  # 5 surprise
    [0.00, 0.00, 0.080, 0.00, 0.000, 0.30, 0.00],  # 6 neutral
], dtype=np.float32)
CLASS_PARAM_SPREAD = np.array([0.035, 0.045, 0.014, 0.03, 0.022, 0.03, 0.022], dtype=np.float32)


def _soft(distance_px: np.ndarray) -> np.ndarray:
    """Coverage of a shape from its signed distance in pixels (1-px anti-aliased edge)."""
    return np.clip(0.5 - distance_px, 0.0, 1.0)


def _ellipse_distance(x: np.ndarray, y: np.ndarray, half_w, half_h) -> np.ndarray:
    """Approximate signed distance to an axis-aligned ellipse (first-order, good near the edge)."""
    k0 = np.sqrt((x / half_w) ** 2 + (y / half_h) ** 2)
    k1 = np.sqrt((x / half_w**2) ** 2 + (y / half_h**2) ** 2) + 1e-6
    return k0 * (k0 - 1.0) / k1


def _dilate(covered: np.ndarray, radius: int) -> np.ndarray:
    """Binary dilation of (k, 48, 48) masks by a disk of the given radius in pixels."""
    padded = np.pad(covered, ((0, 0), (radius, radius), (radius, radius)))
    out = np.zeros_like(covered)
    for dy in range(-radius, radius + 1):
        for dx in range(-radius, radius + 1):
            if dy * dy + dx * dx <= radius * radius:
                out |= padded[:, radius + dy:radius + dy + IMAGE_SIZE, radius + dx:radius + dx + IMAGE_SIZE]
    return out


def _draw_params(labels: np.ndarray, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Per-image expression and nuisance parameters, each shaped (n, 1, 1) to broadcast over pixels."""
    n = len(labels)
    expression = CLASS_PARAM_MEAN[labels] + CLASS_PARAM_SPREAD * rng.standard_normal((n, len(PARAM_NAMES)))
    p = {name: expression[:, i] for i, name in enumerate(PARAM_NAMES)}
    p["eye_open"] = np.maximum(p["eye_open"], 0.02)
    p["mouth_open"] = np.maximum(p["mouth_open"], 0.0)
    p["mouth_width"] = np.maximum(p["mouth_width"], 0.12)
    p["lip_raise"] = np.maximum(p["lip_raise"], 0.0)
    p["lip_side"] = rng.choice(np.array([-1.0, 1.0]), n)  # which side of the lip lifts: keeps flip invariance
    # Nuisances, all independent of the label.
    p["center_x"] = IMAGE_SIZE / 2 + rng.uniform(-5.0, 5.0, n)
    p["center_y"] = IMAGE_SIZE / 2 + 0.5 + rng.uniform(-5.0, 5.0, n)
    p["scale_px"] = 22.5 * rng.uniform(0.9, 1.1, n)
    p["angle"] = np.deg2rad(rng.uniform(-12.0, 12.0, n))
    # Individual feature layout (where eyes and mouth sit), so that no fixed pixel is a class cue.
    p["eye_x"] = rng.uniform(0.37, 0.43, n)
    p["eye_y"] = rng.normal(-0.15, 0.025, n)
    p["mouth_y"] = rng.normal(0.5, 0.035, n)
    p["head_w"] = rng.uniform(0.86, 1.0, n)
    p["head_h"] = p["head_w"] * rng.uniform(1.15, 1.32, n)
    p["skin"] = rng.uniform(0.45, 0.8, n)
    p["background"] = rng.uniform(0.05, 0.95, n)
    p["feature_dark"] = rng.uniform(0.15, 0.4, n)  # brow/iris darkness as a fraction of skin
    p["light_x"] = rng.uniform(-0.4, 0.4, n)
    p["light_y"] = rng.uniform(-0.3, 0.3, n)
    p["contrast"] = rng.uniform(0.6, 1.4, n)
    p["blur"] = rng.uniform(0.0, 0.8, n)
    p["noise"] = rng.uniform(0.01, 0.05, n)
    return {k: v.astype(np.float32)[:, None, None] for k, v in p.items()}


def _render(p: dict[str, np.ndarray], noise: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Render one chunk: float images in [0, 1] and boolean feature masks, both (k, 48, 48)."""
    rows, cols = np.mgrid[0:IMAGE_SIZE, 0:IMAGE_SIZE].astype(np.float32) + 0.5
    dx, dy = cols - p["center_x"], rows - p["center_y"]
    cos, sin, s = np.cos(p["angle"]), np.sin(p["angle"]), p["scale_px"]
    u = (cos * dx + sin * dy) / s
    v = (-sin * dx + cos * dy) / s
    au = np.abs(u)  # brows and eyes are mirror images: draw both at once on |u|

    skin, dark = p["skin"], p["skin"] * p["feature_dark"]
    img = np.zeros_like(u) + p["background"]
    img += (_soft(_ellipse_distance(u, v - 0.05, p["head_w"], p["head_h"]) * s)) * (skin - p["background"])
    # Nose shading: fixed, class-independent structure the model has to learn to ignore.
    img -= 0.12 * skin * _soft(_ellipse_distance(u, v - 0.22, 0.1, 0.06) * s)

    # Eyes: bright sclera ellipse whose height is the openness, with a dark iris clipped to it.
    eye_u, eye_v = au - p["eye_x"], v - p["eye_y"]
    eye_d = _ellipse_distance(eye_u, eye_v, 0.17, p["eye_open"]) * s
    eye = _soft(eye_d)
    img += eye * (np.minimum(skin + 0.25, 1.0) - img)
    iris = np.minimum(eye, _soft(_ellipse_distance(eye_u, eye_v, 0.07, 0.07) * s))
    img += iris * (dark - img)

    # Brows: thick strokes 0.27 above the eyes, from inner (t=0) to outer (t=1) end,
    # raised and tilted per class, with a slight arch.
    t = np.clip((eye_u + 0.22) / 0.44, 0.0, 1.0)
    brow_v = p["eye_y"] - 0.27 - p["brow_raise"] - p["brow_tilt"] * (0.5 - t) - 0.03 * np.sin(np.pi * t)
    along = eye_u + 0.22 - 0.44 * t  # beyond the ends: distance to the end caps
    brow_d = (np.sqrt((v - brow_v) ** 2 + along**2) - 0.055) * s  # np.hypot is ~10x slower
    img += _soft(brow_d) * (dark - img)

    # Mouth: lips between an upper and lower boundary around a parabola whose corners
    # rise (smile) or fall; the open part between them is a dark cavity.
    w = p["mouth_width"]
    across = np.clip(u / w, -1.0, 1.0)
    bulge = np.sqrt(1.0 - across**2)
    centre_v = p["mouth_y"] - p["mouth_curve"] * (across**2 - 0.5)
    lift = p["lip_raise"] * np.clip(p["lip_side"] * across + 0.2, 0.0, 1.0)
    gap_up = p["mouth_open"] * bulge + lift
    gap_down = p["mouth_open"] * bulge
    lip = 0.045
    mouth_d = np.maximum(np.maximum(centre_v - gap_up - lip - v, v - centre_v - gap_down - lip), au - w) * s
    cavity_d = np.maximum(np.maximum(centre_v - gap_up - v, v - centre_v - gap_down), au - w) * s
    img += _soft(mouth_d) * (skin * 0.5 - img)
    img += _soft(cavity_d) * (dark * 0.5 - img)

    # Dilate the pixels the features touch at all (soft edge included) rather than thresholding
    # the approximate distances, which overestimate near steep curves and thin ellipses.
    touched = (eye_d < 0.5) | (brow_d < 0.5) | (mouth_d < 0.5)
    mask = _dilate(touched, MASK_RADIUS_PX)

    # Photometric nuisances: lighting gradient, contrast, a little blur, sensor noise.
    img *= (1.0 + p["light_x"] * (cols - IMAGE_SIZE / 2) / IMAGE_SIZE * 2
            + p["light_y"] * (rows - IMAGE_SIZE / 2) / IMAGE_SIZE * 2)
    img = (img - 0.5) * p["contrast"] + 0.5
    padded = np.pad(img, ((0, 0), (1, 1), (1, 1)), mode="edge")
    vertical = 0.25 * padded[:, :-2] + 0.5 * padded[:, 1:-1] + 0.25 * padded[:, 2:]
    blurred = 0.25 * vertical[:, :, :-2] + 0.5 * vertical[:, :, 1:-1] + 0.25 * vertical[:, :, 2:]
    img += p["blur"] * (blurred - img)
    img += p["noise"] * noise
    return np.clip(img, 0.0, 1.0), mask


def generate(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Draw n synthetic 48x48 gray faces: images uint8 (n,48,48), labels int64 (n,), masks bool (n,48,48)."""
    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.arange(n) % NUM_CLASSES).astype(np.int64)  # balanced, shuffled
    params = _draw_params(labels, rng)
    images = np.empty((n, IMAGE_SIZE, IMAGE_SIZE), dtype=np.uint8)
    masks = np.empty((n, IMAGE_SIZE, IMAGE_SIZE), dtype=bool)
    for start in range(0, n, CHUNK):
        chunk = {k: v[start:start + CHUNK] for k, v in params.items()}
        noise = rng.standard_normal((len(chunk["skin"]), IMAGE_SIZE, IMAGE_SIZE), dtype=np.float32)
        img, mask = _render(chunk, noise)
        images[start:start + CHUNK] = np.rint(img * 255.0).astype(np.uint8)
        masks[start:start + CHUNK] = mask
    return images, labels, masks
