"""CycleGAN generator, PatchGAN discriminator, image pool and losses: reference parameter counts and
state-dict names, shapes, the pool's swap rule and resumption, and the loss terms against values
worked out by hand. Tiny nets (width 8, 64 px, batch 2) on CPU; reference-size nets on meta."""

from __future__ import annotations


import pytest
import torch

from gantune.errors import GantuneError
from losses.cyclegan import ImagePool, cyclegan_d_loss, cyclegan_g_losses
from models.cyclegan import PatchGANDiscriminator, ResnetGenerator
from net_helpers import n_params, one_thread  # noqa: F401  (one_thread: autouse fixture)


# Counted from junyanz/pytorch-CycleGAN-and-pix2pix: define_G(3, 3, 64, "resnet_9blocks", "instance",
# use_dropout=False) and define_D(3, 64, "basic", norm="instance"), built on meta.
@pytest.mark.parametrize(
    "build, target, exact",
    [(ResnetGenerator, 11.38e6, 11_378_179), (PatchGANDiscriminator, 2.77e6, 2_764_737)],
)
def test_parameter_counts_match_reference(build, target: float, exact: int) -> None:
    with torch.device("meta"):
        net = build()
    assert abs(n_params(net) - target) / target < 0.01
    assert n_params(net) == exact


def test_reference_layout_and_names() -> None:
    """The reference's Sequential indices, so its released checkpoints load as they are."""
    with torch.device("meta"):
        G, D = ResnetGenerator(), PatchGANDiscriminator()
        x = torch.empty(1, 3, 256, 256)
        assert G(x).shape == (1, 3, 256, 256)
        assert D(x).shape == (1, 1, 30, 30)  # 70x70 receptive fields on a 256 px image
    g_keys = [k for k in G.state_dict() if "conv_block" not in k]
    assert g_keys == [f"model.{i}.{p}" for i in (1, 4, 7, 19, 22, 26) for p in ("weight", "bias")]
    assert [f"model.{i}.conv_block.{j}.weight" for i in (10, 18) for j in (1, 5)] == [
        k for k in G.state_dict() if k.endswith("weight") and k.split(".")[1] in ("10", "18")
    ]
    assert list(D.state_dict()) == [f"model.{i}.{p}" for i in (0, 2, 5, 8, 11) for p in ("weight", "bias")]
    assert [m.out_channels for m in D.model if isinstance(m, torch.nn.Conv2d)] == [64, 128, 256, 512, 1]
    assert [m.stride[0] for m in D.model if isinstance(m, torch.nn.Conv2d)] == [2, 2, 2, 1, 1]
    assert not any(isinstance(m, torch.nn.Dropout) for m in G.modules())


def test_init_is_normal_002(seed: int) -> None:
    G = ResnetGenerator(ngf=8, n_blocks=2)
    weights = torch.cat([m.weight.flatten() for m in G.modules() if isinstance(m, torch.nn.Conv2d)])
    assert abs(weights.std().item() - 0.02) < 0.002 and abs(weights.mean().item()) < 0.002
    assert all(m.bias is None or not m.bias.any() for m in G.modules() if hasattr(m, "bias"))


def test_tiny_forward_backward(seed: int) -> None:
    G, D = ResnetGenerator(ngf=8, n_blocks=2), PatchGANDiscriminator(ndf=8)
    x = torch.rand(2, 3, 64, 64) * 2 - 1
    fake = G(x)
    assert fake.shape == (2, 3, 64, 64) and fake.abs().max() <= 1
    pred = D(fake)
    assert pred.shape == (2, 1, 6, 6)  # 64 -> 32 -> 16 -> 8, then 7 and 6 (stride 1, padding 1)
    pred.square().mean().backward()
    for net in (G, D):
        for name, p in net.named_parameters():
            assert p.grad is not None and torch.isfinite(p.grad).all(), name
    batch_norm = ResnetGenerator(ngf=8, n_blocks=1, norm="batch", use_dropout=True)
    assert batch_norm.model[1].bias is None  # bias-free convs before batch norm, as the reference
    assert any(isinstance(m, torch.nn.Dropout) for m in batch_norm.modules())
    assert batch_norm(x).shape == (2, 3, 64, 64)


def _images(n: int, start: int = 0) -> torch.Tensor:
    """Image i is filled with the value i, so pooled images can be told apart."""
    return torch.arange(start, start + n, dtype=torch.float32)[:, None, None, None].expand(n, 3, 2, 2).clone()


def test_image_pool_fills_then_swaps_half() -> None:
    pool = ImagePool(pool_size=4, generator=0)
    first = _images(4)
    assert torch.equal(pool.query(first), first) and len(pool) == 4  # filling: new images come back
    values = pool.query(_images(200, start=100))[:, 0, 0, 0].tolist()
    # Each image comes back itself with probability 0.5, else a stored, older one.
    assert all(v <= 100 + i for i, v in enumerate(values))
    older = [v for i, v in enumerate(values) if v != 100 + i]
    assert 70 < len(older) < 130
    assert len(set(older)) == len(older)  # a stored image leaves the pool when it is returned
    assert {0.0, 1.0, 2.0, 3.0} & set(older)
    assert len(pool) == 4


