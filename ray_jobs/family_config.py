"""The config sections of the generator families: each family reads its own section (named
after it), and the exemplar families (CoCosNet v1/v2, UNITE) share `exemplar`. `SECTION_FAMILIES`
says which families may set which section; config.py refuses a section of another family.
Defaults are the official training's, at the reference configuration each file names.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from gantune.errors import GantuneError

if TYPE_CHECKING:
    from ray_jobs.config import Config

FAMILY_NAMES = (
    "spade", "oasis", "cocosnet", "cocosnet2", "unite", "esrgan", "rdn", "srresnet", "cyclegan", "ugatit", "pdgan",
)
EXEMPLAR_FAMILIES = ("cocosnet", "cocosnet2", "unite")
SR_FAMILIES = ("esrgan", "rdn", "srresnet")
UNPAIRED_FAMILIES = ("cyclegan", "ugatit")
LABEL_FAMILIES = ("spade", "oasis", *EXEMPLAR_FAMILIES)  # label map -> image: data.num_classes
SECTION_FAMILIES: dict[str, tuple[str, ...]] = (
    {name: (name,) for name in FAMILY_NAMES} | {"exemplar": EXEMPLAR_FAMILIES, "sr": SR_FAMILIES}
)


@dataclass(frozen=True)
class SpadeConfig:
    """model.family: spade (GauGAN, Park et al. 2019)."""

    gan_mode: str = "hinge"  # hinge | ls | original (non-saturating)
    lambda_feat: float = 10.0  # discriminator feature matching
    lambda_vgg: float = 10.0  # VGG19 perceptual loss
    num_upsampling_layers: str = "normal"  # normal | more | most
    use_vae: bool = False  # style encoder + KL term
    z_dim: int = 256  # use_vae: style code size
    param_free_norm: str = "batch"  # batch | instance
    lambda_kld: float = 0.05  # use_vae: KL divergence of the style code


@dataclass(frozen=True)
class OasisConfig:
    """model.family: oasis (Schonfeld, Sushko et al. 2021): G from label + 3D noise, a U-Net D
    that classifies every pixel into N classes + fake. model.ngf and model.ndf are its widths."""

    num_res_blocks: int = 6  # G and D blocks; data.size_px must be a multiple of 2**num_res_blocks
    z_dim: int = 64  # 3D noise channels, broadcast to every pixel
    spade_ks: int = 3  # SPADE kernel size
    param_free_norm: str = "batch"  # batch | instance (synchronised at several workers)
    lambda_labelmix: float = 10.0  # LabelMix consistency of D
    class_balancing: bool = True  # N+1 loss weighted by inverse class frequency
    dontcare_label: bool = False  # label class 0 is "don't care" (ADE20K's unknown): weight 0
    lambda_vgg: float = 0.0  # VGG19 perceptual loss (OASIS's --add_vgg_loss; 10 when on)


@dataclass(frozen=True)
class ExemplarConfig:
    """model.family cocosnet, cocosnet2, unite: the training photo each label map gets as its
    style reference (data/exemplars.py), chosen separately for training and evaluation."""

    train_retrieval: str = "iou"  # random | iou (label-histogram IoU) | vgg (VGG19 feature cosine)
    eval_retrieval: str = "iou"  # the same choices; vgg looks at the held-out photo
    top_k: int = 5  # training draws one of the k best (the official easy/hard references)
    self_ref_prob: float = 0.3  # training: the pair's own photo as its exemplar (official 0.3)


@dataclass(frozen=True)
class CocosnetConfig:
    """model.family: cocosnet (CoCosNet v1, Zhang et al. 2020): a correspondence net warps the
    exemplar to the label map, a SPADE G renders from the warp. Weights: microsoft/CoCosNet's
    ADE20K command. model.ngf is G's and the correspondence net's width."""

    lambda_gan: float = 10.0  # hinge GAN, G's and D's
    lambda_feat: float = 10.0  # D feature matching
    lambda_fm: float = 1.0  # VGG19 feature matching to the real, self-reference samples only
    lambda_perc: float = 0.01  # perceptual MSE to the real (relu5_2)
    lambda_ctx: float = 10.0  # contextual loss to the exemplar
    lambda_domain: float = 10.0  # domain alignment: label and real adapted features (L1)
    lambda_mask: float = 100.0  # warped exemplar label vs the label map
    lambda_warp_self: float = 0.0  # warped exemplar vs the real, self-reference samples
    lambda_warp_cycle: float = 0.0  # exemplar warped there and back vs itself
    use_attention: bool = True  # G's self-attention
    warp_stride: int = 4  # the correspondence is computed at 1/warp_stride resolution


@dataclass(frozen=True)
class Cocosnet2Config:
    """model.family: cocosnet2 (CoCosNet v2, Zhou et al. 2021): full-resolution correspondence
    by hierarchical PatchMatch with a ConvGRU. Weights: microsoft/CoCosNet-v2's DeepFashionHD
    command. model.ngf is G's width, nef the correspondence encoders'."""

    lambda_gan: float = 10.0
    lambda_feat: float = 10.0
    lambda_fm: float = 10.0  # VGG19 feature matching to the real, self-reference samples only
    lambda_perc: float = 0.001  # perceptual MSE to the real (relu4_2)
    lambda_ctx: float = 10.0
    lambda_domain: float = 10.0  # feature pairs of label and real, every pyramid level (L1)
    lambda_warp_self: float = 500.0  # warps at every level vs the real, self-reference samples
    lambda_warp_cycle: float = 1.0
    nef: int = 32  # correspondence encoder width
    iteration_count: int = 5  # PatchMatch iterations per level


@dataclass(frozen=True)
class UniteConfig:
    """model.family: unite (UNITE, Zhan et al. 2021): the exemplar is warped by unbalanced
    optimal transport between learned feature masses. Weights: the official train_ade.sh.
    model.ngf is G's width, nef the correspondence encoders'."""

    lambda_gan: float = 10.0
    lambda_feat: float = 10.0
    lambda_fm: float = 1.0
    lambda_perc: float = 0.01
    lambda_ctx: float = 10.0
    lambda_domain: float = 10.0
    lambda_mask: float = 500.0  # the official L1 warp-mask term (its NLL branch never runs)
    nef: int = 64
    reach: float = 0.0  # KL relaxation of the marginals; 0: balanced OT, as the official ADE20K run


@dataclass(frozen=True)
class SRConfig:
    """model.family esrgan, rdn, srresnet: how the low-resolution input is made from the
    high-resolution image (data/sr.py), the pixel losses, and the SR log's tricks."""

    scale: int = 4  # 2 or 4; data.size_px is the high-resolution crop, a multiple of it
    degradation: str = "bicubic"  # bicubic | realistic (blur, resize, noise, JPEG)
    blur_sigma_max: float = 3.0  # realistic: Gaussian kernel sigmas in [0.2, max]
    noise_sigma_max: float = 30.0  # realistic: Gaussian noise sigma in [1, max] 8-bit levels
    jpeg_quality_min: float = 30.0  # realistic: JPEG quality in [min, 95]
    noise_root: str = ""  # realistic: a folder of real noise patches, injected in half the draws
    lambda_l1: float = 1.0  # L1 to the high-resolution image (ESRGAN's GAN stage: 0.01)
    lambda_edge: float = 0.0  # L1 between the Sobel edge magnitudes of output and target
    blurpool: bool = False  # a [1,2,1]^2 blur after each upsampling step, against checkerboards


