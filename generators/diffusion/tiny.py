"""Tiny random-weight diffusers pipelines of every architecture, for tests and offline trials.

Each has the shape of a real model family at a few MB, so it loads and runs on
a CPU in a fraction of a second. Its images are noise-like, but they are
deterministic and of the right size, which is what tests and engine
benchmarks need. The architectures (`arch=`), with the size each draws when
no height or width is given (its native size):

    sd1            Stable Diffusion 1.x: UNet, CLIP-L, DDIM                  64 px
    sd2-v          Stable Diffusion 2.x, v-prediction: UNet, CLIP (gelu)     48 px
    sdxl           SDXL: UNet with text_time embeddings, CLIP-L + CLIP-G     96 px
    sd3            SD3: MMDiT transformer, CLIP-L + CLIP-G + T5, flow match  80 px
                   (`with_t5=False` saves it without text_encoder_3/tokenizer_3)
    flux           Flux: transformer, CLIP-L + T5, flow match               128 px
    pixart-sigma   PixArt-Σ: DiT transformer, T5, DPM-Solver++              128 px
    sd-inpaint     SD 1.x inpainting: the sd1 shape, a UNet of 9 input        64 px
                   channels (latents, mask, masked image); it zooms out and pans only

    python -m generators.diffusion.tiny PATH [ARCH]   # writes a pipeline folder to PATH

The folder is an ordinary diffusers pipeline, loaded by the same code as any
real model (`artbot draw "a fox" --model PATH`). The tokenizers are written
from small local vocabularies (byte-level BPE for CLIP, Unigram for T5), so
nothing is ever downloaded.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

ARCHITECTURES = ("sd1", "sd2-v", "sdxl", "sd3", "flux", "pixart-sigma")
# Not text-to-image models, so not among the ARCHITECTURES that draw.
INPAINT_ARCHITECTURES = ("sd-inpaint",)


def _byte_symbols() -> list[str]:
    """The 256 printable stand-ins that byte-level BPE (GPT-2, CLIP) uses for bytes.

    Printable Latin-1 bytes stand for themselves; the others are shifted to
    code points from 256 up, in byte order.
    """
    keep = set(range(ord("!"), ord("~") + 1)) | set(range(0xA1, 0xAD)) | set(range(0xAE, 0x100))
    symbols, shifted = [], 0
    for b in range(256):
        if b in keep:
            symbols.append(chr(b))
        else:
            symbols.append(chr(256 + shifted))
            shifted += 1
    return symbols


def _write_tokenizer_files(folder: Path) -> None:
    """A byte-level CLIP vocabulary: every byte as a token, plus a few merges."""
    chars = _byte_symbols()
    vocab: dict[str, int] = {}
    for ch in chars:
        vocab[ch] = len(vocab)
    for ch in chars:
        vocab[ch + "</w>"] = len(vocab)
    merges = ["r e", "re d</w>", "f o", "fo x</w>", "c a", "ca t</w>"]
    for merge in merges:
        vocab.setdefault(merge.replace(" ", ""), len(vocab))
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")


def _clip_tokenizer(path: Path):
    """The byte-level CLIP tokenizer (77 tokens, as every CLIP text encoder takes)."""
    from transformers import CLIPTokenizer

    tok_dir = path / "_tokenizer_src"
    _write_tokenizer_files(tok_dir)
    # Loading from the two files works with both the slow and the fast CLIP tokenizer.
    tokenizer = CLIPTokenizer.from_pretrained(str(tok_dir), model_max_length=77)
    for f in tok_dir.iterdir():
        f.unlink()
    tok_dir.rmdir()
    return tokenizer


def _clip_config(tokenizer, hidden_size: int = 32, **shape):
    """A small CLIP text-encoder config whose special ids match `tokenizer`.

    `shape` overrides the defaults below; `hidden_act="gelu"` with a
    `projection_dim` is the OpenCLIP (SD 2.x, CLIP-G) flavour, the default
    `quick_gelu` is OpenAI's CLIP-L.
    """
    from transformers import CLIPTextConfig

    fields = dict(
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 1,
        hidden_size=hidden_size,
        intermediate_size=37,
        layer_norm_eps=1e-05,
        num_attention_heads=4,
        num_hidden_layers=5,
        vocab_size=len(tokenizer),
    )
    fields.update(shape)
    return CLIPTextConfig(**fields)


def _t5_vocabulary() -> list[tuple[str, float]]:
    """Unigram pieces and log-probabilities: T5's three specials, then enough to spell anything.

    Every printable ASCII and Latin-1 character is a piece, alone and after
    the word-start mark `▁`, so any English prompt tokenizes without
    `<unk>`; a few common words and suffixes make typical prompts shorter.
    """
    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("▁", -2.0)]
    words = (
        "a an the of in on with and or at to by for from is are this that photo painting "
        "portrait picture drawing art style oil watercolor sketch landscape city forest sea "
        "sky sun moon night day light dark red green blue yellow black white orange purple "
        "fox cat dog bird horse fish tree flower house castle mountain river man woman girl "
        "boy face eyes hair high quality detailed realistic beautiful blurry ugly bad squirrel "
        "eating burger astronaut riding"
    ).split()
    for word in words:
        pieces.append(("▁" + word, -4.0 - 0.01 * len(pieces)))
    for suffix in ("s", "ed", "ing", "er", "ly", "es", "tion", "al"):
        pieces.append((suffix, -6.0))
    chars = [chr(c) for c in range(0x21, 0x7F)] + [chr(c) for c in range(0xA1, 0x100) if c != 0xAD]
    for ch in chars:
        pieces.append(("▁" + ch, -9.0))
    for ch in chars:
        pieces.append((ch, -10.0))
    return pieces


def _t5_tokenizer():
    """T5's tokenizer (tokenizers-backed Unigram) over the small local vocabulary."""
    from transformers import T5Tokenizer

    return T5Tokenizer(vocab=_t5_vocabulary(), extra_ids=0, model_max_length=512)


