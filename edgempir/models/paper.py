"""The paper's MNIST and CIFAR-10 networks (EMPIR-REFERENCE.md, "Architectures")."""
from __future__ import annotations

from torch import nn

from edgempir.members import MemberSpec
from edgempir.models import quant as Q


class MnistLayout(nn.Module):
    """The paper's MNIST layers: conv 8x8x64 /2 SAME, conv 6x6x128 /2 VALID, conv 5x5x128
    VALID, each followed by its activation, then fc 10 in full precision; no biases.

    For 28x28 inputs, TensorFlow's SAME padding of the 8x8/2 conv is 3 on each side.
    Subclasses give the quantizer family: ``input_quant(spec)``, ``conv(spec, cin, cout, k,
    stride, padding)``, ``act(spec)`` after the first two convs and ``last_act(spec)``
    before the classifier.
    """

    def __init__(self, spec: MemberSpec, in_channels: int = 1, num_classes: int = 10,
                 image_size: int = 28):
        super().__init__()
        self.spec = spec
        self.quant_input = self.input_quant(spec)
        self.conv1 = self.conv(spec, in_channels, 64, 8, stride=2, padding=3)
        self.relu1 = self.act(spec)
        self.conv2 = self.conv(spec, 64, 128, 6, stride=2)
        self.relu2 = self.act(spec)
        self.conv3 = self.conv(spec, 128, 128, 5)
        self.relu3 = self.last_act(spec)
        s1 = (image_size + 6 - 8) // 2 + 1
        s2 = (s1 - 6) // 2 + 1
        s3 = s2 - 5 + 1
        if s3 < 1:
            raise ValueError(f"{type(self).__name__} needs images of at least 28 px, got "
                             f"{image_size}")
        self.fc = nn.Linear(128 * s3 * s3, num_classes, bias=False)  # full precision


class MnistNet(MnistLayout):
    """The paper's MNIST net with the edge quantizers (``models/quant.py``)."""

    input_quant = staticmethod(Q.input_quant)
    conv = staticmethod(Q.conv)
    act = staticmethod(Q.relu)

    @staticmethod
    def last_act(spec: MemberSpec) -> nn.Module:
        return Q.relu(spec, quant_out=False)

    def forward(self, x):
        x = self.quant_input(x)
        x = self.relu1(self.conv1(x))
        x = self.relu2(self.conv2(x))
        x = self.relu3(self.conv3(x))
        return self.fc(Q.value(x).flatten(1))


class CifarNet(nn.Module):
    """conv 5x5x32, maxpool 3/2, conv 5x5x32, avgpool 3/2, conv 5x5x64, avgpool 3/2,
    fc 64, fc 10 (SAME padding throughout, as in the cuda-convnet layout)."""

    def __init__(self, spec: MemberSpec, in_channels: int = 3, num_classes: int = 10,
                 image_size: int = 32):
        super().__init__()
        self.spec = spec
        self.quant_input = Q.input_quant(spec)
        self.conv1 = Q.conv(spec, in_channels, 32, 5, padding=2)
        self.relu1 = Q.relu(spec)
        self.pool1 = nn.MaxPool2d(3, 2, padding=1)
        self.conv2 = Q.conv(spec, 32, 32, 5, padding=2)
        self.relu2 = Q.relu(spec)
        self.pool2 = nn.AvgPool2d(3, 2, padding=1, count_include_pad=False)
        self.requant2 = Q.requant(spec)
        self.conv3 = Q.conv(spec, 32, 64, 5, padding=2)
        self.relu3 = Q.relu(spec)
        self.pool3 = nn.AvgPool2d(3, 2, padding=1, count_include_pad=False)
        self.requant3 = Q.requant(spec)
        side = image_size
        for _ in range(3):
            side = (side + 2 - 3) // 2 + 1
        self.fc1 = Q.linear(spec, 64 * side * side, 64)
        self.relu4 = Q.relu(spec, quant_out=False)
        self.fc2 = nn.Linear(64, num_classes, bias=False)  # full precision

    def forward(self, x):
        x = self.quant_input(x)
        x = self.pool1(self.relu1(self.conv1(x)))
        x = self.requant2(self.pool2(Q.value(self.relu2(self.conv2(x)))))
        # flatten before the quantizer, not after: ONNX Runtime fuses DequantizeLinear ->
        # MatMul into an integer kernel, but not DequantizeLinear -> Flatten -> MatMul (fc1
        # then ran in float and export refused the member). Same values: the quantizer is
        # per-tensor and elementwise.
        x = self.requant3(self.pool3(Q.value(self.relu3(self.conv3(x)))).flatten(1))
        x = self.relu4(self.fc1(x))
        return self.fc2(Q.value(x))

