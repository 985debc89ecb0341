"""The PyTorch GAN core: networks, normalisation, losses and the training step."""

from gantune.gan.losses import LOSSES, GANLoss
from gantune.gan.nets import build_discriminator, build_generator
from gantune.gan.norms import NORMS
from gantune.gan.progressive import GrowthSchedule  # registers the growing dcgan nets (model.progressive)
from gantune.gan.step import GANTrainer

__all__ = ["LOSSES", "NORMS", "GANLoss", "GANTrainer", "GrowthSchedule", "build_discriminator",
           "build_generator"]