def _t5_encoder(tokenizer, d_model: int = 64):
    """A T5 v1.1-style (gated-gelu) encoder of two layers."""
    from transformers import T5Config, T5EncoderModel

    return T5EncoderModel(
        T5Config(
            vocab_size=len(tokenizer),
            d_model=d_model,
            d_kv=8,
            d_ff=37,
            num_layers=2,
            num_heads=4,
            relative_attention_num_buckets=8,
            feed_forward_proj="gated-gelu",
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=tokenizer.eos_token_id,
            decoder_start_token_id=tokenizer.pad_token_id,
        )
    )


def _sd_scheduler(**config):
    """DDIM on the scaled-linear schedule of Stable Diffusion 1.x and 2.x."""
    from diffusers import DDIMScheduler

    return DDIMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
        **config,
    )


def _vae(block_out_channels, norm_num_groups: int, **config):
    """A small AutoencoderKL; its scale factor is 2 ** (len(block_out_channels) - 1)."""
    from diffusers import AutoencoderKL

    n = len(block_out_channels)
    fields = dict(
        block_out_channels=list(block_out_channels),
        in_channels=3,
        out_channels=3,
        down_block_types=["DownEncoderBlock2D"] * n,
        up_block_types=["UpDecoderBlock2D"] * n,
        latent_channels=4,
        norm_num_groups=norm_num_groups,
    )
    fields.update(config)
    return AutoencoderKL(**fields)


def _flow_vae(block_out_channels, **config):
    """The VAE of SD3 and Flux: no quant convs, a shift as well as a scale of its latents."""
    return _vae(block_out_channels, norm_num_groups=8, layers_per_block=1, use_quant_conv=False,
                use_post_quant_conv=False, **config)


def _sd_unet(**shape):
    """The UNet of the tiny SD 1.x and 2.x: two blocks, cross-attention in the second."""
    from diffusers import UNet2DConditionModel

    fields = dict(
        block_out_channels=(32, 64),
        layers_per_block=2,
        in_channels=4,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        norm_num_groups=32,
    )
    fields.update(shape)
    return UNet2DConditionModel(**fields)


def _sd_pipeline(path: Path, unet, vae, scheduler, **text_shape):
    """A StableDiffusionPipeline around them, with its CLIP tokenizer and text encoder."""
    from diffusers import StableDiffusionPipeline
    from transformers import CLIPTextModel

    tokenizer = _clip_tokenizer(path)
    return StableDiffusionPipeline(
        unet=unet,
        vae=vae,
        text_encoder=CLIPTextModel(_clip_config(tokenizer, **text_shape)),
        tokenizer=tokenizer,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )


def _build_sd1(path: Path):
    """SD 1.x. Its weights, and so its images, are what they have always been: keep them so."""
    unet = _sd_unet(sample_size=32, cross_attention_dim=32)  # 64 px with the VAE's factor 2
    vae = _vae((32, 64), norm_num_groups=32, sample_size=64)
    return _sd_pipeline(path, unet, vae, _sd_scheduler())


def _build_sd_inpaint(path: Path):
    """SD 1.x inpainting: the sd1 shapes, the UNet taking the mask and the masked image's
    latents beside its own (4 + 1 + 4 channels), in a StableDiffusionInpaintPipeline."""
    from diffusers import StableDiffusionInpaintPipeline

    sd = _build_sd1(path)
    unet = _sd_unet(sample_size=32, cross_attention_dim=32, in_channels=9)
    return StableDiffusionInpaintPipeline(**{**sd.components, "unet": unet},
                                          requires_safety_checker=False)


