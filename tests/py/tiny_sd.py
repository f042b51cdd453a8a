"""Tiny random-weight Stable Diffusion configurations built from the real diffusers
classes (pinned sources in ../shared/vendor), with SD's block layout and names:
four down blocks, a mid block and four up blocks, two resnets per down block, so
the 16 self-attention layers are named exactly as in SD 1.x / 2.x.

    sd1         SD 1.x: heads from an int attention_head_dim, conv projections
    sd2         SD 2.x: per-block heads, linear projections
    sd2-upcast  SD 2.1-768: as sd2 with upcast_attention (attention scores in fp32)
"""
import torch

CROSS_DIM = 16
FLAVOURS = ("sd1", "sd2", "sd2-upcast")


def unet_config(flavour):
    if flavour not in FLAVOURS:
        raise ValueError("unknown flavour " + flavour)
    cfg = dict(
        sample_size=16,
        in_channels=4,
        out_channels=4,
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
        block_out_channels=(16, 16, 32, 32),
        layers_per_block=2,
        norm_num_groups=8,
        cross_attention_dim=CROSS_DIM,
    )
    if flavour == "sd1":
        cfg.update(attention_head_dim=2)
    else:
        cfg.update(attention_head_dim=(2, 2, 4, 4), use_linear_projection=True,
                   upcast_attention=(flavour == "sd2-upcast"))
    return cfg


def vae_config():
    return dict(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(8, 8, 16, 16),
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=4,
        sample_size=128,
    )


def build(flavour, seed=0):
    """(unet, vae, prompt embedding (1, 77, CROSS_DIM)), random weights, eval mode."""
    from diffusers import AutoencoderKL, UNet2DConditionModel

    torch.manual_seed(seed)
    unet = UNet2DConditionModel(**unet_config(flavour)).eval()
    vae = AutoencoderKL(**vae_config()).eval()
    embedding = torch.randn(1, 77, CROSS_DIM, generator=torch.Generator().manual_seed(seed + 1))
    return unet, vae, embedding


class StandInPipeline:
    """What export_sd_attention.main() uses of a StableDiffusionPipeline: unet, vae,
    encode_prompt and to(); the text encoder is replaced by a fixed embedding."""

    def __init__(self, flavour, seed=0):
        self.unet, self.vae, self._embedding = build(flavour, seed)

    def to(self, device):
        self.unet.to(device)
        self.vae.to(device)
        self._embedding = self._embedding.to(device)
        return self

    def encode_prompt(self, prompt, device, num_images_per_prompt, do_classifier_free_guidance):
        assert prompt == "" and not do_classifier_free_guidance
        return self._embedding.to(device), None
