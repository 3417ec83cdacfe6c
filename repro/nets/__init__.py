"""Generator and discriminator networks; they know nothing of losses."""
from repro.nets.cnn import StandardCNNDiscriminator, StandardCNNGenerator
from repro.nets.mlp import MaxoutDiscriminator, MLPDiscriminator, MLPGenerator
from repro.nets.resnet import ResNetDiscriminator, ResNetGenerator

__all__ = [
    "MLPGenerator",
    "MLPDiscriminator",
    "MaxoutDiscriminator",
    "StandardCNNGenerator",
    "StandardCNNDiscriminator",
    "ResNetGenerator",
    "ResNetDiscriminator",
]
