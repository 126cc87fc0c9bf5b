"""SDXL's architecture at toy size: two CLIP text encoders, a UNet with text-time
conditioning and a 4-level VAE (latents 1/8 of the image, as in real SDXL)."""

from __future__ import annotations

from pathlib import Path

from bespoke_exp.demo.tokenizer import write_tokenizer


def build_tiny_pipeline(tokenizer_dir: Path):
    """SDXL's architecture at toy size (diffusers' own test recipe, with a 4-level VAE
    so latents are 1/8 of the image as in real SDXL)."""
    from diffusers import (
        EulerDiscreteScheduler,
        StableDiffusionXLPipeline,
    )
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

    write_tokenizer(tokenizer_dir)
    tokenizer = CLIPTokenizer.from_pretrained(tokenizer_dir, model_max_length=77)
    eos = tokenizer.convert_tokens_to_ids("<|endoftext|>")
    text_config = CLIPTextConfig(
        bos_token_id=tokenizer.convert_tokens_to_ids("<|startoftext|>"),
        eos_token_id=eos,
        pad_token_id=eos,
        hidden_size=32,
        intermediate_size=37,
        layer_norm_eps=1e-05,
        num_attention_heads=4,
        num_hidden_layers=5,
        vocab_size=len(tokenizer),
        hidden_act="gelu",
        projection_dim=32,
    )
    unet, vae = _tiny_unet(), _tiny_vae()
    scheduler = EulerDiscreteScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        steps_offset=1,
        beta_schedule="scaled_linear",
        timestep_spacing="leading",
    )
    return StableDiffusionXLPipeline(
        vae=vae,
        text_encoder=CLIPTextModel(text_config),
        text_encoder_2=CLIPTextModelWithProjection(text_config),
        tokenizer=tokenizer,
        tokenizer_2=tokenizer,
        unet=unet,
        scheduler=scheduler,
    )


def _tiny_unet():
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(
        block_out_channels=(32, 64),
        layers_per_block=2,
        sample_size=24,  # 192 px: one latent per cell of the 24x24 art
        in_channels=4,
        out_channels=4,
        # Attention at both levels (SDXL has none at its top level): the LoRA can then
        # reach the cell-sized level, where crispness is decided.
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
        attention_head_dim=(2, 4),
        use_linear_projection=True,
        addition_embed_type="text_time",
        addition_time_embed_dim=8,
        transformer_layers_per_block=(1, 1),
        projection_class_embeddings_input_dim=80,  # 6 time ids x 8 + pooled text (32)
        cross_attention_dim=64,  # both text encoders' hidden states, concatenated
        norm_num_groups=1,
    )


def _tiny_vae():
    """Four levels, so latents are 1/8 of the image as in SDXL."""
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        block_out_channels=[16, 32, 32, 32],
        in_channels=3,
        out_channels=3,
        down_block_types=["DownEncoderBlock2D"] * 4,
        up_block_types=["UpDecoderBlock2D"] * 4,
        latent_channels=4,
        layers_per_block=1,
        norm_num_groups=8,
        sample_size=192,
    )
