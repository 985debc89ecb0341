"""Real data for a trial: built-in 2-D mixtures and images, kept on the training device.

Exact definitions because results are compared with published tables: ring8 and grid25 follow PacGAN;
digits is scikit-learn's bundled 8x8 set scaled to [-1, 1], split once (``digits_split``): GANs train on the
train split, metrics compare against the held-out split. stacked_digits is stacked MNIST (VEEGAN, PacGAN) built
from those digits: three digits a sample, one per channel, 1,000 modes (``stack``). Nothing is downloaded unless
the config says ``download: true``. Folder and torchvision images are decoded once per search into a cached uint8 tensor
file (``$GANTUNE_CACHE_DIR``) and kept as uint8 on the device: a trial neither decodes them again nor holds
them in float32 (4x the memory); batches are converted as they are drawn.
"""

from gantune.data.core import (
    DATASETS,
    Dataset,
    Mixture,
    RealData,
    as_float,
    channels_of,
    check_data,
    data_label,
    data_listing,
    data_notes,
    data_shape,
    dataset,
    decode_ahead,
    is_labelled,
    is_points,
    known_classes,
    listing_change,
    load_data,
    measured_on,
    mixture_means,
    pil_mode,
    stack,
    stack_labels,
    stack_problem,
)

# the built-in datasets register themselves as they are imported: this order is the one their names are listed in
# isort: off
from gantune.data.points import grid25_means, ring8_means
from gantune.data.digits import STACKED_DIGITS, digits_split
from gantune.data.images import IMAGE_SUFFIXES, folder_images, folder_labels, greyscale, listed_once
# isort: on

__all__ = ["DATASETS", "IMAGE_SUFFIXES", "STACKED_DIGITS", "Dataset", "Mixture", "RealData", "as_float", "channels_of",
           "check_data", "data_label", "data_listing", "data_notes", "data_shape", "dataset", "decode_ahead",
           "digits_split", "folder_images", "folder_labels", "greyscale", "grid25_means", "is_labelled", "is_points",
           "known_classes", "listed_once", "listing_change", "load_data", "measured_on", "mixture_means", "pil_mode",
           "ring8_means", "stack", "stack_labels", "stack_problem"]