@dataclass(frozen=True)
class EsrganConfig:
    """model.family: esrgan (ESRGAN, Wang et al. 2018): RRDBNet G, VGG-style D, relativistic
    average GAN. Weights: BasicSR's train_ESRGAN_x4.yml; sr.lambda_l1 is 0.01 there."""

    num_feat: int = 64
    num_block: int = 23  # RRDB blocks
    num_grow_ch: int = 32
    num_feat_d: int = 64  # D width; D's input is data.size_px, a power of two >= 64
    lambda_perc: float = 1.0  # VGG19 conv5_4 (before ReLU) L1, ImageNet-normalised
    lambda_gan: float = 0.005  # relativistic average GAN, G's side
    pretrain_steps: int = 0  # the PSNR-oriented stage first: L1 only (weight 1), no D
    d_stepper: float = 0.0  # skip D's update while its loss (mean over ranks) is below this; 0: off


@dataclass(frozen=True)
class RdnConfig:
    """model.family: rdn (RDN, Zhang et al. 2018): residual dense blocks, L1 only, no D.
    Defaults: configuration B of the paper (EDSR-PyTorch's RDN)."""

    num_feat: int = 64  # G0
    num_block: int = 16  # D
    num_conv: int = 8  # C
    num_grow_ch: int = 64  # G


