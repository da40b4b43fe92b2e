import pytest
import torch

from genrep.core.errors import UserError
from genrep.rae.dit import (
    DIT_PRESETS,
    Block,
    DiT,
    apply_rope,
    dit_config,
    grid_angles,
    rope_2d_angles,
    rope_table,
)
from genrep.rae.vit_parts import num_params


def inputs(cfg, b=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, cfg.in_channels, cfg.grid, cfg.grid, generator=g)
    t = torch.rand(b, generator=g)
    y = torch.randint(0, cfg.num_classes, (b,), generator=g)
    return x, t, y


def perturbed(cfg, seed=0) -> DiT:
    """A model moved away from its zero init, so that outputs depend on the inputs."""
    torch.manual_seed(seed)
    model = DiT(cfg)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model.eval()


@pytest.mark.parametrize("name", ["dit-tiny", "ditdh-tiny"])
@pytest.mark.parametrize("channels, grid, patch", [(32, 4, 1), (8, 2, 1), (32, 4, 2)])
def test_output_shape_equals_input_shape(name, channels, grid, patch):
    cfg = dit_config(name, in_channels=channels, grid=grid, num_classes=10, patch=patch)
    model = perturbed(cfg)
    x, t, y = inputs(cfg)
    out = model(x, t, y)
    assert out.shape == x.shape
    assert torch.isfinite(out).all() and out.abs().sum() > 0


def test_learn_sigma_still_returns_the_velocity_channels():
    cfg = dit_config("dit-tiny", in_channels=8, grid=2, num_classes=10, learn_sigma=True)
    model = perturbed(cfg)
    x, t, y = inputs(cfg)
    assert model.final_layer.linear.out_features == 16
    assert model(x, t, y).shape == x.shape


def test_patchify_round_trips():
    cfg = dit_config("dit-tiny", in_channels=8, grid=4, num_classes=10, patch=2)
    model = DiT(cfg)
    x = torch.randn(2, 8, 4, 4)
    tokens = model.patchify(x)
    assert tokens.shape == (2, 4, 2 * 2 * 8)
    assert torch.equal(model.unpatchify(tokens), x)
    assert torch.equal(tokens[0, 1].view(2, 2, 8)[1, 0], x[0, :, 1, 2])  # token (0, 1), pixel (1, 0)


@pytest.mark.parametrize("name", ["dit-tiny", "ditdh-tiny"])
def test_adaln_zero_every_block_is_the_identity_and_the_model_outputs_zeros_at_init(name):
    cfg = dit_config(name, in_channels=32, grid=4, num_classes=10)
    model = DiT(cfg).train()
    blocks = [(model.blocks, model.rope, cfg.width)]
    if cfg.has_head:
        blocks.append((model.head_blocks, model.head_rope, cfg.head_width))
    for stack, angles, width in blocks:
        for block in stack:
            x = torch.randn(2, cfg.tokens, width)
            for c in (torch.randn(2, width), torch.randn(2, cfg.tokens, width)):  # per sample, per token
                assert torch.equal(block(x, c, angles), x)
    x, t, y = inputs(cfg)
    assert torch.equal(model(x, t, y), torch.zeros_like(x))


def test_block_stops_being_the_identity_once_its_modulation_is_trained():
    block = Block(64, 4, 4.0, qk_norm=True)
    torch.nn.init.normal_(block.adaLN[-1].weight, std=0.1)
    x = torch.randn(2, 4, 64)
    assert not torch.allclose(block(x, torch.randn(2, 64), rope_table(grid_angles(2, 16))), x)


@pytest.mark.parametrize("name", ["dit-tiny", "ditdh-tiny"])
def test_label_dropout_one_in_training_equals_the_null_class(name):
    cfg = dit_config(name, in_channels=8, grid=2, num_classes=10, class_dropout=1.0)
    model = perturbed(cfg)
    x, t, y = inputs(cfg)
    null = torch.full_like(y, cfg.num_classes)
    uncond = model.eval()(x, t, null)
    cond = model(x, t, y)
    assert not torch.allclose(cond, uncond)  # eval mode: labels are never dropped
    assert torch.equal(model.train()(x, t, y), uncond)  # train mode, p = 1: every label dropped
    assert torch.equal(model.eval()(x, t, y), cond)


def test_label_dropout_is_reproducible_with_a_generator():
    cfg = dit_config("dit-tiny", in_channels=8, grid=2, num_classes=10, class_dropout=0.5)
    model = perturbed(cfg).train()
    y = torch.arange(64) % 10
    masks = [model.y_embed.drop(y, torch.Generator().manual_seed(s)) == 10 for s in (7, 7, 8)]
    assert torch.equal(masks[0], masks[1])
    assert not torch.equal(masks[0], masks[2])
    assert 10 < masks[0].sum() < 54  # about half dropped
    x, t, _ = inputs(cfg, b=8)
    a = model(x, t, y[:8], generator=torch.Generator().manual_seed(3))
    b = model(x, t, y[:8], generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, b)


