"""Generator and discriminator networks; they know nothing of losses."""
from repro.nets.attention import SelfAttention
from repro.nets.biggan import BigGANGenerator
from repro.nets.cnn import StandardCNNDiscriminator, StandardCNNGenerator
from repro.nets.conditional import (
    AuxiliaryClassifierDiscriminator, LabelPredictingDiscriminator, ProjectionDiscriminator,
)
from repro.nets.dcgan import DCGANDiscriminator, DCGANGenerator
from repro.nets.minibatch import MinibatchDiscriminator
from repro.nets.mlp import MaxoutDiscriminator, MLPDiscriminator, MLPGenerator
from repro.nets.resnet import ResNetDiscriminator, ResNetGenerator
from repro.nets.vbn import VirtualBatchNormGenerator

__all__ = [
    "MLPGenerator",
    "MLPDiscriminator",
    "MaxoutDiscriminator",
    "StandardCNNGenerator",
    "StandardCNNDiscriminator",
    "DCGANGenerator",
    "DCGANDiscriminator",
    "SelfAttention",
    "ResNetGenerator",
    "ResNetDiscriminator",
    "MinibatchDiscriminator",
    "VirtualBatchNormGenerator",
    "BigGANGenerator",
    "ProjectionDiscriminator",
    "LabelPredictingDiscriminator",
    "AuxiliaryClassifierDiscriminator",
]
