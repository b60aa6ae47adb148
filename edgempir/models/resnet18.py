"""ResNet-18 (torchvision's layout) as Brevitas quant layers, with BatchNorm.

Stem conv 7x7/2 64, BatchNorm, maxpool 3/2, four stages of two BasicBlocks (64, 128, 256,
512 channels; stride 2 from the second stage on, 1x1 conv + BatchNorm shortcuts where the
shape changes), global average pool, fc (full precision). ``width`` scales the channel
counts (tests use ``resnet18:0.125``).

BatchNorm and the integer kernels, by design plus one export step:

- every convolution's BatchNorm is folded at export into the integer convolution's float
  rescale (targets/host/conv_integer.py), exactly: the trained integer weights are kept;
- each block's sum is re-quantized by its output QuantReLU, which is the next block's input
  quantizer (as in models/resnet.py's ResNet-8);
- the stem's max pool comes before its activation quantizer (``quant(relu(maxpool(y)))``
  equals ``maxpool(quant(relu(y)))`` exactly), so the first block's convolutions read a
  quantizer directly.

Images of at least 33 px: the last stage must keep at least 2x2 positions, or BatchNorm has
one value per channel for a batch of one image and refuses to train.
"""
from __future__ import annotations

from torch import nn

from edgempir.members import MemberSpec
from edgempir.models import quant as Q

WIDTHS = (64, 128, 256, 512)
MIN_IMAGE_SIZE = 33


class BasicBlock(nn.Module):
    def __init__(self, spec: MemberSpec, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = Q.conv(spec, cin, cout, 3, stride=stride, padding=1)
        self.bn1 = nn.BatchNorm2d(cout)
        self.relu1 = Q.relu(spec)
        self.conv2 = Q.conv(spec, cout, cout, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = None
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(Q.conv(spec, cin, cout, 1, stride=stride),
                                          nn.BatchNorm2d(cout))
        self.relu_out = Q.relu(spec)

    def forward(self, x):
        y = self.bn2(Q.value(self.conv2(self.relu1(self.bn1(Q.value(self.conv1(x)))))))
        s = (self.shortcut[1](Q.value(self.shortcut[0](x))) if self.shortcut is not None
             else Q.value(x))
        return self.relu_out(y + s)


class ResNet18(nn.Module):
    def __init__(self, spec: MemberSpec, in_channels: int = 3, num_classes: int = 1000,
                 image_size: int = 224, width: float = 1.0):
        super().__init__()
        if image_size < MIN_IMAGE_SIZE:
            raise ValueError(f"ResNet18 needs images of at least {MIN_IMAGE_SIZE} px, got "
                             f"{image_size}")
        w = [max(1, round(n * width)) for n in WIDTHS]
        self.spec = spec
        self.quant_input = Q.input_quant(spec)
        self.stem = Q.conv(spec, in_channels, w[0], 7, stride=2, padding=3)
        self.stem_bn = nn.BatchNorm2d(w[0])
        self.maxpool = nn.MaxPool2d(3, 2, padding=1)
        self.stem_act = Q.relu(spec)
        stages, cin = [], w[0]
        for i, cout in enumerate(w):
            stride = 1 if i == 0 else 2
            stages.append(nn.Sequential(BasicBlock(spec, cin, cout, stride),
                                        BasicBlock(spec, cout, cout, 1)))
            cin = cout
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(w[3], num_classes)  # full precision

    def forward(self, x):
        x = self.quant_input(x)
        x = self.stem_act(self.maxpool(self.stem_bn(Q.value(self.stem(x)))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(self.pool(Q.value(x)).flatten(1))
