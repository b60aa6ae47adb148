"""The reference code's MNIST and CIFAR-10 networks with DoReFa members (preset ``paper``).

Transcribed from github sancharisen/EMPIR ``cleverhans_tutorials/tutorial_models.py``
(``make_ensemble_three_cnn``, ``make_ensemble_three_cifar_cnn``): every low-precision conv
quantizes its input (the image included) with ``quantizeAct``; the features entering the
full-precision fully connected layers are neither quantized nor clipped; no biases.
TensorFlow's SAME padding of these convs is symmetric (3 px for the 8x8/2 conv on 28 px,
2 px for the 5x5/1 convs); the CIFAR-10 pools are VALID. Initialisation is PyTorch's
default, not the reference's normalised truncated normal.
"""
from __future__ import annotations

from torch import nn

from edgempir.members import MemberSpec
from edgempir.models import dorefa as D
from edgempir.models.paper import MnistLayout


def _value(x):
    return getattr(x, "value", x)


class ReferenceMnistNet(MnistLayout):
    """conv 8x8x64 /2 SAME, ReLU, conv 6x6x128 /2 VALID, ReLU, conv 5x5x128 VALID, ReLU,
    fc 10 (full precision). Low-bit members: quantizeAct before each conv."""

    input_quant = staticmethod(D.input_quant)
    conv = staticmethod(D.conv)
    act = staticmethod(D.relu_then_quant)

    @staticmethod
    def last_act(spec: MemberSpec) -> nn.Module:
        return nn.ReLU()  # into the classifier: not quantized, not clipped

    def forward(self, x):
        x = self.relu1(self.conv1(self.quant_input(x)))
        x = self.relu2(self.conv2(x))
        x = self.relu3(_value(self.conv3(x)))
        return self.fc(x.flatten(1))


class ReferenceCifarNet(nn.Module):
    """conv 5x5x32 SAME, maxpool 3/2 VALID, ReLU, conv 5x5x32 SAME, ReLU, avgpool 3/2 VALID,
    conv 5x5x64 SAME, ReLU, avgpool 3/2 VALID, fc 576->64, fc 64->10 (both full precision,
    no ReLU between them). 32 px -> 15 -> 7 -> 3."""

    def __init__(self, spec: MemberSpec, in_channels: int = 3, num_classes: int = 10,
                 image_size: int = 32):
        super().__init__()
        self.spec = spec
        self.quant_input = D.input_quant(spec)
        self.conv1 = D.conv(spec, in_channels, 32, 5, padding=2)
        self.pool1 = nn.MaxPool2d(3, 2)
        self.relu1 = D.relu_then_quant(spec)
        self.conv2 = D.conv(spec, 32, 32, 5, padding=2)
        self.relu2 = nn.ReLU()
        self.pool2 = nn.AvgPool2d(3, 2)
        self.quant3 = D.requant(spec)
        self.conv3 = D.conv(spec, 32, 64, 5, padding=2)
        self.relu3 = nn.ReLU()
        self.pool3 = nn.AvgPool2d(3, 2)
        side = image_size
        for _ in range(3):
            side = (side - 3) // 2 + 1
        if side < 1:
            raise ValueError(f"ReferenceCifarNet needs images of at least 15 px, got {image_size}")
        self.fc1 = nn.Linear(64 * side * side, 64, bias=False)
        self.fc2 = nn.Linear(64, num_classes, bias=False)

    def forward(self, x):
        x = self.pool1(_value(self.conv1(self.quant_input(x))))
        x = self.relu2(_value(self.conv2(self.relu1(x))))
        x = self.quant3(self.pool2(x))
        x = self.pool3(self.relu3(_value(self.conv3(x))))
        return self.fc2(self.fc1(x.flatten(1)))