def _build_sd2_v(path: Path):
    """SD 2.x 768-v: linear-projection attention, an OpenCLIP-shaped encoder, v-prediction."""
    unet = _sd_unet(
        sample_size=24,  # 48 px
        attention_head_dim=(2, 4),
        use_linear_projection=True,
        upcast_attention=True,
        cross_attention_dim=48,
    )
    vae = _vae((32, 64), norm_num_groups=32, sample_size=48)
    return _sd_pipeline(path, unet, vae, _sd_scheduler(prediction_type="v_prediction"),
                        hidden_size=48, intermediate_size=64, hidden_act="gelu", projection_dim=48)


def _build_sdxl(path: Path):
    """SDXL: CLIP-L and CLIP-G side by side (cross-attention 32 + 64), pooled G plus size ids
    as extra embedding. The two encoders differ in width, as the real ones do (768, 1280):
    diffusers tells them apart by width when it reads a single-file checkpoint."""
    from diffusers import EulerDiscreteScheduler, StableDiffusionXLPipeline, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    unet = UNet2DConditionModel(
        block_out_channels=(2, 4),
        layers_per_block=2,
        sample_size=48,  # 96 px
        in_channels=4,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=(2, 4),
        use_linear_projection=True,
        addition_embed_type="text_time",
        addition_time_embed_dim=8,
        transformer_layers_per_block=(1, 2),
        projection_class_embeddings_input_dim=80,  # 6 size/crop ids x 8 + CLIP-G projection 32
        cross_attention_dim=96,  # CLIP-L hidden 32 + CLIP-G hidden 64
        norm_num_groups=1,
    )
    scheduler = EulerDiscreteScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        steps_offset=1,
        timestep_spacing="leading",
    )
    vae = _vae((32, 64), norm_num_groups=32, sample_size=96)
    tokenizer = _clip_tokenizer(path)
    tokenizer_2 = _clip_tokenizer(path)
    text_encoder = CLIPTextModel(_clip_config(tokenizer))
    text_encoder_2 = CLIPTextModelWithProjection(
        _clip_config(tokenizer_2, hidden_size=64, hidden_act="gelu", projection_dim=32)
    )
    return StableDiffusionXLPipeline(
        unet=unet,
        vae=vae,
        text_encoder=text_encoder,
        text_encoder_2=text_encoder_2,
        tokenizer=tokenizer,
        tokenizer_2=tokenizer_2,
        scheduler=scheduler,
        image_encoder=None,
        feature_extractor=None,
    )


def _build_sd3(path: Path, with_t5: bool):
    """SD3: CLIP-L and CLIP-G pooled (32 + 32) and, padded to T5's width (64), joined to T5's tokens."""
    from diffusers import FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel, StableDiffusion3Pipeline
    from transformers import CLIPTextModelWithProjection

    transformer = SD3Transformer2DModel(
        sample_size=40,  # 80 px with the VAE's factor 2
        patch_size=2,
        in_channels=4,
        num_layers=1,
        attention_head_dim=8,
        num_attention_heads=4,
        caption_projection_dim=32,
        joint_attention_dim=64,  # T5's d_model
        pooled_projection_dim=64,  # CLIP-L projection 32 + CLIP-G projection 32
        out_channels=4,
    )
    vae = _flow_vae((8, 16), sample_size=80, shift_factor=0.0609, scaling_factor=1.5035)
    scheduler = FlowMatchEulerDiscreteScheduler(shift=3.0)
    tokenizer = _clip_tokenizer(path)
    tokenizer_2 = _clip_tokenizer(path)
    text_encoder = CLIPTextModelWithProjection(_clip_config(tokenizer, projection_dim=32))
    text_encoder_2 = CLIPTextModelWithProjection(
        _clip_config(tokenizer_2, hidden_size=64, hidden_act="gelu", projection_dim=32)
    )
    tokenizer_3 = _t5_tokenizer() if with_t5 else None
    text_encoder_3 = _t5_encoder(tokenizer_3) if with_t5 else None
    return StableDiffusion3Pipeline(
        transformer=transformer,
        vae=vae,
        scheduler=scheduler,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        text_encoder_2=text_encoder_2,
        tokenizer_2=tokenizer_2,
        text_encoder_3=text_encoder_3,
        tokenizer_3=tokenizer_3,
    )


