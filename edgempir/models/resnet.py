"""A stronger small CIFAR-10 network: ResNet-8 without BatchNorm.

Why no BatchNorm: a BatchNorm between an integer convolution and the next quantizer keeps
ONNX Runtime from fusing the convolution into QLinearConv, and folding it after QAT would
change the quantized weights that were evaluated. Per-channel learned weight scales play
BatchNorm's scaling role; the residual sum is re-quantized by the block's output QuantReLU.
"""
from __future__ import annotations

from torch import nn

from edgempir.members import MemberSpec
from edgempir.models import quant as Q


class BasicBlock(nn.Module):
    def __init__(self, spec: MemberSpec, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = Q.conv(spec, cin, cout, 3, stride=stride, padding=1)
        self.relu1 = Q.relu(spec)
        self.conv2 = Q.conv(spec, cout, cout, 3, padding=1)
        self.shortcut = (Q.conv(spec, cin, cout, 1, stride=stride)
                         if stride != 1 or cin != cout else None)
        self.relu_out = Q.relu(spec)

    def forward(self, x):
        y = Q.value(self.conv2(self.relu1(self.conv1(x))))
        s = Q.value(self.shortcut(x)) if self.shortcut is not None else Q.value(x)
        return self.relu_out(y + s)


class ResNet8(nn.Module):
    def __init__(self, spec: MemberSpec, in_channels: int = 3, num_classes: int = 10,
                 image_size: int = 32, width: int = 16):
        super().__init__()
        self.spec = spec
        self.quant_input = Q.input_quant(spec)
        self.stem = Q.conv(spec, in_channels, width, 3, padding=1)
        self.relu = Q.relu(spec)
        self.layer1 = BasicBlock(spec, width, width, 1)
        self.layer2 = BasicBlock(spec, width, 2 * width, 2)
        self.layer3 = BasicBlock(spec, 2 * width, 4 * width, 2)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(4 * width, num_classes)  # full precision

    def forward(self, x):
        x = self.relu(self.stem(self.quant_input(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(self.pool(Q.value(x)).flatten(1))