def test_image_pool_follows_the_swap_rule_by_hand() -> None:
    """Replay the rule with the same generator draws: uniform > 0.5 swaps with slot randint."""
    pool = ImagePool(pool_size=2, generator=torch.Generator().manual_seed(7))
    g = torch.Generator().manual_seed(7)
    stored = [0.0, 1.0]
    pool.query(_images(2))
    expected = []
    for value in range(10, 30):
        if torch.rand((), generator=g) > 0.5:
            slot = int(torch.randint(2, (), generator=g))
            expected.append(stored[slot])
            stored[slot] = float(value)
        else:
            expected.append(float(value))
    got = [pool.query(_images(1, start=v))[0, 0, 0, 0].item() for v in range(10, 30)]
    assert got == expected and any(e != v for e, v in zip(expected, range(10, 30)))
    assert sorted(t[0, 0, 0].item() for t in pool.images) == sorted(stored)


def test_image_pool_deterministic_detached_and_resumable() -> None:
    images = torch.randn(30, 3, 4, 4, requires_grad=True)
    a, b = ImagePool(5, generator=3), ImagePool(5, generator=3)
    outs_a = [a.query(images[i : i + 3]) for i in range(0, 15, 3)]
    outs_b = [b.query(images[i : i + 3]) for i in range(0, 15, 3)]
    assert all(torch.equal(x, y) and not x.requires_grad for x, y in zip(outs_a, outs_b))
    resumed = ImagePool(5, generator=99)
    resumed.load_state_dict(a.state_dict())
    for i in range(15, 30, 3):
        assert torch.equal(resumed.query(images[i : i + 3]), a.query(images[i : i + 3]))
    off = ImagePool(0)
    assert torch.equal(off.query(images[:3]), images[:3]) and len(off) == 0
    with pytest.raises(GantuneError, match="^pool_size: "):
        ImagePool(4).load_state_dict(a.state_dict())


def test_d_loss_by_hand() -> None:
    pred_real = torch.tensor([[0.5, 1.5]])
    pred_fake = torch.tensor([[0.2, -0.4]])
    # 0.5 * (mean(0.25, 0.25) + mean(0.04, 0.16)) = 0.5 * (0.25 + 0.1)
    assert torch.allclose(cyclegan_d_loss(pred_real, pred_fake), torch.tensor(0.175))


def test_g_losses_by_hand() -> None:
    real_A, real_B = torch.zeros(1, 1, 1, 2), torch.ones(1, 1, 1, 2)
    terms = cyclegan_g_losses(
        pred_fake_B=torch.tensor([[0.5, 1.5]]),  # mse to 1: 0.25
        pred_fake_A=torch.tensor([[0.0, 1.0]]),  # 0.5
        real_A=real_A,
        real_B=real_B,
        rec_A=torch.tensor([[[[0.1, -0.3]]]]),  # L1 0.2, x lambda_A 10
        rec_B=torch.tensor([[[[1.0, 0.6]]]]),  # L1 0.2, x lambda_B 10
        idt_A=torch.tensor([[[[0.0, 1.0]]]]),  # L1 to real_B 0.5, x 10 x 0.5
        idt_B=torch.tensor([[[[0.2, 0.2]]]]),  # L1 to real_A 0.2, x 10 x 0.5
    )
    expected = {"G_A": 0.25, "G_B": 0.5, "cycle_A": 2.0, "cycle_B": 2.0, "idt_A": 2.5, "idt_B": 1.0}
    assert {k: round(v.item(), 6) for k, v in terms.items()} == expected
    no_idt = cyclegan_g_losses(*[torch.zeros(1, 1, 1, 2)] * 6, lambda_identity=0.0)
    assert set(no_idt) == {"G_A", "G_B", "cycle_A", "cycle_B"}
    with pytest.raises(ValueError, match="idt_A and idt_B"):
        cyclegan_g_losses(*[torch.zeros(1, 1, 1, 2)] * 6)


@pytest.mark.parametrize(
    "build, name",
    [
        (lambda: ResnetGenerator(ngf=0), "ngf"),
        (lambda: ResnetGenerator(n_blocks=-1), "n_blocks"),
        (lambda: ResnetGenerator(norm="group"), "norm"),
        (lambda: ResnetGenerator(padding_type="circular"), "padding_type"),
        (lambda: PatchGANDiscriminator(n_layers=0), "n_layers"),
        (lambda: PatchGANDiscriminator(norm="spectral"), "norm"),
        (lambda: ImagePool(-1), "pool_size"),
        (lambda: ImagePool(50, generator="seed"), "generator"),
    ],
)
def test_bad_arguments_raise_gantune_error(build, name: str) -> None:
    with torch.device("meta"), pytest.raises(GantuneError, match=rf"^{name}: "):
        build()
