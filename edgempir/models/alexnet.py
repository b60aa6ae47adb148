"""AlexNet with BatchNorm: the paper's ImageNet network (EMPIR-REFERENCE.md; members w2a2 /
w4a4 / fp32 under preset paper for ``--dataset folder``).

torchvision's AlexNet layout (conv 11x11/4 64, maxpool 3/2, conv 5x5 192, maxpool, conv 3x3
384, 256, 256, maxpool, pool to at most 6x6, fc 4096, fc 4096, fc classes) with a BatchNorm
after every convolution and no dropout (BatchNorm and the quantizers regularise, as in
DoReFa-Net's AlexNet). The hidden fully connected layers are quantized, the classifier stays
full precision (paper). ``width`` scales every channel count and the fc width (tests use
``alexnet:0.0625``).

Where the quantizers sit, by design, so that export keeps every layer an integer kernel:

- each convolution is followed by its BatchNorm, which export folds into the integer
  convolution's rescale (targets/host/conv_integer.py); nothing is folded into the
  quantized weights, so the exported integers are the ones that were evaluated;
- the max pools come *before* the activation quantizer: ``quant(relu(maxpool(y)))`` equals
  torchvision's ``maxpool(quant(relu(y)))`` exactly (max commutes with any non-decreasing
  function), and the next convolution then reads its quantizer directly;
- the last feature map is pooled and flattened before fc1's input quantizer (ONNX Runtime
  does not fuse ``DequantizeLinear -> Flatten -> MatMul``);
- torchvision's adaptive 6x6 average pool becomes a fixed average pool chosen from the
  image size (kernel = stride = ceil(side / 6)), which exports as AveragePool for every
  size: 224 px gives 6x6 (no pool), 64 px (the smallest useful size, 63) gives 1x1.
"""
from __future__ import annotations

import math

from torch import nn

from edgempir.members import MemberSpec
from edgempir.models import quant as Q
from edgempir.models.families import DOREFA, EDGE, Family

CHANNELS = (64, 192, 384, 256, 256)
FC_WIDTH = 4096
POOLED_SIDE = 6  # torchvision's adaptive pool output


def conv_side(side: int, k: int, stride: int = 1, padding: int = 0) -> int:
    return (side + 2 * padding - k) // stride + 1


def feature_side(image_size: int) -> int:
    """Side of conv5's pooled output (before the average pool); < 1: image too small."""
    side = conv_side(image_size, 11, 4, 2)
    for _ in range(2):
        side = conv_side(side, 3, 2)          # maxpool 3/2 after conv1, conv2
    if side < 3:
        return 0
    return conv_side(side, 3, 2)              # convs 3-5 keep the side; maxpool after conv5


def scaled(n: int, width: float) -> int:
    return max(1, round(n * width))


class AlexNet(nn.Module):
    """AlexNet-BN with the edge quantizers (models/quant.py)."""

    family: Family = EDGE

    def __init__(self, spec: MemberSpec, in_channels: int = 3, num_classes: int = 1000,
                 image_size: int = 224, width: float = 1.0):
        super().__init__()
        side = feature_side(image_size)
        if side < 1:
            raise ValueError(f"AlexNet needs images of at least 63 px, got {image_size}")
        F, c, fc = self.family, [scaled(n, width) for n in CHANNELS], scaled(FC_WIDTH, width)
        self.spec = spec
        self.quant_input = F.input_quant(spec)
        self.conv1, self.bn1 = F.conv(spec, in_channels, c[0], 11, 4, 2), nn.BatchNorm2d(c[0])
        self.conv2, self.bn2 = F.conv(spec, c[0], c[1], 5, 1, 2), nn.BatchNorm2d(c[1])
        self.conv3, self.bn3 = F.conv(spec, c[1], c[2], 3, 1, 1), nn.BatchNorm2d(c[2])
        self.conv4, self.bn4 = F.conv(spec, c[2], c[3], 3, 1, 1), nn.BatchNorm2d(c[3])
        self.conv5, self.bn5 = F.conv(spec, c[3], c[4], 3, 1, 1), nn.BatchNorm2d(c[4])
        self.maxpool = nn.MaxPool2d(3, 2)
        self.act1, self.act2, self.act3, self.act4 = (F.act(spec) for _ in range(4))
        self.relu5 = nn.ReLU()
        k = math.ceil(side / POOLED_SIDE)
        self.avgpool = nn.AvgPool2d(k, k) if k > 1 else nn.Identity()
        pooled = side // k
        self.quant_fc = F.requant(spec)
        self.fc1 = F.linear(spec, c[4] * pooled * pooled, fc)
        self.act6 = F.act(spec)
        self.fc2 = F.linear(spec, fc, fc)
        self.act7 = F.act(spec)
        self.fc3 = nn.Linear(fc, num_classes)  # full precision (paper)

    def forward(self, x):
        v = Q.value
        x = self.quant_input(x)
        x = self.act1(self.maxpool(self.bn1(v(self.conv1(x)))))
        x = self.act2(self.maxpool(self.bn2(v(self.conv2(x)))))
        x = self.act3(self.bn3(v(self.conv3(x))))
        x = self.act4(self.bn4(v(self.conv4(x))))
        x = self.maxpool(self.relu5(self.bn5(v(self.conv5(x)))))
        x = self.quant_fc(self.avgpool(x).flatten(1))
        x = self.act7(self.fc2(self.act6(self.fc1(x))))
        return self.fc3(v(x))


class DoReFaAlexNet(AlexNet):
    """The same network with the EMPIR reference's DoReFa quantizers (preset paper)."""

    family = DOREFA
