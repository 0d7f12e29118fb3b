"""Weighted and long prompts for CLIP models, through compel.

Stable Diffusion 1.x/2.x and SDXL read a prompt through CLIP, which sees 77
tokens and gives every word the same weight. People write prompts in A1111's
syntax, which does better on both counts:

    (word:1.3)   weight 1.3          (word)   1.1          ((word))   1.21
    [word]       1/1.1               \\( \\)    literal brackets
    BREAK        start a new 77-token chunk here

`prompt_embeddings(pipe, prompts, negatives)` turns prompts written that way
into the pipeline's `prompt_embeds` / `negative_prompt_embeds` (and, for SDXL,
the pooled ones): the A1111 syntax is parsed here (`a1111_fragments`), and
compel's `EmbeddingsProvider` weights the fragments and encodes a long prompt in
77-token chunks (`truncate=False`), split at punctuation where it can be; the
positive and negative embeddings are padded to the same number of chunks. For
SDXL both encoders' penultimate hidden states (not normalised) sit side by side
and the pooled embedding comes from the second, as with compel's
`requires_pooled=[False, True]`, except that it reads the prompt's words
without the syntax (compel's would read "(fox:1.3)" as words).

A prompt without weights and under 77 tokens gives exactly the embeddings the
pipeline would make from the text itself (measured bit-identical on SD 1.x and
SDXL on CPU), so callers can use this for every prompt of those models.

Why parse A1111 here rather than convert it to compel's syntax (`word+`,
`(word)1.3`) and let compel parse it: compel's parser cannot keep every text as
written. A word ending in + or - (`C++ code`, `x- y`) becomes a weight and there
is no escape for it (a backslash stays in the text). `a1111_to_compel(text)`
still writes the compel spelling of a prompt, for people who use compel
elsewhere; it has that one limitation.

Weights are applied the way compel applies them (up-weighting scales a token's
embedding away from the empty prompt's; down-weighting blends towards the
prompt without that token), not with A1111's arithmetic, so a weighted prompt
does not reproduce an A1111 image exactly. Prompt editing (`[a:b:0.5]`) and
alternation (`[a|b]`) are not supported; their brackets act as A1111's
attention brackets would. Multi-vector textual-inversion tokens are not
expanded (artbot loads no textual inversions).

`clip_skip` counts as diffusers does: the number of final text-encoder layers
skipped (1 = the penultimate layer, what A1111 calls "Clip skip 2"). compel's
own option covers only 1, and its normalised variant fails on transformers 5
(CLIPTextModel lost its `text_model`), as does diffusers' own `clip_skip` for SD
1.x, so the hidden layer is picked here (`_hidden_layer_provider`).

Other pipelines (SD3, Flux, PixArt: T5 encoders with their own long context)
get None: the caller passes the plain prompts.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from artbot.errors import InvalidRequest

# One chunk of a prompt (a prompt has one more than it has BREAKs): its (text, weight) pieces.
Fragments = list[tuple[str, float]]

ROUND_WEIGHT = 1.1  # (word)
SQUARE_WEIGHT = 1 / 1.1  # [word]

# The pieces of A1111's attention syntax, in the order tried.
_PIECE = re.compile(
    r"""
    \\[()\[\]\\]                                  # an escaped bracket or backslash
  | \(                                            # open a (word) group
  | \[                                            # open a [word] group
  | :\s*(?P<weight>[+-]?(?:\d+\.?\d*|\.\d+))\s*\) # close a group with an explicit weight
  | \)                                            # close a (word) group
  | \]                                            # close a [word] group
  | [^\\()\[\]:]+                                 # plain text
  | [\\:]                                         # a lone backslash or colon: plain text
    """,
    re.VERBOSE,
)
_BREAK = re.compile(r"\s*\bBREAK\b\s*")


# -- A1111 syntax (pure: no torch) ------------------------------------------------


def a1111_fragments(text: str) -> list[Fragments]:
    """Parse A1111 prompt syntax into chunks (split at BREAK) of (text, weight) fragments.

    Neighbouring fragments of the same weight are merged, so a prompt without
    syntax is one fragment: `a1111_fragments("a red fox") == [[("a red fox", 1.0)]]`.
    A bracket left open weights the rest of the prompt, and one closed without
    being opened is text, as in A1111. Weights below 0 count as 0.
    """
    pieces: list[list] = []  # [text, weight], or [None, None] for a BREAK
    round_open: list[int] = []  # where each open (group starts in `pieces`
    square_open: list[int] = []

    def scale(start: int, factor: float) -> None:
        for piece in pieces[start:]:
            if piece[0] is not None:
                piece[1] *= factor

    for match in _PIECE.finditer(text):
        piece, weight = match.group(0), match.group("weight")
        if piece.startswith("\\") and len(piece) == 2:
            pieces.append([piece[1], 1.0])
        elif piece == "(":
            round_open.append(len(pieces))
        elif piece == "[":
            square_open.append(len(pieces))
        elif weight is not None and round_open:
            scale(round_open.pop(), float(weight))
        elif piece == ")" and round_open:
            scale(round_open.pop(), ROUND_WEIGHT)
        elif piece == "]" and square_open:
            scale(square_open.pop(), SQUARE_WEIGHT)
        else:
            for i, part in enumerate(_BREAK.split(piece)):
                if i:
                    pieces.append([None, None])
                pieces.append([part, 1.0])
    for start in round_open:
        scale(start, ROUND_WEIGHT)
    for start in square_open:
        scale(start, SQUARE_WEIGHT)

    chunks: list[Fragments] = [[]]
    for piece_text, weight in pieces:
        if piece_text is None:
            chunks.append([])
            continue
        if not piece_text:
            continue
        weight = max(0.0, weight)
        chunk = chunks[-1]
        if chunk and chunk[-1][1] == weight:
            chunk[-1] = (chunk[-1][0] + piece_text, weight)
        else:
            chunk.append((piece_text, weight))
    return [chunk or [("", 1.0)] for chunk in chunks]


def plain_text(text: str) -> str:
    """The words of an A1111 prompt without its syntax (what pooled embeddings read)."""
    return " ".join("".join(t for t, _ in chunk) for chunk in a1111_fragments(text))


def _compel_escape(text: str) -> str:
    # (compel keeps a backslash before anything else, so a backslash is written as it is.)
    return re.sub(r'([()"])', r"\\\1", text)


def _compel_weight(weight: float) -> str:
    return f"{round(weight, 4):g}"


def a1111_to_compel(text: str) -> str:
    """The same prompt in compel's syntax: `(word:1.3)` -> `(word)1.3`, `[word]` ->
    `(word)0.9091`, `BREAK` -> `("a", "b").and()`.

    compel reads a word ending in + or - before a space as a weight and has no
    escape for it; such text is written as it is (see the module's docstring).
    """
    def chunk_text(chunk: Fragments) -> str:
        out = []
        for fragment, weight in chunk:
            escaped = _compel_escape(fragment)
            if weight == 1.0:
                out.append(escaped)
            else:
                # compel drops the space next to a group; keep the words apart.
                lead = " " if escaped[:1].isspace() else ""
                tail = " " if escaped[-1:].isspace() else ""
                out.append(f"{lead}({escaped.strip()}){_compel_weight(weight)}{tail}")
        return "".join(out)

    chunks = a1111_fragments(text)
    if len(chunks) == 1:
        return chunk_text(chunks[0])
    quoted = ", ".join(f'"{chunk_text(c)}"' for c in chunks)
    return f"({quoted}).and()"


# -- embeddings -------------------------------------------------------------------


@dataclass
class _Encoder:
    """One text encoder of the pipeline, as compel reads it."""

    provider: object  # a compel.EmbeddingsProvider
    pooled: bool  # SDXL's last encoder: it also gives the pooled embedding


def prompt_embeddings(
    pipe,
    prompts: list[str],
    negatives: list[str] | None,
    clip_skip: int | None = None,
) -> dict | None:
    """The pipeline's keyword arguments for `prompts` and `negatives` (A1111 syntax, any
    length) in place of `prompt`/`negative_prompt`, or None for a pipeline that is not
    CLIP-based (then pass the plain prompts).

    SD: `prompt_embeds`, `negative_prompt_embeds`. SDXL: those and
    `pooled_prompt_embeds`, `negative_pooled_prompt_embeds`. With no negatives,
    the negative is what the pipeline itself would use: the empty prompt's
    embeddings, or zeros for SDXL models configured `force_zeros_for_empty_prompt`.
    One negative serves every prompt. Raises InvalidRequest for a clip skip the
    text encoder has not the layers for.
    """
    kind = _clip_kind(pipe)
    if kind is None:
        return None
    import torch

    encoders = _encoders(pipe, kind, clip_skip)
    n = len(prompts)
    zero_negative = (negatives is None and kind == "sdxl"
                     and getattr(pipe.config, "force_zeros_for_empty_prompt", False))
    texts: list[str] = []  # the negative prompts to encode
    if not zero_negative:
        texts = list(negatives) if negatives else [""]
        if len(texts) == 1:
            texts *= n
        if len(texts) != n:
            raise ValueError(f"{len(texts)} negative prompts for {n} prompts")

    with torch.no_grad():
        cache: dict[str, tuple] = {}
        for text in prompts + texts:
            if text not in cache:
                cache[text] = _encode(encoders, text)
        positive = [cache[p] for p in prompts]
        negative = [cache[t] for t in texts]

        # Pad every prompt to as many chunks as the longest has, with the empty prompt's chunk.
        longest = max(e.shape[1] for e, _ in positive + negative)
        empty = torch.cat([e.provider.empty_z for e in encoders], dim=-1)  # (1, 77, D)
        embeds = [_pad(e, longest, empty) for e, _ in positive]
        if zero_negative:
            negative_embeds = [torch.zeros_like(e) for e in embeds]
            negative = [(None, torch.zeros_like(p)) for _, p in positive]
        else:
            negative_embeds = [_pad(e, longest, empty) for e, _ in negative]

        kwargs = {
            "prompt_embeds": torch.cat(embeds),  # (B, 77 * chunks, D)
            "negative_prompt_embeds": torch.cat(negative_embeds),
        }
        if kind == "sdxl":
            kwargs["pooled_prompt_embeds"] = torch.cat([p for _, p in positive])  # (B, P)
            kwargs["negative_pooled_prompt_embeds"] = torch.cat([p for _, p in negative])
    return kwargs


def _clip_kind(pipe) -> str | None:
    """'sd' (one CLIP encoder), 'sdxl' (two, pooled from the second) or None."""
    from diffusers import (
        StableDiffusionImg2ImgPipeline,
        StableDiffusionInpaintPipeline,
        StableDiffusionPipeline,
        StableDiffusionXLImg2ImgPipeline,
        StableDiffusionXLInpaintPipeline,
        StableDiffusionXLPipeline,
    )

    if isinstance(pipe, (StableDiffusionXLPipeline, StableDiffusionXLImg2ImgPipeline,
                         StableDiffusionXLInpaintPipeline)):
        return "sdxl"
    if isinstance(pipe, (StableDiffusionPipeline, StableDiffusionImg2ImgPipeline,
                         StableDiffusionInpaintPipeline)):
        return "sd" if getattr(pipe, "text_encoder", None) is not None else None
    return None


def _encoders(pipe, kind: str, clip_skip: int | None) -> list[_Encoder]:
    from compel import EmbeddingsProvider, ReturnedEmbeddingsType, SplitLongTextMode

    pairs = [(pipe.tokenizer, pipe.text_encoder)]
    if kind == "sdxl":
        # (The SDXL refiner has only the second encoder.)
        pairs = [(t, e) for t, e in pairs + [(pipe.tokenizer_2, pipe.text_encoder_2)] if e is not None]
    # As diffusers reads them: SD the last layer, normalised; SDXL the penultimate, not normalised.
    layer = -1 if kind == "sd" else -2
    encoders = []
    for i, (tokenizer, text_encoder) in enumerate(pairs):
        options = dict(
            tokenizer=tokenizer,
            text_encoder=text_encoder,
            truncate=False,  # long prompts: as many 77-token chunks as it takes
            padding_attention_mask_value=1,
            # A chunk ends at a comma or full stop where there is one, as A1111's do.
            split_long_text_mode=SplitLongTextMode.PHRASES,
            device=text_encoder.device,
        )
        if clip_skip:
            layers = text_encoder.config.num_hidden_layers
            most = layers + layer  # hidden_states holds the embeddings and each layer's output
            if not 0 < clip_skip <= most:
                raise InvalidRequest(
                    f"Clip skip {clip_skip} does not fit this model: its text encoder has {layers} "
                    f"layers, so clip skip can be 1 to {most}."
                )
            provider = _hidden_layer_provider()(layer=layer - clip_skip, normalize=(kind == "sd"), **options)
        else:
            returned = (ReturnedEmbeddingsType.LAST_HIDDEN_STATES_NORMALIZED if kind == "sd"
                        else ReturnedEmbeddingsType.PENULTIMATE_HIDDEN_STATES_NON_NORMALIZED)
            provider = EmbeddingsProvider(returned_embeddings_type=returned, **options)
        encoders.append(_Encoder(provider, pooled=(kind == "sdxl" and i == len(pairs) - 1)))
    return encoders


def _encode(encoders: list[_Encoder], text: str):
    """(embeddings (1, 77 * chunks, sum of the encoders' widths), pooled (1, P) or None) of one prompt."""
    import torch

    # Whitespace alone has no tokens (and compel cannot down-weight a fragment without any).
    chunks = [[(t, w) for t, w in chunk if t.strip()] or [("", 1.0)] for chunk in a1111_fragments(text)]
    per_encoder, pooled = [], None
    for encoder in encoders:
        provider = encoder.provider
        device = provider.text_encoder.device
        parts = [
            provider.get_embeddings_for_weighted_prompt_fragments(
                text_batch=[[t for t, _ in chunk]], fragment_weights_batch=[[w for _, w in chunk]],
                device=device,
            )
            for chunk in chunks  # BREAK: each part starts a chunk of its own
        ]
        per_encoder.append(torch.cat(parts, dim=1))
        if encoder.pooled:
            # From the words alone (compel's own reads the syntax as words too), first 77
            # tokens, as the pipeline does.
            pooled = provider.get_pooled_embeddings([plain_text(text)], device=device)
    longest = max(e.shape[1] for e in per_encoder)
    per_encoder = [_pad(e, longest, enc.provider.empty_z) for e, enc in zip(per_encoder, encoders)]
    return torch.cat(per_encoder, dim=-1), pooled


def _pad(embeds, length: int, empty):
    """(1, T, D) embeddings made `length` tokens long with copies of `empty`, (1, 77, D)."""
    import torch

    repeats = (length - embeds.shape[1]) // empty.shape[1]
    if repeats <= 0:
        return embeds
    return torch.cat([embeds] + [empty.to(embeds)] * repeats, dim=1)


_HIDDEN_LAYER_PROVIDER = None


def _hidden_layer_provider():
    """compel's EmbeddingsProvider reading the hidden state `layer` (counted from the end)
    of the text encoder, through its final layer norm if `normalize`: diffusers' clip_skip.
    (Defined on first use, so that importing this module needs neither torch nor compel.)"""
    global _HIDDEN_LAYER_PROVIDER
    if _HIDDEN_LAYER_PROVIDER is None:
        from compel import EmbeddingsProvider

        class HiddenLayerProvider(EmbeddingsProvider):
            def __init__(self, *, layer: int, normalize: bool, **options):
                super().__init__(**options)
                self.layer, self.normalize = layer, normalize

            def _encode_token_ids_to_embeddings(self, token_ids, attention_mask=None):
                output = self.text_encoder(token_ids, attention_mask, output_hidden_states=True,
                                           return_dict=True)
                hidden = output.hidden_states[self.layer]
                if self.normalize:
                    # transformers 5 flattened CLIPTextModel: the layer norm sits on the model.
                    model = getattr(self.text_encoder, "text_model", self.text_encoder)
                    hidden = model.final_layer_norm(hidden)
                return hidden

        _HIDDEN_LAYER_PROVIDER = HiddenLayerProvider
    return _HIDDEN_LAYER_PROVIDER
