"""A small text-conditioned diffusion model that works in pixel space.

Two networks in one module, small enough to train on a laptop CPU:

- `TextEncoder`: the caption's words (a word-level vocabulary built from the
  training captions) -> token vectors (B, L, D) and a pooled vector (B, D).
- `UNet` (DDPM, Ho et al. 2020): a noisy image and its timestep -> the
  network's prediction (v, Salimans & Ho 2022, or epsilon). The timestep
  embedding plus the pooled caption vector modulates every residual block
  (scale and shift after the group norm); at the lowest resolution the image
  attends to itself and to the caption's tokens together (keys and values are
  the image tokens followed by the text tokens, as in Imagen's UNet).

Classifier-free guidance needs the model to also know "no caption": training
drops the caption now and then, which encodes as the start token alone.

    config = PixelDiffusionConfig(vocab=CaptionTokenizer.build(captions))
    model = PixelDiffusion(config)
    tokens, mask = model.tokenizer(["red heart", ""])  # (2, L) int64, (2, L) bool
    v = model(x_t, t, tokens, mask)                     # (2, 3, S, S)
"""

from __future__ import annotations

import math
import re
from collections import Counter
from dataclasses import asdict, dataclass, field, fields

import torch
import torch.nn as nn
import torch.nn.functional as F

PAD, UNK, START = "<pad>", "<unk>", "<start>"
SPECIAL_TOKENS = [PAD, UNK, START]
_WORD = re.compile(r"[a-z0-9]+")


@dataclass
class PixelDiffusionConfig:
    image_size: int = 32  # side of the square images the model is trained on and draws
    channels: list[int] = field(default_factory=lambda: [24, 48, 96])  # UNet widths at S, S/2, S/4, ...
    res_blocks: int = 1  # residual blocks per resolution, going down and again going up
    patch_size: int = 1  # 2: fold 2x2 pixels into channels first (4x cheaper convolutions, coarser detail)
    attention_heads: int = 4  # heads of the attention at the lowest resolution (and in the text encoder)
    emb_dim: int = 128  # width of the timestep + caption embedding that modulates every residual block
    dropout: float = 0.0  # dropout inside the residual blocks
    vocab: list[str] = field(default_factory=lambda: list(SPECIAL_TOKENS))  # <pad> <unk> <start>, then words
    max_tokens: int = 16  # the start token plus up to 15 words; longer captions are cut
    text_dim: int = 128  # width of the text encoder's token vectors
    text_layers: int = 1  # transformer layers of the text encoder (0: embeddings only)
    timesteps: int = 1000  # diffusion steps T of the training schedule
    schedule: str = "cosine"  # noise schedule: 'cosine' (Nichol & Dhariwal 2021) or 'linear' (Ho et al. 2020)
    prediction: str = "v"  # what the UNet predicts: 'v' (Salimans & Ho 2022) or 'epsilon'

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "PixelDiffusionConfig":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


# -- text ---------------------------------------------------------------------------


def words(text: str) -> list[str]:
    """Lower-cased words of a caption or prompt: 'Flag of Japan, JP' -> ['flag', 'of', 'japan', 'jp']."""
    return _WORD.findall(text.lower())


