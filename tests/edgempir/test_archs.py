"""The bigger architectures (alexnet, resnet18: BatchNorm folded into the integer
convolutions at export) and the CIFAR-10 net: each trains one epoch on a tiny generated image
folder, and every member exports with ONNX Runtime running each low-bit conv/linear layer as
an integer kernel and agreeing with PyTorch on every top-1 decision."""
import numpy as np
import pytest
import testkit as H

from edgempir.errors import SpecError

FLOAT_CONVS = ("Conv", "FusedConv", "NchwcConv")


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """2 classes x 6 train / 3 val PNGs of 64 px; one colour per class plus noise."""
    return H.colour_folder(tmp_path_factory.mktemp("archs"), {"train": 6, "val": 3},
                           ((200, 40, 40), (40, 40, 200)), (64, 64), noise=30, seed=0)


def train_run(folder, tmp_path, arch, members, image_size, preset=None):
    from edgempir.members import PRESET_QUANTIZER, parse_members
    from edgempir.train import TrainConfig, train

    out = tmp_path / "run"
    cfg = TrainConfig(out=str(out), dataset="folder", data_dir=str(folder), arch=arch,
                      members=parse_members(members), epochs=1, batch_size=4, threads=1,
                      image_size=image_size, workers=0, preset=preset,
                      quantizer=PRESET_QUANTIZER[preset or "edge"])
    train(cfg, progress=False, echo=lambda s: None)
    return out


def export_and_check(run, folder, tmp_path) -> list[dict]:
    """Each member through the host's export: integer kernels for every quantized layer
    (the export's own check), and ORT vs PyTorch top-1 on the test images + noise."""
    import onnxruntime as ort

    from edgempir.data import load_dataset, to_float
    from edgempir.rundir import load_run, read_manifest
    from edgempir.targets.host import onnx_export as OX

    ens, ds = load_run(run), read_manifest(run)["dataset"]
    data = load_dataset(ds["name"], folder)
    x = to_float(data.x_test[np.arange(len(data.y_test))])
    x = np.concatenate([x, np.random.default_rng(1).uniform(0, 1, x.shape)]).astype(np.float32)
    rows = []
    for i, (model, spec) in enumerate(zip(ens.members, ens.specs)):
        path = tmp_path / f"{i}.onnx"
        OX.export_member(model, path, tuple(ds["input_shape"]))
        layers, counts = OX.expected_layers(model), OX.kernel_counts(path)
        OX.check_integer_kernels(counts, layers, OX.INTEGER_OPS, f"member {i}")
        ref = OX.torch_member_logits([model], x)[0]
        out = ort.InferenceSession(str(path)).run(None, {"input": x})[0]
        rows.append({"spec": spec.name, "layers": layers, "counts": counts,
                     "integer": sum(counts.get(op, 0) for op in OX.INTEGER_OPS),
                     "agreement": float((ref.argmax(1) == out.argmax(1)).mean()),
                     "max_diff": float(np.abs(ref - out).max())})
    return rows


def assert_integer_and_agreeing(rows, quantized: int):
    for r in rows:
        assert r["agreement"] == 1.0, r
        assert not any(r["counts"].get(op) for op in FLOAT_CONVS if r["spec"] != "fp32"), r
        if r["spec"] == "fp32":
            assert r["layers"]["quantized"] == 0 and "BatchNormalization" not in r["counts"]
        else:
            assert r["layers"]["quantized"] == r["integer"] == quantized, r


def test_cifar_arch_on_three_channels_exports_every_low_bit_layer_as_integer(folder, tmp_path):
    """The known bug: fc1 read DequantizeLinear -> Flatten -> MatMul and ran in float (3 of
    4 layers integer); now the flatten comes before fc1's quantizer."""
    run = train_run(folder, tmp_path, "cifar", "w4a2,fp32", 32)
    rows = export_and_check(run, folder, tmp_path)
    assert_integer_and_agreeing(rows, quantized=4)
    assert rows[0]["counts"].get("QLinearMatMul") == 1


def test_alexnet_exports_with_batchnorm_folded_into_integer_convs(folder, tmp_path):
    run = train_run(folder, tmp_path, "alexnet:0.0625", "w2a2,fp32", 64)
    rows = export_and_check(run, folder, tmp_path)
    assert_integer_and_agreeing(rows, quantized=7)   # 5 convs, 2 hidden fc
    assert rows[0]["counts"].get("ConvInteger") == 5


def test_alexnet_under_preset_paper_uses_dorefa_members(folder, tmp_path):
    from edgempir.members import preset
    from edgempir.models import default_arch

    assert [s.name for s in preset("paper", "folder")] == ["w2a2", "w4a4", "fp32"]
    assert default_arch("folder", "paper") == "alexnet"
    run = train_run(folder, tmp_path, "alexnet:0.0625", "w4a4,fp32", 64, preset="paper")
    assert_integer_and_agreeing(export_and_check(run, folder, tmp_path), quantized=7)


def test_resnet18_exports_with_batchnorm_folded_into_integer_convs(folder, tmp_path):
    run = train_run(folder, tmp_path, "resnet18:0.125", "w2a4,fp32", 64)
    rows = export_and_check(run, folder, tmp_path)
    assert_integer_and_agreeing(rows, quantized=20)  # stem, 16 block convs, 3 shortcuts


@pytest.mark.parametrize("arch, size, message", [
    ("alexnet", 48, "at least 63 px"),
    ("resnet18", 32, "at least 33 px"),
    ("resnet8:0.5", 32, "takes no width multiplier"),
    ("alexnet:0", 64, "width multiplier must be"),
    ("alexnet:wide", 64, "width multiplier must be"),
    ("vgg", 64, "unknown architecture"),
])
def test_bad_architectures_are_one_line_errors(arch, size, message):
    from edgempir.members import parse_spec
    from edgempir.models import build_model

    with pytest.raises(SpecError, match=message):
        build_model(arch, parse_spec("w2a2"), (3, size, size), 10)