@dataclass(frozen=True)
class SrresnetConfig:
    """model.family: srresnet (MSRResNet, BasicSR's SRResNet without batch norm): L1 only, no D."""

    num_feat: int = 64
    num_block: int = 16


@dataclass(frozen=True)
class CycleganConfig:
    """model.family: cyclegan (CycleGAN, Zhu et al. 2017): two ResNet generators A <-> B and two
    70x70 PatchGANs, LSGAN, cycle and identity L1, a history pool of fakes for D. model.ngf,
    model.ndf and model.n_layers_D are the widths and D's depth (official: 64, 64, 3)."""

    n_blocks: int = 9  # residual blocks (resnet_9blocks; 6 for 128 px)
    lambda_A: float = 10.0  # cycle A -> B -> A
    lambda_B: float = 10.0  # cycle B -> A -> B
    lambda_identity: float = 0.5  # identity L1, relative to lambda_A / lambda_B
    pool_size: int = 50  # D sees a mix of new fakes and older ones; 0: new only


@dataclass(frozen=True)
class UgatitConfig:
    """model.family: ugatit (U-GAT-IT, Kim et al. 2020): CAM-attention generators with AdaILN,
    a global and a local CAM discriminator per domain. Weights: znxlwm/UGATIT-pytorch's
    defaults. model.ngf and model.ndf are the widths (official 64)."""

    light: bool = False  # the MLP reads pooled features (10.59M G instead of 278.96M at 256 px)
    n_blocks: int = 4  # residual blocks of encoder and decoder
    n_layers_global: int = 7  # global D; data.size_px must be at least 2**n_layers_global
    n_layers_local: int = 5  # local D
    adv_weight: float = 1.0  # LSGAN on patch and CAM logits, D's and G's
    cycle_weight: float = 10.0
    identity_weight: float = 10.0
    cam_weight: float = 1000.0  # G's CAM: translated images 1, identity images 0
    scse: bool = False  # the log's scSE block after every G residual block
    upsample: str = "resize"  # resize (nearest + conv) | deconv (the log's transposed conv)
    # The log's histogram matching (data/histmatch.py): each generator's input photos take the other
    # domain's batch's per-channel distribution, so G translates shapes and textures more than colour.
    hist_match: str = "none"  # none (off) | rgb | hsv (S and V) | hsl (L and S); hue is never matched
    hist_match_prob: float = 0.5  # the chance per training step (one draw for both directions)
    hist_match_ratio: float = 1.0  # blend (1 - ratio) * photo + ratio * matched; 1: fully matched
    # The log's blur term (CartoonGAN's edge-smoothed adversarial loss): each domain's Ds also see its
    # Gaussian-blurred real photos labelled fake, LSGAN on patch and CAM logits, so G learns sharp edges.
    blur_weight: float = 0.0  # 0: off; CartoonGAN weighs it as the fakes' half (adv_weight)
    blur_sigma: float = 1.0  # the blur's std in px; the kernel spans +-3 sigma