class CaptionTokenizer:
    """Words -> ids over a fixed vocabulary; unknown words become <unk>."""

    def __init__(self, vocab: list[str], max_tokens: int):
        assert vocab[:3] == SPECIAL_TOKENS, "the vocabulary must start with <pad>, <unk>, <start>"
        self.vocab = vocab
        self.max_tokens = max_tokens
        self.index = {w: i for i, w in enumerate(vocab)}

    @staticmethod
    def build(captions: list[str], min_count: int = 1, max_words: int = 8192) -> list[str]:
        """A vocabulary of the captions' words, most frequent first (ties alphabetical)."""
        counts = Counter(w for c in captions for w in words(c))
        ranked = sorted((w for w, n in counts.items() if n >= min_count), key=lambda w: (-counts[w], w))
        return SPECIAL_TOKENS + ranked[:max_words]

    def encode(self, text: str) -> list[int]:
        unk = self.index[UNK]
        ids = [self.index[START]] + [self.index.get(w, unk) for w in words(text)]
        return ids[: self.max_tokens]

    def __call__(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, L) token ids padded with <pad>, and (B, L) True where a token is real."""
        encoded = [self.encode(t) for t in texts]
        length = max(len(e) for e in encoded)
        tokens = torch.zeros(len(texts), length, dtype=torch.long)
        for i, e in enumerate(encoded):
            tokens[i, : len(e)] = torch.tensor(e)
        return tokens, tokens != 0


class TransformerBlock(nn.Module):
    """Pre-norm self-attention + MLP over the caption's tokens."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.norm1 = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim))

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        B, L, D = x.shape
        q, k, v = self.qkv(self.norm1(x)).view(B, L, 3, self.heads, D // self.heads).permute(2, 0, 3, 1, 4)
        # q, k, v: (B, heads, L, D/heads); padding is never attended to.
        h = F.scaled_dot_product_attention(q, k, v, attn_mask=mask[:, None, None, :])
        x = x + self.proj(h.transpose(1, 2).reshape(B, L, D))
        return x + self.mlp(self.norm2(x))


class TextEncoder(nn.Module):
    def __init__(self, config: PixelDiffusionConfig):
        super().__init__()
        d = config.text_dim
        self.token_emb = nn.Embedding(config.vocab_size, d)
        self.pos_emb = nn.Embedding(config.max_tokens, d)
        heads = config.attention_heads
        self.blocks = nn.ModuleList(TransformerBlock(d, heads) for _ in range(config.text_layers))
        self.norm = nn.LayerNorm(d)

    def forward(self, tokens: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # tokens, mask: (B, L) -> token vectors (B, L, D) and their mean over real tokens (B, D)
        L = tokens.shape[1]
        x = self.token_emb(tokens) + self.pos_emb(torch.arange(L, device=tokens.device))
        for block in self.blocks:
            x = block(x, mask)
        x = self.norm(x)
        m = mask.unsqueeze(-1).to(x.dtype)
        pooled = (x * m).sum(1) / m.sum(1).clamp(min=1)
        return x, pooled


# -- the UNet -----------------------------------------------------------------------


def timestep_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    """Sinusoidal embedding of (B,) timesteps -> (B, dim), as in the Transformer and DDPM."""
    half = dim // 2
    freqs = torch.exp(-math.log(10_000) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    angles = t.float()[:, None] * freqs[None]
    return torch.cat([angles.cos(), angles.sin()], dim=1)


def group_norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(min(8, channels // 4) or 1, channels)


class ResBlock(nn.Module):
    """Two 3x3 convolutions; the embedding sets a scale and shift between them."""

    def __init__(self, c_in: int, c_out: int, emb_dim: int, dropout: float):
        super().__init__()
        self.norm1 = group_norm(c_in)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1)
        self.emb = nn.Linear(emb_dim, 2 * c_out)
        self.norm2 = group_norm(c_out)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1)
        nn.init.zeros_(self.conv2.weight)  # each block starts as the identity
        nn.init.zeros_(self.conv2.bias)
        self.skip = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        # x: (B, C_in, H, W), emb: (B, E) -> (B, C_out, H, W)
        h = self.conv1(F.silu(self.norm1(x)))
        scale, shift = self.emb(F.silu(emb))[:, :, None, None].chunk(2, dim=1)
        h = self.norm2(h) * (1 + scale) + shift
        h = self.conv2(self.dropout(F.silu(h)))
        return self.skip(x) + h


class ImageTextAttention(nn.Module):
    """Each pixel attends to all pixels and to the caption's tokens at once."""

    def __init__(self, channels: int, text_dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.norm = group_norm(channels)
        self.qkv = nn.Linear(channels, 3 * channels)
        self.text_kv = nn.Linear(text_dim, 2 * channels)
        self.proj = nn.Linear(channels, channels)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def forward(self, x: torch.Tensor, text: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        # x: (B, C, H, W), text: (B, L, D), mask: (B, L)
        B, C, H, W = x.shape
        nh, hd = self.heads, C // self.heads
        h = self.norm(x).flatten(2).transpose(1, 2)  # (B, HW, C)
        q, k, v = self.qkv(h).view(B, H * W, 3, nh, hd).permute(2, 0, 3, 1, 4)  # each (B, nh, HW, hd)
        tk, tv = self.text_kv(text).view(B, -1, 2, nh, hd).permute(2, 0, 3, 1, 4)  # each (B, nh, L, hd)
        k, v = torch.cat([k, tk], dim=2), torch.cat([v, tv], dim=2)  # (B, nh, HW + L, hd)
        keep = torch.cat([mask.new_ones(B, H * W), mask], dim=1)  # (B, HW + L)
        h = F.scaled_dot_product_attention(q, k, v, attn_mask=keep[:, None, None, :])
        h = self.proj(h.transpose(1, 2).reshape(B, H * W, C))  # (B, HW, C)
        return x + h.transpose(1, 2).view(B, C, H, W)


class UNet(nn.Module):
    """A small DDPM UNet. With patch_size 2 the image is folded into 2x2 pixel patches
    (space to depth) first, so the convolutions run at half the resolution."""

    def __init__(self, config: PixelDiffusionConfig):
        super().__init__()
        chs, E, n_res, p = list(config.channels), config.emb_dim, config.res_blocks, config.patch_size
        self.patch_size = p
        self.time_dim = chs[0]
        self.time_mlp = nn.Sequential(nn.Linear(chs[0], E), nn.SiLU(), nn.Linear(E, E))
        self.text_mlp = nn.Sequential(nn.Linear(config.text_dim, E), nn.SiLU(), nn.Linear(E, E))
        attn = lambda c: ImageTextAttention(c, config.text_dim, config.attention_heads)  # noqa: E731
        block = lambda c_in, c_out: ResBlock(c_in, c_out, E, config.dropout)  # noqa: E731

        self.conv_in = nn.Conv2d(3 * p * p, chs[0], 3, padding=1)
        # Going down: at each resolution n_res blocks (their outputs are the skips), then halve.
        self.down = nn.ModuleList()
        skips, c = [], chs[0]
        for level, width in enumerate(chs):
            stage = nn.ModuleList()
            for _ in range(n_res):
                stage.append(block(c, width))
                c = width
                skips.append(c)
            self.down.append(stage)
        self.down_attn = attn(c)  # after the last block at the lowest resolution
        self.mid = nn.ModuleList([block(c, c), attn(c), block(c, c)])
        # Going up: at each resolution n_res blocks, each fed one skip, then double.
        self.up = nn.ModuleList()
        for level, width in reversed(list(enumerate(chs))):
            stage = nn.ModuleList()
            for _ in range(n_res):
                stage.append(block(c + skips.pop(), width))
                c = width
            self.up.append(stage)
        self.up_attn = attn(chs[-1])  # after the blocks at the lowest resolution
        self.norm_out = group_norm(c)
        self.conv_out = nn.Conv2d(c, 3 * p * p, 3, padding=1)
        nn.init.zeros_(self.conv_out.weight)
        nn.init.zeros_(self.conv_out.bias)

    def forward(self, x, t, text, pooled, mask):
        # x: (B, 3, S, S), t: (B,), text: (B, L, D), pooled: (B, D), mask: (B, L) -> (B, 3, S, S)
        emb = self.time_mlp(timestep_embedding(t, self.time_dim).to(x.dtype))  # (B, E)
        emb = emb + self.text_mlp(pooled)
        if self.patch_size > 1:
            x = F.pixel_unshuffle(x, self.patch_size)  # (B, 3p², S/p, S/p)
        h = self.conv_in(x)  # (B, C0, S/p, S/p)
        skips = []
        for level, stage in enumerate(self.down):
            if level > 0:
                h = F.avg_pool2d(h, 2)  # (B, C, H/2, W/2)
            for blk in stage:
                h = blk(h, emb)
                skips.append(h)
        h = skips[-1] = self.down_attn(h, text, mask)
        h = self.mid[0](h, emb)
        h = self.mid[1](h, text, mask)
        h = self.mid[2](h, emb)
        for level, stage in enumerate(self.up):
            if level > 0:
                h = F.interpolate(h, scale_factor=2.0, mode="nearest")  # (B, C, 2H, 2W)
            for blk in stage:
                h = blk(torch.cat([h, skips.pop()], dim=1), emb)
            if level == 0:
                h = self.up_attn(h, text, mask)
        h = self.conv_out(F.silu(self.norm_out(h)))
        if self.patch_size > 1:
            h = F.pixel_shuffle(h, self.patch_size)  # (B, 3, S, S)
        return h


class PixelDiffusion(nn.Module):
    """The text encoder and the UNet: (x_t, t, caption tokens) -> the UNet's prediction."""

    def __init__(self, config: PixelDiffusionConfig):
        super().__init__()
        self.config = config
        self.tokenizer = CaptionTokenizer(config.vocab, config.max_tokens)
        self.text = TextEncoder(config)
        self.unet = UNet(config)

    def encode_text(self, tokens: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.text(tokens, mask)

    def forward(self, x, t, tokens=None, mask=None, *, text=None, pooled=None):
        # Either caption tokens (B, L) with their mask, or an already encoded text (B, L, D) + pooled (B, D).
        if text is None:
            text, pooled = self.encode_text(tokens, mask)
        return self.unet(x, t, text.to(x.dtype), pooled.to(x.dtype), mask)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())
