import gzip
import os

import numpy as np
import pytest
import torch

from genrep.core import assets
from genrep.core.bundled.data import load_fashion_mnist, read_idx
from genrep.core.bundled.effnet import imagenet_class_names
from genrep.core.errors import AssetError, UserError

CAT_CLASSES = range(281, 286)  # tabby, tiger cat, Persian, Siamese, Egyptian cat


def test_runs_offline():
    assert os.environ["HF_HUB_OFFLINE"] == "1"


def test_every_asset_is_available():
    missing = [r for r in assets.status() if r["status"] != "available"]
    assert not missing, missing


@pytest.fixture(scope="module")
def effnet():
    return assets.load("effnet-lite0")


def _photo(name, size=224):
    img = assets.load("skimage-photos")[name]
    x = torch.from_numpy(img).permute(2, 0, 1)[None].float() / 255.0
    return torch.nn.functional.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)


def test_effnet_is_frozen_and_has_the_documented_shapes(effnet):
    assert not any(p.requires_grad for p in effnet.parameters())
    effnet.train()
    assert not effnet.net.training  # BatchNorm stays in eval mode
    x = torch.rand(2, 3, 224, 224)
    assert effnet.features(x).shape == (2, 1280, 7, 7)
    assert effnet.features(x, upto=effnet.num_blocks).shape == (2, 320, 7, 7)
    assert effnet.features(torch.rand(1, 3, 128, 128)).shape == (1, 1280, 4, 4)
    assert effnet.pooled(x).shape == (2, 1280)
    assert effnet.block_channels()[-1] == 320


def test_effnet_inference_copy_folds_batchnorm_without_changing_the_function(effnet):
    x = torch.rand(3, 3, 96, 96)
    state = {k: v.clone() for k, v in effnet.state_dict().items()}
    grad_x = x.clone().requires_grad_(True)
    reference = effnet.features(grad_x, upto=11)  # a gradient is wanted: the original modules
    reference.sum().backward()
    assert grad_x.grad is not None and grad_x.grad.abs().sum() > 0
    with torch.no_grad():
        folded = effnet.features(x, upto=11)
        pooled = effnet.pooled(x)
    assert folded.is_contiguous()
    torch.testing.assert_close(folded, reference.detach(), rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(pooled, effnet.pooled(x.clone().requires_grad_(True)).detach(), rtol=1e-4, atol=1e-4)
    twin = effnet.inference_net()
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in twin.modules())
    assert effnet.state_dict().keys() == state.keys()  # the module itself is untouched
    assert all(torch.equal(v, state[k]) for k, v in effnet.state_dict().items())


def test_effnet_inference_copy_follows_new_weights(effnet):
    import copy

    other = copy.deepcopy(effnet)
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        before = other.features(x, upto=4)
        state = other.state_dict()
        state["net._conv_stem.weight"] = state["net._conv_stem.weight"] * 0.5
        other.load_state_dict(state)
        after = other.features(x, upto=4)
    assert not torch.allclose(before, after)  # the folded copy was rebuilt from the loaded weights
    unfolded = other.features(x.clone().requires_grad_(True), upto=4).detach()  # with grad: the original modules
    torch.testing.assert_close(after, unfolded, rtol=1e-4, atol=1e-4)


def test_effnet_puts_the_cat_photo_in_a_cat_class(effnet):
    with torch.no_grad():
        logits = effnet(_photo("chelsea"))
    assert int(logits.argmax()) in CAT_CLASSES
    assert len(imagenet_class_names()) == 1000


def test_effnet_weights_are_real_not_random(effnet):
    with torch.no_grad():
        p = effnet(_photo("coffee")).softmax(-1)
    assert float(p.max()) > 0.3  # a random network is near-uniform over 1000 classes


def test_fashion_mnist_shapes_and_balance():
    train, test = load_fashion_mnist("train"), load_fashion_mnist("test")
    assert train.images.shape == (60000, 28, 28) and train.images.dtype == np.uint8
    assert test.images.shape == (10000, 28, 28)
    assert np.array_equal(np.bincount(test.labels), np.full(10, 1000))
    assert train.class_names[9] == "Ankle boot"
    with pytest.raises(UserError, match="unknown split 'val'"):
        load_fashion_mnist("val")


def test_fashion_mnist_from_a_user_path(tmp_path, monkeypatch):
    images = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    labels = np.array([1, 7], dtype=np.uint8)
    header = lambda code, shape: bytes([0, 0, 0x08, len(shape)]) + b"".join(s.to_bytes(4, "big") for s in shape)
    (tmp_path / "t10k-images-idx3-ubyte").write_bytes(header(8, images.shape) + images.tobytes())
    with gzip.open(tmp_path / "t10k-labels-idx1-ubyte.gz", "wb") as f:
        f.write(header(8, labels.shape) + labels.tobytes())
    monkeypatch.setenv("GENREP_FASHION_MNIST", str(tmp_path))
    ds = load_fashion_mnist("test")
    assert np.array_equal(ds.images, images) and ds.labels.tolist() == [1, 7]
    with pytest.raises(AssetError, match=f"no train-images-idx3-ubyte / train-labels-idx1-ubyte in {tmp_path}"):
        load_fashion_mnist("train")


def test_idx_reader_rejects_bad_files(tmp_path):
    bad = tmp_path / "bad"
    bad.write_bytes(b"\x01\x02\x03\x04")
    with pytest.raises(UserError, match="bad magic number"):
        read_idx(bad)
    short = tmp_path / "short"
    short.write_bytes(bytes([0, 0, 8, 1]) + (10).to_bytes(4, "big") + b"\x00" * 3)
    with pytest.raises(UserError, match="truncated IDX file"):
        read_idx(short)


def test_hsk_pairs():
    pairs = assets.load("hsk-zh-en")
    assert len(pairs) == 4354
    assert {"id", "zh", "en", "level", "topic"} <= set(pairs[0])
    assert all(p["zh"] and p["en"] for p in pairs)


def test_sample_photos_are_rgb_uint8():
    photos = assets.load("skimage-photos")
    assert "chelsea" in photos
    for img in photos.values():
        assert img.dtype == np.uint8 and img.ndim == 3 and img.shape[2] == 3


def _greedy(tok, model, prompt, n=6):
    ids = tok(prompt, return_tensors="pt")
    with torch.no_grad():
        out = model.generate(**ids, max_new_tokens=n, do_sample=False, pad_token_id=tok.eos_token_id)
    return tok.decode(out[0, ids["input_ids"].shape[1] :], skip_special_tokens=True)


def test_smollm2_continues_a_prompt():
    tok, model = assets.load("smollm2-135m")
    assert sum(p.numel() for p in model.parameters()) == pytest.approx(134.5e6, rel=0.01)
    assert "Paris" in _greedy(tok, model, "The capital of France is")


def test_gemma_loads_and_reads_chinese():
    tok, model = assets.load("gemma3-270m")
    assert type(model).__name__ == "Gemma3ForCausalLM"
    out = _greedy(tok, model, "Chinese: 我喜欢喝茶。\nEnglish: I like", n=4)
    assert "tea" in out


def test_unknown_asset_is_a_one_line_error():
    with pytest.raises(AssetError, match="unknown asset 'dinov2' \\(known: effnet-lite0"):
        assets.load("dinov2")


def test_check_reports_rows():
    rows = assets.check(["hsk-zh-en", "skimage-photos"])
    assert [r["name"] for r in rows] == ["hsk-zh-en", "skimage-photos"] and all(r["ok"] for r in rows)