@dataclass(frozen=True)
class PdganConfig:
    """model.family: pdgan (PD-GAN, Liu et al. 2021): inpainting. A partial-conv U-Net gives the
    coarse prior; the SPDNorm G decodes noise over it; SPADE's multiscale D reads [hole mask,
    image]. Weights: KumapowerLIU/PD-GAN's defaults. model.ngf, model.ndf, model.num_D and
    model.n_layers_D are G's and D's (official 64, 64, 2, 4)."""

    z_dim: int = 256  # noise vector
    norm: str = "position"  # SPDNorm's parameter-free norm: position (official) | batch | instance | group (the log's)
    groups: int = 32  # norm group: GroupNorm groups
    attention: str = "none"  # none | simam (the log's SimAM after every SPDNorm block)
    nhidden: int = 128  # SPDNorm's hidden width
    lambda_gan: float = 1.0  # hinge GAN on both noises' outputs, G's
    lambda_feat: float = 10.0  # D feature matching, both outputs
    lambda_perc: float = 10.0  # VGG16 relu1_1..relu4_1 L1 to the real, both outputs (the reference's lambda_P)
    lambda_tv: float = 0.1  # TV of the composites in the dilated hole
    lambda_div: float = 1.0  # 1 / (VGG16 relu4_1 distance of the two outputs in the hole)
    lambda_msssim_l1: float = 0.0  # the log's MS-SSIM+L1 (Zhao et al. 2017) to the real, both outputs
    masks: str = "freeform"  # freeform (strokes and boxes) | files (a folder of masks: mask_root)
    mask_root: str = ""  # masks files: a folder of mask images, a pixel above 0 is a hole
    # The coarse prior: PD-GAN's partial-conv U-Net, trained first with the PConv losses for
    # prior_steps (the reference trains it as a model of its own), then frozen; prior_weights
    # starts it from a trained one (prior_steps 0: used as it is).
    prior_ngf: int = 64  # its width
    prior_res_num: int = 4  # its partial-conv residual blocks
    prior_norm: str = "instance"  # instance (official) | group: norms that act alike in training and evaluation
    prior_steps: int = 1000  # the coarse net's own stage, before D and G train (0: none)
    lr_prior: float = 1e-3  # its Adam learning rate (the reference's --lr)
    prior_weights: str = ""  # a coarse-net state dict (.pt) to start from
    prior_sha256: str = ""  # prior_weights' expected SHA-256, checked when given


# ---- The families' checks (config.py runs them) ----------------------------------------------

# The families' keys with a closed set of values, and those that must be above zero.
FAMILY_CHOICES: dict[str, tuple[object, ...]] = {
    "exemplar.train_retrieval": ("random", "iou", "vgg"),
    "exemplar.eval_retrieval": ("random", "iou", "vgg"),
    "spade.num_upsampling_layers": ("normal", "more", "most"),
    "spade.param_free_norm": ("batch", "instance"),
    "oasis.param_free_norm": ("batch", "instance"),
    "spade.gan_mode": ("hinge", "ls", "original"),
    "sr.scale": (2, 4),
    "sr.degradation": ("bicubic", "realistic"),
    "ugatit.upsample": ("resize", "deconv"),
    "ugatit.hist_match": ("none", "rgb", "hsv", "hsl"),
    "pdgan.norm": ("position", "batch", "instance", "group"),
    "pdgan.attention": ("none", "simam"),
    "pdgan.masks": ("freeform", "files"),
    "pdgan.prior_norm": ("instance", "group"),
}
FAMILY_POSITIVE = (
    "spade.z_dim", "oasis.num_res_blocks", "oasis.z_dim", "oasis.spade_ks", "exemplar.top_k",
    "cocosnet.warp_stride", "cocosnet2.nef", "cocosnet2.iteration_count", "unite.nef",
    "esrgan.num_feat", "esrgan.num_block", "esrgan.num_grow_ch", "esrgan.num_feat_d",
    "rdn.num_feat", "rdn.num_block", "rdn.num_conv", "rdn.num_grow_ch", "srresnet.num_feat", "srresnet.num_block",
    "sr.blur_sigma_max", "sr.noise_sigma_max", "cyclegan.n_blocks", "ugatit.n_layers_global", "ugatit.n_layers_local",
    "ugatit.blur_sigma",
    "pdgan.z_dim", "pdgan.groups", "pdgan.nhidden", "pdgan.prior_ngf", "pdgan.lr_prior",
)