def _build_flux(path: Path):
    """Flux (dev-shaped, with guidance embedding): CLIP-L pooled, T5 tokens, 2x2-packed latents.

    Flux draws default_sample_size (128, fixed in the pipeline) x the VAE's
    factor, so the VAE has one block (factor 1) to stay at 128 px.
    """
    from diffusers import FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel
    from transformers import CLIPTextModel

    transformer = FluxTransformer2DModel(
        patch_size=1,
        in_channels=16,  # 4 latent channels x 2x2 packing
        num_layers=1,
        num_single_layers=1,
        attention_head_dim=16,
        num_attention_heads=2,
        joint_attention_dim=64,  # T5's d_model
        pooled_projection_dim=32,  # CLIP-L's hidden size (its pooled output)
        guidance_embeds=True,
        axes_dims_rope=(4, 4, 8),  # sums to attention_head_dim
    )
    vae = _flow_vae(
        (8,),
        mid_block_add_attention=False,  # at factor 1 it would attend over all 128 x 128 pixels
        sample_size=128,
        shift_factor=0.1159,
        scaling_factor=0.3611,
    )
    scheduler = FlowMatchEulerDiscreteScheduler(shift=3.0)
    tokenizer = _clip_tokenizer(path)
    text_encoder = CLIPTextModel(_clip_config(tokenizer))
    tokenizer_2 = _t5_tokenizer()
    text_encoder_2 = _t5_encoder(tokenizer_2)
    return FluxPipeline(
        transformer=transformer,
        vae=vae,
        scheduler=scheduler,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        text_encoder_2=text_encoder_2,
        tokenizer_2=tokenizer_2,
    )


def _build_pixart_sigma(path: Path):
    """PixArt-Σ: a DiT with adaLN-single and learned sigma, cross-attending to T5.

    Its transformer's sample_size is 32 because the pipeline's default
    resolution binning only knows 32/64/128/256 (it denoises at the nearest
    256-px bin, then resizes back); with the VAE's factor 4 it draws 128 px.
    """
    from diffusers import DPMSolverMultistepScheduler, PixArtSigmaPipeline, PixArtTransformer2DModel

    transformer = PixArtTransformer2DModel(
        sample_size=32,
        num_layers=2,
        patch_size=2,
        attention_head_dim=8,
        num_attention_heads=3,
        caption_channels=64,  # T5's d_model
        in_channels=4,
        cross_attention_dim=24,
        out_channels=8,  # noise and learned variance
        attention_bias=True,
        activation_fn="gelu-approximate",
        num_embeds_ada_norm=1000,
        norm_type="ada_norm_single",
        norm_elementwise_affine=False,
        norm_eps=1e-6,
    )
    vae = _vae((8, 16, 16), norm_num_groups=8, layers_per_block=1, sample_size=128)
    scheduler = DPMSolverMultistepScheduler(
        beta_start=0.0001, beta_end=0.02, beta_schedule="linear", algorithm_type="dpmsolver++", solver_order=2
    )
    tokenizer = _t5_tokenizer()
    text_encoder = _t5_encoder(tokenizer)
    return PixArtSigmaPipeline(
        transformer=transformer, vae=vae, scheduler=scheduler, text_encoder=text_encoder, tokenizer=tokenizer
    )


def build_tiny_pipeline(path: str | Path, seed: int = 0, arch: str = "sd1", *, with_t5: bool = True) -> Path:
    """Build the tiny `arch` pipeline with weights drawn from `seed` and save it to `path`.

    `with_t5=False` (sd3 only) saves the folder without text_encoder_3 and
    tokenizer_3, as operators often download SD3.
    """
    if arch not in ARCHITECTURES + INPAINT_ARCHITECTURES:
        raise ValueError(f"unknown architecture {arch!r}; choose one of "
                         f"{', '.join(ARCHITECTURES + INPAINT_ARCHITECTURES)}")
    if not with_t5 and arch != "sd3":
        raise ValueError(f"with_t5=False is for sd3 only; {arch} cannot run without its T5 encoder")
    path = Path(path)
    torch.manual_seed(seed)
    if arch == "sd1":
        pipe = _build_sd1(path)
    elif arch == "sd-inpaint":
        pipe = _build_sd_inpaint(path)
    elif arch == "sd2-v":
        pipe = _build_sd2_v(path)
    elif arch == "sdxl":
        pipe = _build_sdxl(path)
    elif arch == "sd3":
        pipe = _build_sd3(path, with_t5)
    elif arch == "flux":
        pipe = _build_flux(path)
    else:
        pipe = _build_pixart_sigma(path)
    pipe.save_pretrained(path, safe_serialization=True)
    return path


if __name__ == "__main__":
    known = ARCHITECTURES + INPAINT_ARCHITECTURES
    if len(sys.argv) not in (2, 3) or (len(sys.argv) == 3 and sys.argv[2] not in known):
        sys.exit(f"usage: python -m generators.diffusion.tiny PATH [{'|'.join(known)}]")
    print(build_tiny_pipeline(sys.argv[1], arch=sys.argv[2] if len(sys.argv) == 3 else "sd1"))