@pytest.mark.parametrize("name", ["dit-tiny", "ditdh-tiny"])
def test_cfg_with_scale_one_is_the_conditional_prediction(name):
    cfg = dit_config(name, in_channels=8, grid=2, num_classes=10)
    model = perturbed(cfg)
    x, t, y = inputs(cfg)
    cond, uncond = model(x, t, y), model(x, t, torch.full_like(y, 10))
    torch.testing.assert_close(model.forward_with_cfg(x, t, y, 1.0), cond, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(model.forward_with_cfg(x, t, y, 0.0), uncond, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(model.forward_with_cfg(x, t, y, 3.0), uncond + 3 * (cond - uncond), rtol=1e-4, atol=1e-4)


def test_rope_preserves_norms_and_scores_depend_only_on_relative_position():
    torch.manual_seed(0)
    head_dim = 32
    q, k = torch.randn(head_dim, dtype=torch.float64), torch.randn(head_dim, dtype=torch.float64)

    def rotate(v, r, c):
        angles = rope_2d_angles(torch.tensor([r]), torch.tensor([c]), head_dim).double()
        return apply_rope(v[None], rope_table(angles))[0]

    assert torch.allclose(rotate(q, 3, 5).norm(), q.norm())
    score = rotate(q, 1, 2) @ rotate(k, 4, 0)
    for dr, dc in [(0, 0), (2, 3), (-1, 7), (5, -2)]:
        assert torch.allclose(rotate(q, 1 + dr, 2 + dc) @ rotate(k, 4 + dr, 0 + dc), score, atol=1e-4)
    assert not torch.allclose(rotate(q, 1, 2) @ rotate(k, 4, 1), score, atol=1e-4)  # columns matter
    assert not torch.allclose(rotate(q, 1, 2) @ rotate(k, 3, 0), score, atol=1e-4)  # rows matter
    assert torch.equal(rotate(q, 0, 0), q)


def test_rope_grid_is_row_major():
    angles = grid_angles(3, 16)
    expected = rope_2d_angles(torch.tensor([1]), torch.tensor([2]), 16)
    assert torch.equal(angles[1 * 3 + 2], expected[0])


def test_paper_sizes_and_ditdh_xl_parameter_count():
    cfg = dit_config("ditdh-XL", in_channels=768, grid=16, num_classes=1000)
    with torch.device("meta"):
        model = DiT(cfg)
    assert num_params(model) == pytest.approx(839e6, rel=0.05)  # paper: 839M (this module: 838.0M)

    def dims(c):
        return (c.width, c.depth, c.heads, c.head_width, c.head_depth, c.head_heads)

    assert dims(dit_config("ditdh-S", in_channels=768, grid=16, num_classes=1000)) == (384, 12, 6, 2048, 2, 16)
    assert dims(cfg) == (1152, 28, 16, 2048, 2, 16)
    sizes = {n: (DIT_PRESETS[n]["width"], DIT_PRESETS[n]["depth"]) for n in ("dit-S", "dit-B", "dit-L", "dit-XL")}
    assert sizes == {"dit-S": (384, 12), "dit-B": (768, 12), "dit-L": (1024, 24), "dit-XL": (1152, 28)}
    assert not dit_config("dit-XL", 768, 16, 1000).has_head
    assert cfg.patch == 1 and cfg.tokens == 256  # patch 1 on the 16 x 16 latent grid


@pytest.mark.parametrize("name, patch", [("dit-tiny", 1), ("ditdh-tiny", 1), ("ditdh-tiny", 2)])
def test_flops_match_a_count_of_every_linear_layer_call_plus_attention_scores(name, patch):
    cfg = dit_config(name, in_channels=32, grid=4, num_classes=10, patch=patch)
    model = DiT(cfg).eval()
    counted = []

    def hook(module, args, _out):
        counted.append(2 * module.in_features * module.out_features * args[0].numel() // module.in_features)

    def conv_hook(module, _args, out):  # patch embeddings: a kernel-sized matmul per output token
        k = module.in_channels * module.kernel_size[0] * module.kernel_size[1]
        counted.append(2 * k * out.numel())

    for m in model.modules():
        if isinstance(m, torch.nn.Linear):
            m.register_forward_hook(hook)
        elif isinstance(m, torch.nn.Conv2d):
            m.register_forward_hook(conv_hook)
    b = 2
    model(*inputs(cfg, b=b))
    n = cfg.tokens
    scores = 2 * 2 * n * n * (cfg.depth * cfg.width + cfg.head_depth * cfg.head_width)  # q k^T and attn v
    assert model.flops_per_sample() == sum(counted) / b + scores


def test_unknown_preset_and_field_are_user_errors():
    with pytest.raises(UserError, match="dit-tiny"):
        dit_config("dit-huge", in_channels=8, grid=2, num_classes=10)
    with pytest.raises(UserError, match="widht"):
        dit_config("dit-tiny", in_channels=8, grid=2, num_classes=10, widht=3)
    with pytest.raises(UserError, match="patch"):
        dit_config("dit-tiny", in_channels=8, grid=3, num_classes=10, patch=2)