# Shared keys a family has no use for: its own D, its own adversarial loss.
FAMILY_IGNORES = {
    "spade": (),
    "oasis": ("model.D", "model.num_D", "model.n_layers_D", "train.diffaug"),
    **{family: ("train.diffaug",) for family in EXEMPLAR_FAMILIES},
    # Super-resolution: widths in their own sections, no label map, no augmentation of pairs.
    **{family: ("model.ngf", "model.ndf", "model.D", "model.num_D", "model.n_layers_D", "train.diffaug",
                "data.num_classes") + (("optim.lr_D",) if family != "esrgan" else ())
       for family in SR_FAMILIES},
    # Unpaired translation: no label map; one PatchGAN per domain.
    "cyclegan": ("model.D", "model.num_D", "train.diffaug", "data.num_classes"),
    "ugatit": ("model.D", "model.num_D", "model.n_layers_D", "train.diffaug", "data.num_classes"),
    # Inpainting: no label map; D reads [hole mask, image].
    "pdgan": ("model.D", "train.diffaug", "data.num_classes"),
}
_REALISTIC_KEYS = ("sr.blur_sigma_max", "sr.noise_sigma_max", "sr.jpeg_quality_min", "sr.noise_root")


def family_no_effect(cfg: Config, key: str) -> str | None:
    """Why a key of an active section does nothing for this family, or None."""
    if key == "train.d_ratio" and cfg.model.family in ("rdn", "srresnet"):
        return f"model.family {cfg.model.family!r} has no D"
    if key in _REALISTIC_KEYS and cfg.sr.degradation != "realistic":
        return "sr.degradation is 'bicubic' (these shape the realistic degradation)"
    if key in ("spade.z_dim", "spade.lambda_kld") and not cfg.spade.use_vae:
        return "spade.use_vae is false (no style encoder)"
    if key in ("ugatit.hist_match_prob", "ugatit.hist_match_ratio") and cfg.ugatit.hist_match == "none":
        return "ugatit.hist_match is 'none' (no histogram matching)"
    if key == "ugatit.blur_sigma" and cfg.ugatit.blur_weight == 0:
        return "ugatit.blur_weight is 0 (no blur term)"
    if key == "pdgan.prior_sha256" and not cfg.pdgan.prior_weights:
        return "pdgan.prior_weights is empty (nothing to check)"
    if key == "pdgan.mask_root" and cfg.pdgan.masks != "files":
        return "pdgan.masks is not 'files'"
    if key == "pdgan.groups" and cfg.pdgan.norm != "group" and cfg.pdgan.prior_norm != "group":
        return "neither pdgan.norm nor pdgan.prior_norm is 'group'"
    if key in FAMILY_IGNORES[cfg.model.family]:
        return f"model.family {cfg.model.family!r} does not use it"
    return None


