"""A small Vision Transformer (ViT), with its model-level defenses.

Dosovitskiy et al., "An Image is Worth 16x16 Words: Transformers for Image Recognition
at Scale", ICLR 2021, in the small configuration of Scheliga et al., "Combining
stochastic defenses to resist gradient inversion: an ablation study", section 6.2:
patch size 4, 4 transformer blocks, hidden size 256, 16 attention heads, GELU, 10
output classes.

The paper leaves the rest open; jgi follows the authors' public ViT
(dAI-SY-Group/ConvolutionalVariationalBottleneck: ``src/models/ViT.py``,
``configs/models/ViT.yaml`` and ``ViTCVB.yaml``):

- Embedding: non-overlapping p x p patches, each flattened in (row, column, channel)
  order and mapped by a Linear(p * p * C, 256) without bias; a learned class token is
  prepended and a learned position embedding (one per patch plus the class token)
  added. jgi stores the patch embedding as a p x p, stride-p convolution weight
  (p, p, C, 256): the same function, since its (kh, kw, C) flattening is the authors'
  ``(p1 p2 c)`` order, and ``conv_impl`` picks its formulation. Class token and
  position embedding are initialised N(0, 1) (``torch.randn``), as the authors do.
- Blocks: pre-norm. ``x + Attention(LN(x))``, then ``x + MLP(LN(x))``; LayerNorm eps
  1e-6 with scale 1 and shift 0. Attention: 16 heads of size 16, query/key/value
  Linear(256, 256) without bias, softmax(q k^T / sqrt(16)) v, output projection
  Linear(256, 256) without bias (``bias: False`` in the config).
- MLP: width 256 (``transformer_block_mlp.width``), i.e. an MLP ratio of 1, no biases.
  Each of its two layers is the authors' ``MLPBlock``: Linear -> [dropout] -> GELU, so
  GELU also follows the second Linear, before the residual sum. This differs from the
  original ViT (no activation after the second layer) and is kept because it is the
  network the paper's numbers come from. GELU is the exact (erf) form, as
  ``torch.nn.GELU``.
- Head: final LayerNorm, the class token (not mean pooling), Linear(256, classes)
  without bias (the authors' classifier is an ``MLPBlock`` with ``use_bias=bias``,
  False). Sharp edge: without a bias and after a LayerNorm, the column-sum rule of
  :func:`jgi.attacks.labels.idlg_labels` is unreliable here (the normalised features
  sum to about 0); the paper's setting gives the labels to the attacker.
- Initialisation: PyTorch's defaults (:func:`jgi.models.layers.dense_init`,
  :func:`~jgi.models.layers.conv_init`), which the authors' code keeps.
- Dropout (rate p; the ablation uses 0.25): in every ``MaskDropout`` slot of the
  authors' ViT, all at rate p, as the DIA authors' ViT (dAI-SY-Group/
  DropoutInversionAttack, ``src/models/vit.py``) sets ``dropout = emb_dropout = p``:
  on the embedded tokens (``"embedding"``), on the attention probabilities
  (``"blockI.attention"``, shape (B, heads, T, T)), after the attention's output
  projection (``"blockI.projection"``), and after each MLP Linear, before its GELU
  (``"blockI.mlp1"``, ``"blockI.mlp2"``). The authors' configs set these rates to 0
  for their no-dropout runs; the paper does not say which slots its dropout runs used.
- CVB after block 0 (kernel 3, beta 0.1; the authors' ``ViTCVB.yaml``), tokens viewed
  as channels, as the authors' ``VBViT`` does: the (B, T, 256) token sequence becomes a
  feature map with T channels on a 16 x 16 grid (each token's 256 features reshaped
  row-major), i.e. NCHW (B, T, 16, 16) in the authors' code and NHWC (B, 16, 16, T)
  here; the CVB (K = T / 2 latent channels, e.g. 32 for the 65 tokens of a 32x32 input)
  returns a map of the same shape, which is read back as tokens. The convolutions thus
  mix neighbouring features of all tokens; this needs a square hidden size.
- PRECODE (K = 256, beta 1e-3, KL in bits) by default in the CVB's slot, after
  transformer block 0 (``precode_position="slot0"``: the CVB framework's position 0,
  where the ablation paper's PRECODE sits by AUTHORS-CODE.md's high-confidence
  inference; see :mod:`jgi.models.cnn`): the (B, T, 256) token sequence flattened to
  T * 256 features (16,640 for the 65 tokens of a 32x32 input), encoded, decoded and
  read back as tokens, as the authors' fully connected bottleneck flattens whatever it
  is given. ``precode_position="classifier"``: on the class token after the final
  LayerNorm, just before the classifier.

Deviations from the authors' code: none in the function. jgi's KL for the bottlenecks
is the one of :mod:`jgi.models.bottleneck` (see there).

Parameters (10 classes): 1,609,216 on 32x32x3 inputs (65 tokens) and 1,597,184 on
28x28x1 (50 tokens): patch embedding p*p*C*256, class token 256, positions T*256, four
blocks of 394,240 (two LayerNorms 1,024, four attention matrices 262,144, MLP 131,072),
final LayerNorm 512, classifier 2,560. PRECODE adds 16,640 * 512 + 512 + 256 * 16,640 +
16,640 = 12,796,672 after block 0 (32x32 inputs), 131,584 + 65,792 = 197,376 before the
classifier. The input's height and width must be multiples
of the patch size, and the params fix the number of tokens.

Params: ``{"embedding": {"patch": {"w"}, "cls", "pos"}, "block0", [bottleneck],
"block1", ..., "norm", [bottleneck], "dense"}``, each block ``{"norm1", "attention":
{"query", "key", "value", "out"}, "norm2", "mlp1", "mlp2"}``.

Noise: ``{"dropout": {"embedding", "block0.attention", "block0.projection",
"block0.mlp1", "block0.mlp2", ...}, "eps": eps}``, keys absent when the layer is
absent; CVB eps is (B, 16, 16, T // 2) (at least 8 channels), PRECODE eps (B, 256).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from jax import lax

from jgi.models import bottleneck as vb
from jgi.models import dropout as do
from jgi.models import layers
from jgi.models.interface import Model, check_noise_keys, check_options

# The authors' ViTCVB.yaml (CVB after block 0) and PRECODE's recommended settings.
CVB_KERNEL, CVB_BETA = 3, 0.1
PRECODE_K, PRECODE_BETA = 256, 1e-3
LN_EPS = 1e-6


def layer_norm_init(features: int) -> dict:
    return {"scale": jnp.ones((features,), jnp.float32),
            "bias": jnp.zeros((features,), jnp.float32)}


def layer_norm(params: dict, x: jax.Array) -> jax.Array:
    """LayerNorm over the last axis, biased variance, eps 1e-6 (the authors' setting)."""
    mean = jnp.mean(x, axis=-1, keepdims=True)
    var = jnp.mean(jnp.square(x - mean), axis=-1, keepdims=True)
    return (x - mean) * lax.rsqrt(var + LN_EPS) * params["scale"] + params["bias"]


def _linear(params: dict, x: jax.Array) -> jax.Array:
    """A bias-free Linear on the last axis of (..., in)."""
    return x @ params["w"]


def vit(num_classes: int = 10, dropout: float = 0.0, bottleneck: str | None = None,
        conv_impl: str = "patches", patch_size: int = 4, depth: int = 4, width: int = 256,
        heads: int = 16, mlp_width: int = 256, precode_position: str = "slot0") -> Model:
    """Builds the paper's ViT (see the module docstring for every choice).

    Args:
      num_classes: outputs of the classifier (paper: 10).
      dropout: dropout rate in every dropout slot (0 = none; paper 0.25).
      bottleneck: None, "precode" (where ``precode_position`` says) or "cvb" (after
        block 0).
      conv_impl: "patches" or "lax": the formulation of the patch embedding and the
        CVB's convolutions; both give the same function.
      patch_size: side of the square patches (paper: 4).
      depth: transformer blocks (paper: 4).
      width: hidden size (paper: 256); a perfect square with a CVB.
      heads: attention heads (paper: 16); must divide ``width``.
      mlp_width: hidden units of each block's MLP (authors: 256).
      precode_position: "slot0" (default; after block 0) or "classifier" (on the class
        token before the classifier). Ignored, and not recorded, without
        ``bottleneck="precode"``.

    Returns:
      A :class:`~jgi.models.interface.Model` named "vit".
    """
    check_options("vit", conv_impl=conv_impl, conv_impls=layers.CONV_IMPLS,
                  bottleneck=bottleneck, bottlenecks=vb.BOTTLENECKS, dropout=dropout)
    vb.check_precode_position("vit", precode_position)
    pc_early = bottleneck == "precode" and precode_position == "slot0"
    pc_late = bottleneck == "precode" and precode_position == "classifier"
    if width % heads:
        raise ValueError(f"vit: {heads} heads do not divide the width {width}.")
    side = math.isqrt(width)
    if bottleneck == "cvb" and side * side != width:
        raise ValueError(f"vit: the CVB views each token's {width} features as a square "
                         f"grid, so the width must be a perfect square (e.g. 256), got "
                         f"{width}.")
    if depth < 1 or patch_size < 1:
        raise ValueError(f"vit: depth and patch_size must be >= 1, got {depth} and "
                         f"{patch_size}.")
    head_size = width // heads

    def num_tokens(input_shape):
        if len(input_shape) != 3:
            raise ValueError(f"vit: input_shape must be (H, W, C), got {tuple(input_shape)}.")
        h, w, _ = input_shape
        if h % patch_size or w % patch_size or h < 1 or w < 1:
            raise ValueError(f"vit: input of {h}x{w} does not split into {patch_size}x"
                             f"{patch_size} patches; height and width must be multiples of "
                             f"{patch_size} (e.g. 28x28 or 32x32).")
        return (h // patch_size) * (w // patch_size) + 1  # patches + class token

    def init(key: jax.Array, input_shape: tuple[int, int, int]) -> dict:
        t = num_tokens(input_shape)
        k_patch, k_cls, k_pos, k_blocks, k_dense, k_vb = jax.random.split(key, 6)
        params = {"embedding": {
            "patch": layers.conv_init(k_patch, patch_size, input_shape[-1], width, bias=False),
            "cls": jax.random.normal(k_cls, (width,), jnp.float32),
            "pos": jax.random.normal(k_pos, (t, width), jnp.float32)}}
        for i in range(depth):
            kq, kk, kv, ko, k1, k2 = jax.random.split(jax.random.fold_in(k_blocks, i), 6)
            params[f"block{i}"] = {
                "norm1": layer_norm_init(width),
                "attention": {"query": layers.dense_init(kq, width, width, bias=False),
                              "key": layers.dense_init(kk, width, width, bias=False),
                              "value": layers.dense_init(kv, width, width, bias=False),
                              "out": layers.dense_init(ko, width, width, bias=False)},
                "norm2": layer_norm_init(width),
                "mlp1": layers.dense_init(k1, width, mlp_width, bias=False),
                "mlp2": layers.dense_init(k2, mlp_width, width, bias=False)}
        params["norm"] = layer_norm_init(width)
        params["dense"] = layers.dense_init(k_dense, width, num_classes, bias=False)
        if bottleneck == "cvb":
            params["bottleneck"] = vb.cvb_init(k_vb, t, CVB_KERNEL)
        elif pc_early:
            params["bottleneck"] = vb.precode_init(k_vb, t * width, PRECODE_K)
        elif pc_late:
            params["bottleneck"] = vb.precode_init(k_vb, width, PRECODE_K)
        return params

    def mask_shapes(batch_size: int, t: int) -> dict:
        shapes = {"embedding": (batch_size, t, width)}
        for i in range(depth):
            shapes[f"block{i}.attention"] = (batch_size, heads, t, t)
            shapes[f"block{i}.projection"] = (batch_size, t, width)
            shapes[f"block{i}.mlp1"] = (batch_size, t, mlp_width)
            shapes[f"block{i}.mlp2"] = (batch_size, t, width)
        return shapes

    def sample_noise(key: jax.Array, input_shape, batch_size: int) -> dict:
        t = num_tokens(input_shape)
        k_drop, k_eps = jax.random.split(key)
        noise = {}
        if dropout > 0:
            shapes = mask_shapes(batch_size, t)
            keys = jax.random.split(k_drop, len(shapes))
            noise["dropout"] = {name: do.sample_mask(k, shape, dropout)
                                for k, (name, shape) in zip(keys, shapes.items(), strict=True)}
        if bottleneck == "cvb":
            noise["eps"] = jax.random.normal(k_eps, vb.cvb_eps_shape(batch_size, side, side, t))
        elif bottleneck == "precode":
            noise["eps"] = jax.random.normal(k_eps, vb.precode_eps_shape(batch_size, PRECODE_K))
        return noise

    def drop(x, noise, name):
        if dropout == 0:
            return x
        return do.apply_mask(x, noise["dropout"][name], dropout, name=f"vit.dropout[{name}]")

    def attention(p, x, noise, name):
        b, t, _ = x.shape

        def split_heads(y):  # (B, T, D) -> (B, heads, T, head_size)
            return y.reshape(b, t, heads, head_size).transpose(0, 2, 1, 3)

        q, k, v = (split_heads(_linear(p[n], x)) for n in ("query", "key", "value"))
        scores = jnp.einsum("bhqd,bhkd->bhqk", q, k) / math.sqrt(head_size)
        probs = drop(jax.nn.softmax(scores, axis=-1), noise, f"{name}.attention")
        out = jnp.einsum("bhqk,bhkd->bhqd", probs, v).transpose(0, 2, 1, 3).reshape(b, t, -1)
        return drop(_linear(p["out"], out), noise, f"{name}.projection")

    def block(p, x, noise, name):
        x = x + attention(p["attention"], layer_norm(p["norm1"], x), noise, name)
        h = drop(_linear(p["mlp1"], layer_norm(p["norm2"], x)), noise, f"{name}.mlp1")
        h = jax.nn.gelu(h, approximate=False)
        h = jax.nn.gelu(drop(_linear(p["mlp2"], h), noise, f"{name}.mlp2"), approximate=False)
        return x + h

    def tokens_cvb(p, x, eps):
        """CVB on tokens as channels: (B, T, D) -> (B, s, s, T) -> CVB -> (B, T, D)."""
        b, t, _ = x.shape
        fmap = x.reshape(b, t, side, side).transpose(0, 2, 3, 1)
        out, penalty = vb.cvb_apply(p, fmap, eps, CVB_BETA, conv_impl=conv_impl)
        return out.transpose(0, 3, 1, 2).reshape(b, t, width), penalty

    def forward(params: dict, x: jax.Array, noise: dict):
        if x.ndim != 4:
            raise ValueError(f"vit: expected x of shape (batch, H, W, C), got "
                             f"{tuple(x.shape)}.")
        t = num_tokens(x.shape[1:])
        pos = params["embedding"]["pos"]
        if pos.shape[0] != t:
            raise ValueError(
                f"vit: params hold position embeddings for {pos.shape[0]} tokens, but "
                f"inputs of shape {tuple(x.shape[1:])} give {t}; initialise the params "
                f"with model.init(key, {tuple(x.shape[1:])}).")
        check_noise_keys("vit", noise, dropout=dropout, bottleneck=bottleneck)
        b = x.shape[0]
        patches = layers.conv(params["embedding"]["patch"], x, stride=patch_size,
                              padding="VALID", impl=conv_impl, name="vit.embedding")
        h = patches.reshape(b, t - 1, width)  # row-major over the patch grid
        cls = jnp.broadcast_to(params["embedding"]["cls"], (b, 1, width))
        h = jnp.concatenate([cls, h], axis=1) + pos
        h = drop(h, noise, "embedding")
        penalty = jnp.zeros((), jnp.float32)
        for i in range(depth):
            h = block(params[f"block{i}"], h, noise, f"block{i}")
            if i == 0 and bottleneck == "cvb":
                h, penalty = tokens_cvb(params["bottleneck"], h, noise["eps"])
            if i == 0 and pc_early:
                h, penalty = vb.precode_apply(params["bottleneck"], h, noise["eps"],
                                              PRECODE_BETA)
        z = layer_norm(params["norm"], h)[:, 0]  # the class token
        if pc_late:
            z, penalty = vb.precode_apply(params["bottleneck"], z, noise["eps"], PRECODE_BETA)
        return layers.dense(params["dense"], z, name="vit.dense"), penalty

    order = ["embedding", *(f"block{i}" for i in range(depth)), "norm"]
    if bottleneck == "cvb" or pc_early:
        order.insert(2, "bottleneck")
    elif pc_late:
        order.append("bottleneck")
    order.append("dense")
    options = (("num_classes", num_classes), ("dropout", dropout), ("bottleneck", bottleneck),
               ("conv_impl", conv_impl), ("patch_size", patch_size), ("depth", depth),
               ("width", width), ("heads", heads), ("mlp_width", mlp_width))
    if bottleneck == "precode":  # recorded for PRECODE models only (row ids of others hold)
        options += (("precode_position", precode_position),)
    return Model(name="vit", init=init, forward=forward, sample_noise=sample_noise,
                 classifier="dense", layer_order=tuple(order), dropout=dropout,
                 bottleneck=bottleneck, options=options)
