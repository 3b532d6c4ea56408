"""What the model learned, as arrays and figures: saliency maps, filter images, history curves.

Each method is a small function that returns numpy arrays (tests check the numbers); each
figure is built by a separate function from those arrays and saved by save_figure (temp file
+ rename). Figures are matplotlib.figure.Figure objects, drawn without pyplot, so nothing here
touches a global backend. Saliency, Grad-CAM++, Score-CAM and activation maximization are
tf-keras-vis'; the model takes raw 0-255 gray pixels, so gradients are with respect to those.

figures: heat maps over faces, gray faces, the history figure (figures are made and saved by
ferkeras.plotting; the confusion-matrix figure is evaluate's); saliency: saliency maps;
filters: activation maximization and top-activating images; workflows (imported on its own):
what the `ferkeras viz` commands and the report call. The package sits above the stages
(train, evaluate, export), as the README's layout tree shows. No TensorFlow is imported until
a method runs.
"""

from ferkeras.evaluate import confusion_figure
from ferkeras.plotting import save_figure
from ferkeras.viz.figures import history_figure
from ferkeras.viz.filters import (
    ALL_FILTERS,
    DEFAULT_TOP_K,
    OBJECTIVES,
    ActivationMaximizationSettings,
    TopActivations,
    conv_layers,
    filter_count,
    filter_responses,
    filters_figure,
    maximize_filters,
    parse_filters,
    response_layer,
    top_activating_figure,
    top_activating_images,
)
from ferkeras.viz.saliency import (
    DEFAULT_METHOD,
    SALIENCY_METHODS,
    cam_layer,
    gradcam_plus_plus,
    saliency_figure,
    saliency_maps,
    scorecam,
    smoothgrad,
    vanilla_saliency,
)

__all__ = ["ALL_FILTERS", "DEFAULT_METHOD", "DEFAULT_TOP_K", "OBJECTIVES",
           "SALIENCY_METHODS", "ActivationMaximizationSettings", "TopActivations", "cam_layer",
           "confusion_figure", "conv_layers", "filter_count", "filter_responses", "filters_figure",
           "gradcam_plus_plus", "history_figure", "maximize_filters", "parse_filters", "response_layer",
           "saliency_figure", "saliency_maps", "save_figure", "scorecam", "smoothgrad",
           "top_activating_figure", "top_activating_images", "vanilla_saliency"]