def validate_family(cfg: Config, where: str) -> None:
    """The checks of model.family's own constraints (sizes its nets need, ranges of its keys)."""
    if cfg.model.family in EXEMPLAR_FAMILIES:
        if cfg.data.size_px % 32 or cfg.data.size_px < 64:
            raise GantuneError(f"{where}: model.family {cfg.model.family} needs data.size_px a multiple of 32 and at "
                               f"least 64 (its G starts from a 2x2 grid), got {cfg.data.size_px}")
        if not 0 <= cfg.exemplar.self_ref_prob <= 1:
            raise GantuneError(f"{where}: exemplar.self_ref_prob must be in [0, 1], got {cfg.exemplar.self_ref_prob}")
        if cfg.unite.reach < 0:
            raise GantuneError(f"{where}: unite.reach must be >= 0 (0: balanced OT), got {cfg.unite.reach}")
    if cfg.model.family in SR_FAMILIES:
        sr = cfg.sr
        if cfg.data.size_px % sr.scale:
            raise GantuneError(f"{where}: data.size_px={cfg.data.size_px} (the high-resolution crop) must be a "
                               f"multiple of sr.scale={sr.scale}")
        size = cfg.data.size_px
        if cfg.model.family == "esrgan" and (size < 64 or size & (size - 1)):
            raise GantuneError(f"{where}: model.family esrgan needs data.size_px a power of two >= 64 (its VGG-style "
                               f"D reads the whole crop), got {size}")
        if not 0 < sr.jpeg_quality_min <= 95:
            raise GantuneError(f"{where}: sr.jpeg_quality_min must be in (0, 95], got {sr.jpeg_quality_min}")
        if sr.noise_root and not Path(sr.noise_root).is_dir():
            raise GantuneError(f"{where}: sr.noise_root={sr.noise_root!r} is not a folder")
        if cfg.esrgan.pretrain_steps < 0 or cfg.esrgan.d_stepper < 0:
            raise GantuneError(f"{where}: esrgan.pretrain_steps and esrgan.d_stepper must be >= 0")
    if cfg.model.family in UNPAIRED_FAMILIES:
        if cfg.data.size_px % 4:
            raise GantuneError(f"{where}: model.family {cfg.model.family} needs data.size_px a multiple of 4 "
                               f"(its G downsamples twice), got {cfg.data.size_px}")
        if cfg.cyclegan.pool_size < 0:
            raise GantuneError(f"{where}: cyclegan.pool_size must be >= 0, got {cfg.cyclegan.pool_size}")
        if cfg.ugatit.n_blocks < 0:
            raise GantuneError(f"{where}: ugatit.n_blocks must be >= 0, got {cfg.ugatit.n_blocks}")
        for key in ("hist_match_prob", "hist_match_ratio"):
            if not 0 <= getattr(cfg.ugatit, key) <= 1:
                raise GantuneError(f"{where}: ugatit.{key} must be in [0, 1], got {getattr(cfg.ugatit, key)}")
        if cfg.ugatit.blur_weight < 0:
            raise GantuneError(f"{where}: ugatit.blur_weight must be >= 0 (0: off), got {cfg.ugatit.blur_weight}")
        deepest = max(cfg.ugatit.n_layers_global, cfg.ugatit.n_layers_local)
        if cfg.model.family == "ugatit" and cfg.data.size_px < 2**deepest:
            raise GantuneError(f"{where}: model.family ugatit needs data.size_px >= 2**{deepest} for its "
                               f"{deepest}-layer D, got {cfg.data.size_px}")
    if cfg.model.family == "pdgan":
        _validate_pdgan(cfg, where)
    if cfg.model.family == "oasis":
        blocks = cfg.oasis.num_res_blocks
        if blocks < 2 or cfg.data.size_px % 2**blocks:
            raise GantuneError(f"{where}: oasis.num_res_blocks={blocks} needs data.size_px a multiple of "
                               f"2**{blocks} and at least 2 blocks, got data.size_px={cfg.data.size_px}")
        if cfg.oasis.spade_ks % 2 == 0:
            raise GantuneError(f"{where}: oasis.spade_ks must be odd (an even kernel shifts the map), got {cfg.oasis.spade_ks}")


def _validate_pdgan(cfg: Config, where: str) -> None:
    p, size = cfg.pdgan, cfg.data.size_px
    if size % 64 or size < 128:
        raise GantuneError(f"{where}: model.family pdgan needs data.size_px a multiple of 64 and at least 128 (G "
                           f"and the coarse net halve it six times, and need two pixels there), got {size}")
    if p.prior_steps < 0:
        raise GantuneError(f"{where}: pdgan.prior_steps must be >= 0, got {p.prior_steps}")
    if p.masks == "files" and not (p.mask_root and Path(p.mask_root).is_dir()):
        raise GantuneError(f"{where}: pdgan.masks is 'files': pdgan.mask_root={p.mask_root!r} must be a folder of masks")
    if p.prior_weights and not Path(p.prior_weights).is_file():
        raise GantuneError(f"{where}: pdgan.prior_weights={p.prior_weights!r} is not a file (a coarse-net state dict)")
    if p.prior_sha256 and (len(p.prior_sha256) != 64 or any(c not in "0123456789abcdef" for c in p.prior_sha256)):
        raise GantuneError(f"{where}: pdgan.prior_sha256 must be 64 lowercase hex digits, got {p.prior_sha256!r}")
    for key, norm, width in (("pdgan.norm", p.norm, cfg.model.ngf), ("pdgan.prior_norm", p.prior_norm, p.prior_ngf)):
        if norm == "group" and width % p.groups:
            raise GantuneError(f"{where}: {key} is 'group': pdgan.groups={p.groups} must divide the width {width}")
