"""MemoryLlama: a LLaMA decoder whose MLPs at chosen layers are Memory+ product-key layers sharing one value table."""

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn
from transformers import initialization as init
from transformers.activations import ACT2FN
from transformers.cache_utils import Cache, DynamicCache
from transformers.generation import GenerationMixin
from transformers.masking_utils import create_causal_mask
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import BaseModelOutputWithPast, CausalLMOutputWithPast
from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS, dynamic_rope_update
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS, PreTrainedModel, slice_logits_to_keep
from transformers.processing_utils import Unpack
from transformers.utils import TransformersKwargs, can_return_tuple
from transformers.utils.generic import merge_with_config_defaults
from transformers.utils.output_capturing import capture_outputs

from .configuration_memory_llama import MemoryLlamaConfig

# ---------------------------------------------------------------------------------------------------------------------
# LLaMA building blocks. Each is marked "Mirrors transformers.models.llama.modeling_llama.<name>": written for this
# project, it computes what transformers' LLaMA block of that name computes, and lives here because a Hub
# remote-code folder should not depend on transformers' internal module layout. What keeps them in step:
# tests/test_memory_llama.py::test_from_llama_without_memory_layers_matches_llama_logits (a MemoryLlama without
# memory layers and LlamaForCausalLM on the same weights: same logits, loss and cached generation, eager and SDPA).
# Only the MLP differs on purpose (the standard, ungated ablation besides LLaMA's gated one).
# ---------------------------------------------------------------------------------------------------------------------


# Mirrors transformers.models.llama.modeling_llama.LlamaRMSNorm
class MemoryLlamaRMSNorm(nn.Module):
    """RMSNorm with a learnable gain, computed in float32 (as in LLaMA)."""

    def __init__(self, hidden_size: int, eps: float = 1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(hidden_size))
        self.variance_epsilon = eps

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        input_dtype = hidden_states.dtype
        hidden_states = hidden_states.to(torch.float32)
        variance = hidden_states.pow(2).mean(-1, keepdim=True)
        hidden_states = hidden_states * torch.rsqrt(variance + self.variance_epsilon)
        return self.weight * hidden_states.to(input_dtype)

    def extra_repr(self) -> str:
        return f"{tuple(self.weight.shape)}, eps={self.variance_epsilon}"


# Mirrors transformers.models.llama.modeling_llama.LlamaRotaryEmbedding
class MemoryLlamaRotaryEmbedding(nn.Module):
    """Rotary position embedding configured by `config.rope_parameters`; returns (cos, sin) per position."""

    def __init__(self, config: MemoryLlamaConfig):
        super().__init__()
        self.config = config
        self.max_seq_len_cached = config.max_position_embeddings
        self.original_max_seq_len = config.max_position_embeddings
        self.rope_type = config.rope_parameters["rope_type"]
        inv_freq, self.attention_scaling = self.rope_init_fn(config)
        # Non-persistent buffers are garbage after a meta-device load: `_init_weights` recomputes them.
        self.inv_freq = nn.Buffer(inv_freq, persistent=False)
        self.original_inv_freq = nn.Buffer(inv_freq.clone(), persistent=False)

    @property
    def rope_init_fn(self) -> Callable:
        if self.rope_type == "default":
            return self.compute_default_rope_parameters
        return ROPE_INIT_FUNCTIONS[self.rope_type]

    @staticmethod
    def compute_default_rope_parameters(
        config: MemoryLlamaConfig, device=None, **kwargs
    ) -> tuple[torch.Tensor, float]:
        base = config.rope_parameters["rope_theta"]
        dim = config.head_dim
        inv_freq = 1.0 / (base ** (torch.arange(0, dim, 2, dtype=torch.float, device=device) / dim))
        return inv_freq, 1.0

    @torch.no_grad()
    @dynamic_rope_update
    def forward(self, x: torch.Tensor, position_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        freqs = position_ids[..., None].float() * self.inv_freq.to(device=x.device, dtype=torch.float)
        emb = torch.cat((freqs, freqs), dim=-1)
        return (emb.cos() * self.attention_scaling).to(x.dtype), (emb.sin() * self.attention_scaling).to(x.dtype)


# Mirrors transformers.models.llama.modeling_llama.rotate_half
def rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


# Mirrors transformers.models.llama.modeling_llama.apply_rotary_pos_emb
def apply_rotary_pos_emb(q, k, cos, sin, unsqueeze_dim: int = 1):
    cos, sin = cos.unsqueeze(unsqueeze_dim), sin.unsqueeze(unsqueeze_dim)
    return (q * cos) + (rotate_half(q) * sin), (k * cos) + (rotate_half(k) * sin)


# Mirrors transformers.models.llama.modeling_llama.repeat_kv
def repeat_kv(hidden_states: torch.Tensor, n_rep: int) -> torch.Tensor:
    """(batch, kv_heads, seq, dim) -> (batch, kv_heads * n_rep, seq, dim), for grouped-query attention."""
    if n_rep == 1:
        return hidden_states
    batch, kv_heads, seq, dim = hidden_states.shape
    hidden_states = hidden_states[:, :, None].expand(batch, kv_heads, n_rep, seq, dim)
    return hidden_states.reshape(batch, kv_heads * n_rep, seq, dim)


# Mirrors transformers.models.llama.modeling_llama.eager_attention_forward
def eager_attention_forward(module, query, key, value, attention_mask, scaling, dropout=0.0, **kwargs):
    key = repeat_kv(key, module.num_key_value_groups)
    value = repeat_kv(value, module.num_key_value_groups)
    attn_weights = torch.matmul(query, key.transpose(2, 3)) * scaling
    if attention_mask is not None:
        attn_weights = attn_weights + attention_mask
    attn_weights = F.softmax(attn_weights, dim=-1, dtype=torch.float32).to(query.dtype)
    attn_weights = F.dropout(attn_weights, p=dropout, training=module.training)
    attn_output = torch.matmul(attn_weights, value).transpose(1, 2).contiguous()
    return attn_output, attn_weights


# Mirrors transformers.models.llama.modeling_llama.LlamaAttention
class MemoryLlamaAttention(nn.Module):
    """Causal multi-head attention with rotary positions and optional grouped key/value heads."""

    def __init__(self, config: MemoryLlamaConfig, layer_idx: int):
        super().__init__()
        self.config = config
        self.layer_idx = layer_idx
        self.head_dim = config.head_dim
        self.num_key_value_groups = config.num_attention_heads // config.num_key_value_heads
        self.scaling = self.head_dim**-0.5
        self.attention_dropout = config.attention_dropout
        self.is_causal = True
        bias = config.attention_bias
        self.q_proj = nn.Linear(config.hidden_size, config.num_attention_heads * self.head_dim, bias=bias)
        self.k_proj = nn.Linear(config.hidden_size, config.num_key_value_heads * self.head_dim, bias=bias)
        self.v_proj = nn.Linear(config.hidden_size, config.num_key_value_heads * self.head_dim, bias=bias)
        self.o_proj = nn.Linear(config.num_attention_heads * self.head_dim, config.hidden_size, bias=bias)

    def forward(
        self,
        hidden_states: torch.Tensor,
        position_embeddings: tuple[torch.Tensor, torch.Tensor],
        attention_mask: torch.Tensor | None = None,
        cache: Cache | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        input_shape = hidden_states.shape[:-1]
        hidden_shape = (*input_shape, -1, self.head_dim)
        query = self.q_proj(hidden_states).view(hidden_shape).transpose(1, 2)
        key = self.k_proj(hidden_states).view(hidden_shape).transpose(1, 2)
        value = self.v_proj(hidden_states).view(hidden_shape).transpose(1, 2)

        cos, sin = position_embeddings
        query, key = apply_rotary_pos_emb(query, key, cos, sin)
        if cache is not None:
            key, value = cache.update(key, value, self.layer_idx)

        attention_interface: Callable = ALL_ATTENTION_FUNCTIONS.get_interface(
            self.config._attn_implementation, eager_attention_forward
        )
        attn_output, attn_weights = attention_interface(
            self,
            query,
            key,
            value,
            attention_mask,
            dropout=0.0 if not self.training else self.attention_dropout,
            scaling=self.scaling,
            **kwargs,
        )
        attn_output = attn_output.reshape(*input_shape, -1).contiguous()
        return self.o_proj(attn_output), attn_weights


# Mirrors transformers.models.llama.modeling_llama.LlamaMLP, plus the standard (ungated) ablation
class MemoryLlamaMLP(nn.Module):
    """Dense MLP: gated `down(act(gate(x)) * up(x))` (LLaMA) or standard `down(act(up(x)))` (the ablation)."""

    def __init__(self, config: MemoryLlamaConfig):
        super().__init__()
        self.gated = config.mlp_type == "gated"
        hidden, inner, bias = config.hidden_size, config.intermediate_size, config.mlp_bias
        if self.gated:
            self.gate_proj = nn.Linear(hidden, inner, bias=bias)
        self.up_proj = nn.Linear(hidden, inner, bias=bias)
        self.down_proj = nn.Linear(inner, hidden, bias=bias)
        self.act_fn = ACT2FN[config.hidden_act]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.gated:
            return self.down_proj(self.act_fn(self.gate_proj(x)) * self.up_proj(x))
        return self.down_proj(self.act_fn(self.up_proj(x)))


# ---------------------------------------------------------------------------------------------------------------------
# Memory+ product-key memory (spec §6)
# ---------------------------------------------------------------------------------------------------------------------


def candidate_pairs(topk: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Ranks `(i, j)` (0-based) with `(i + 1)(j + 1) <= topk`: the only pairs of two descending top-k lists whose sum
    can be among the k largest sums. Built on the host (no device synchronisation), about k·ln k pairs."""
    pairs = [(i, j) for i in range(topk) for j in range(topk // (i + 1))]
    first, second = torch.tensor(pairs, dtype=torch.long).T
    return first.to(device), second.to(device)


def product_key_topk(query: torch.Tensor, half_keys: torch.Tensor, topk: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact top-k product-key search.

    Args:
        query: `(tokens, heads, d)`; each head's query is split as `[q1; q2]`, two halves of `d/2`.
        half_keys: `(heads, 2, n_keys, d/2)`; `half_keys[h, 0]` are K1_h, `half_keys[h, 1]` are K2_h.
        topk: k.

    Returns:
        `scores (tokens, heads, k)` and `slots (tokens, heads, k)` (int64 rows of the `n_keys**2` value table):
        the k largest `q1·K1[a] + q2·K2[b]` over all `n_keys**2` pairs, slot `a * n_keys + b`, best first.

    Exactness: a pair in the overall top-k has each half in that half's top-k, so the k×k sums
    `s1[i] + s2[j]` of the two sorted half top-k lists contain the answer. Moreover every pair `(i', j')` with
    `i' <= i, j' <= j` scores at least `s1[i] + s2[j]`, so `(i, j)` can only make the top-k when
    `(i + 1)(j + 1) <= k`: only those ~k·ln k of the k×k candidates are scored (119 instead of 1024 for k = 32).
    """
    tokens, heads, dim = query.shape
    n_keys, half = half_keys.shape[2], dim // 2
    # One batched matmul for both halves of all heads: (2H, T, d/2) @ (2H, d/2, n) -> (2H, T, n).
    q = query.reshape(tokens, heads * 2, half).transpose(0, 1)
    half_scores = torch.bmm(q, half_keys.reshape(heads * 2, n_keys, half).transpose(1, 2))
    scores_half, index_half = half_scores.topk(topk, dim=-1, sorted=True)
    scores_half = scores_half.view(heads, 2, tokens, topk)
    index_half = index_half.view(heads, 2, tokens, topk)

    first, second = candidate_pairs(topk, query.device)
    candidates = scores_half[:, 0].index_select(-1, first) + scores_half[:, 1].index_select(-1, second)  # (H, T, P)
    scores, best = candidates.topk(topk, dim=-1)  # (H, T, k), best first
    rows = index_half[:, 0].gather(-1, first[best])
    cols = index_half[:, 1].gather(-1, second[best])
    slots = rows * n_keys + cols
    return scores.permute(1, 0, 2), slots.permute(1, 0, 2)


def memory_lookup(values: torch.Tensor, slots: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """`y[t] = Σ_j weights[t, j] · values[slots[t, j]]` for `slots, weights` of shape `(tokens, ...)`.

    One `embedding_bag(mode="sum", per_sample_weights=...)` over all heads' indices of a token: it never builds
    the `(tokens, heads·k, v)` tensor that a gather followed by a weighted sum would.
    """
    tokens = slots.shape[0]
    return F.embedding_bag(
        slots.reshape(tokens, -1),
        values,
        mode="sum",
        per_sample_weights=weights.reshape(tokens, -1).to(values.dtype),
    )


class MemoryPlusLayer(nn.Module):
    """A Memory+ layer: product-key lookup into the shared value table, silu-gated, projected back to C.

    `out = W_o(y ⊙ silu(W_1 x + b_1)) + b_o` with `y = Σ_h Σ_j softmax(s_h)_j V[slot_hj]`. The value table `V` is not
    a submodule of this layer: the model owns it once and passes it to `forward`.
    """

    def __init__(self, config: MemoryLlamaConfig):
        super().__init__()
        hidden = config.hidden_size
        self.heads = config.memory_heads
        self.key_dim = config.memory_key_dim
        self.topk = config.memory_topk
        self.query_proj = nn.Linear(hidden, self.heads * self.key_dim)  # W_q, b_q
        self.half_keys = nn.Parameter(torch.empty(self.heads, 2, config.memory_n_keys, self.key_dim // 2))
        self.value_gate_proj = nn.Linear(hidden, config.memory_value_dim)  # W_1, b_1
        self.out_proj = nn.Linear(config.memory_value_dim, hidden)  # W_o, b_o
        # Optional extras (off by default): scores become √(d/2)·(gain ⊙ q̂)·k̂, and a per-token output gate.
        self.query_norm = (
            MemoryLlamaRMSNorm(self.key_dim // 2, eps=config.rms_norm_eps) if config.memory_qk_norm else None
        )
        self.output_gate = nn.Linear(hidden, 1) if config.memory_output_gate else None

    def extra_repr(self) -> str:
        n_keys = self.half_keys.shape[2]
        return f"heads={self.heads}, key_dim={self.key_dim}, topk={self.topk}, n_keys={n_keys} ({n_keys**2} slots)"

    def lookup(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Top-k `slots (tokens, H, k)` and float32 softmax `weights (tokens, H, k)` for `x (tokens, C)`."""
        query = self.query_proj(x).view(x.shape[0], self.heads, self.key_dim)
        half_keys = self.half_keys
        if self.query_norm is not None:
            query = self.query_norm(query.view(x.shape[0], self.heads, 2, -1)).view_as(query)
            half_keys = F.normalize(half_keys, dim=-1)
        scores, slots = product_key_topk(query, half_keys, self.topk)
        return slots, torch.softmax(scores.float(), dim=-1)

    def forward(self, hidden_states: torch.Tensor, memory_values: torch.Tensor) -> torch.Tensor:
        x = hidden_states.reshape(-1, hidden_states.shape[-1])
        slots, weights = self.lookup(x)
        y = memory_lookup(memory_values, slots, weights).to(x.dtype)
        out = self.out_proj(y * F.silu(self.value_gate_proj(x)))
        if self.output_gate is not None:
            out = out * torch.sigmoid(self.output_gate(x))
        return out.view_as(hidden_states)


# ---------------------------------------------------------------------------------------------------------------------
# Decoder and models
# ---------------------------------------------------------------------------------------------------------------------


class MemoryLlamaDecoderLayer(GradientCheckpointingLayer):
    """Pre-norm block: attention, then an MLP, or a Memory+ layer where `layer_idx in config.memory_layers`."""

    def __init__(self, config: MemoryLlamaConfig, layer_idx: int):
        super().__init__()
        self.hidden_size = config.hidden_size
        self.is_memory_layer = layer_idx in config.memory_layers
        self.self_attn = MemoryLlamaAttention(config, layer_idx)
        self.mlp = MemoryPlusLayer(config) if self.is_memory_layer else MemoryLlamaMLP(config)
        self.input_layernorm = MemoryLlamaRMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.post_attention_layernorm = MemoryLlamaRMSNorm(config.hidden_size, eps=config.rms_norm_eps)

    def forward(
        self,
        hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        cache: Cache | None = None,
        use_cache: bool | None = False,
        position_embeddings: tuple[torch.Tensor, torch.Tensor] | None = None,
        memory_values: torch.Tensor | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> torch.Tensor:
        residual = hidden_states
        hidden_states, _ = self.self_attn(
            self.input_layernorm(hidden_states),
            position_embeddings=position_embeddings,
            attention_mask=attention_mask,
            cache=cache,
            position_ids=position_ids,
            use_cache=use_cache,
            **kwargs,
        )
        hidden_states = residual + hidden_states

        residual = hidden_states
        hidden_states = self.post_attention_layernorm(hidden_states)
        if self.is_memory_layer:
            hidden_states = self.mlp(hidden_states, memory_values)
        else:
            hidden_states = self.mlp(hidden_states)
        return residual + hidden_states


class MemoryLlamaPreTrainedModel(PreTrainedModel):
    config: MemoryLlamaConfig
    config_class = MemoryLlamaConfig
    base_model_prefix = "model"
    supports_gradient_checkpointing = True
    _no_split_modules = ["MemoryLlamaDecoderLayer"]
    _supports_flash_attn = True
    _supports_sdpa = True
    _supports_flex_attn = True
    _supports_attention_backend = True
    _can_record_outputs = {
        "hidden_states": MemoryLlamaDecoderLayer,
        "attentions": MemoryLlamaAttention,
    }

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        """Spec §6 init for memory parts, LLaMA init elsewhere. Uses `transformers.initialization`, which leaves
        loaded tensors alone, so it is also the place that repairs meta-device buffers after `from_pretrained`."""
        config = self.config
        std = config.initializer_range
        if isinstance(module, MemoryPlusLayer):
            d, hidden = config.memory_key_dim, config.hidden_size
            init.uniform_(module.half_keys, -(d**-0.5), d**-0.5)
            init.xavier_uniform_(module.query_proj.weight)
            init.zeros_(module.query_proj.bias)
            for linear in (module.value_gate_proj, module.out_proj):
                init.normal_(linear.weight, mean=0.0, std=hidden**-0.5)
                init.zeros_(linear.bias)
            if module.query_norm is not None:
                init.ones_(module.query_norm.weight)
            if module.output_gate is not None:
                init.normal_(module.output_gate.weight, mean=0.0, std=std)
                init.zeros_(module.output_gate.bias)  # gate starts at sigmoid(≈0) ≈ 0.5
        elif isinstance(module, MemoryLlamaModel):
            if module.memory_values is not None:
                init.normal_(module.memory_values, mean=0.0, std=config.memory_value_dim**-0.5)
        elif isinstance(module, MemoryLlamaRotaryEmbedding):
            inv_freq, _ = module.rope_init_fn(module.config)
            init.copy_(module.inv_freq, inv_freq)
            init.copy_(module.original_inv_freq, inv_freq)
        elif isinstance(module, MemoryLlamaRMSNorm):
            init.ones_(module.weight)
        elif isinstance(module, nn.Linear):
            init.normal_(module.weight, mean=0.0, std=std)
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            init.normal_(module.weight, mean=0.0, std=std)
            if module.padding_idx is not None and not getattr(module.weight, "_is_hf_initialized", False):
                init.zeros_(module.weight[module.padding_idx])


class MemoryLlamaModel(MemoryLlamaPreTrainedModel):
    """The decoder stack. Owns the single value table `memory_values` (`n_keys**2 × v`) shared by all memory layers."""

    def __init__(self, config: MemoryLlamaConfig):
        super().__init__(config)
        self.padding_idx = config.pad_token_id
        self.vocab_size = config.vocab_size
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size, self.padding_idx)
        self.layers = nn.ModuleList(
            [MemoryLlamaDecoderLayer(config, layer_idx) for layer_idx in range(config.num_hidden_layers)]
        )
        self.norm = MemoryLlamaRMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.rotary_emb = MemoryLlamaRotaryEmbedding(config)
        if config.memory_layers:
            self.memory_values = nn.Parameter(torch.empty(config.memory_slots, config.memory_value_dim))
        else:
            self.register_parameter("memory_values", None)
        self.gradient_checkpointing = False
        self.post_init()

    @merge_with_config_defaults
    @capture_outputs
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        cache: Cache | None = None,
        inputs_embeds: torch.Tensor | None = None,
        use_cache: bool | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> BaseModelOutputWithPast:
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("Pass exactly one of input_ids or inputs_embeds.")
        if inputs_embeds is None:
            inputs_embeds = self.embed_tokens(input_ids)
        if use_cache and cache is None:
            cache = DynamicCache(config=self.config)
        if position_ids is None:
            past_seen = cache.get_seq_length() if cache is not None else 0
            position_ids = (torch.arange(inputs_embeds.shape[1], device=inputs_embeds.device) + past_seen).unsqueeze(0)

        causal_mask = create_causal_mask(
            config=self.config,
            inputs_embeds=inputs_embeds,
            attention_mask=attention_mask,
            cache=cache,
            position_ids=position_ids,
        )
        hidden_states = inputs_embeds
        position_embeddings = self.rotary_emb(hidden_states, position_ids=position_ids)
        for decoder_layer in self.layers[: self.config.num_hidden_layers]:
            hidden_states = decoder_layer(
                hidden_states,
                attention_mask=causal_mask,
                position_ids=position_ids,
                cache=cache,
                use_cache=use_cache,
                position_embeddings=position_embeddings,
                memory_values=self.memory_values,
                **kwargs,
            )
        hidden_states = self.norm(hidden_states)
        return BaseModelOutputWithPast(last_hidden_state=hidden_states, cache=cache)


class MemoryLlamaForCausalLM(MemoryLlamaPreTrainedModel, GenerationMixin):
    """MemoryLlama with a language-modelling head.

    Training with `Trainer`, the value table at its own learning rate (spec §6):

    ```python
    optimizer = torch.optim.AdamW(model.optimizer_param_groups(lr=1e-4, weight_decay=0.01, memory_value_lr=1e-3))
    trainer = Trainer(model=model, args=args, train_dataset=ds, optimizers=(optimizer, None))  # None: Trainer
    # builds its usual scheduler around this optimizer; each group keeps its own peak lr.
    ```
    """

    _tied_weights_keys = {"lm_head.weight": "model.embed_tokens.weight"}

    def __init__(self, config: MemoryLlamaConfig):
        super().__init__(config)
        self.model = MemoryLlamaModel(config)
        self.vocab_size = config.vocab_size
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.post_init()

    @can_return_tuple
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        cache: Cache | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        use_cache: bool | None = None,
        logits_to_keep: int | torch.Tensor = 0,
        **kwargs: Unpack[TransformersKwargs],
    ) -> CausalLMOutputWithPast:
        outputs: BaseModelOutputWithPast = self.model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            cache=cache,
            inputs_embeds=inputs_embeds,
            use_cache=use_cache,
            **kwargs,
        )
        logits = self.lm_head(slice_logits_to_keep(outputs.last_hidden_state, logits_to_keep))
        loss = None
        if labels is not None:
            # kwargs carry `num_items_in_batch` from Trainer: needed for correct gradient-accumulation scaling.
            loss = self.loss_function(logits=logits, labels=labels, vocab_size=self.config.vocab_size, **kwargs)
        return CausalLMOutputWithPast(
            loss=loss,
            logits=logits,
            cache=outputs.cache,
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
        )

    # -- optimisation ----------------------------------------------------------------------------------------------

    def optimizer_param_groups(
        self, lr: float, weight_decay: float, memory_value_lr: float | None = None
    ) -> list[dict]:
        """AdamW parameter groups: `"decay"` (matrices, half-keys and embeddings) at `lr` with `weight_decay`;
        `"no_decay"` (biases, norm gains) at `lr`; `"memory_values"` (the shared table) at `memory_value_lr`
        (default `config.memory_value_lr`) without weight decay. Gradients of the table are dense, so any
        optimizer that takes param groups works; pass the result to `torch.optim.AdamW(...)`."""
        values = self.model.memory_values
        decay, no_decay = [], []
        for _, param in self.named_parameters():
            if not param.requires_grad or param is values:
                continue
            (decay if param.ndim >= 2 else no_decay).append(param)
        groups = [
            {"name": "decay", "params": decay, "lr": lr, "weight_decay": weight_decay},
            {"name": "no_decay", "params": no_decay, "lr": lr, "weight_decay": 0.0},
        ]
        if values is not None and values.requires_grad:
            value_lr = self.config.memory_value_lr if memory_value_lr is None else memory_value_lr
            groups.append({"name": "memory_values", "params": [values], "lr": value_lr, "weight_decay": 0.0})
        return [group for group in groups if group["params"]]

    # -- parameter counting ----------------------------------------------------------------------------------------

    def capacity_parameter_breakdown(self) -> dict[str, int]:
        """Counts for `hf_capacity.params`: `memory_values` = size of the shared table (counted once);
        `inactive_per_token` = table rows a single token does not read, `table − layers·H·k·v` (clipped at 0)."""
        config = self.config
        values = self.model.memory_values
        table = 0 if values is None else values.numel()
        touched = len(config.memory_layers) * config.memory_heads * config.memory_topk * config.memory_value_dim
        return {"inactive_per_token": max(0, table - touched), "memory_values": table}

    # -- conversion ------------------------------------------------------------------------------------------------

    @classmethod
    def from_llama(cls, llama_model: PreTrainedModel, **config_overrides) -> "MemoryLlamaForCausalLM":
        """Build a MemoryLlama from a `LlamaForCausalLM`, copying every weight it shares with it.

        With the default `memory_layers=[]` the result computes exactly what the Llama does. With memory layers
        (`from_llama(llama, memory_layers=[2])`) their MLP weights are dropped and the memory parts are freshly
        initialised.
        """
        config = MemoryLlamaConfig.from_llama_config(llama_model.config, **config_overrides)
        reference = next(llama_model.parameters())
        model = cls(config).to(device=reference.device, dtype=reference.dtype)
        source = llama_model.state_dict()
        replaced = tuple(f"model.layers.{i}.mlp." for i in config.memory_layers)
        state = {name: tensor for name, tensor in source.items() if not name.startswith(replaced)}
        result = model.load_state_dict(state, strict=False)
        if result.unexpected_keys:
            raise ValueError(f"weights of the Llama with no place in MemoryLlama: {result.unexpected_keys}")
        allowed_missing = replaced + ("model.memory_values",)
        if config.tie_word_embeddings:
            allowed_missing += ("lm_head.weight",)
        missing = [name for name in result.missing_keys if not name.startswith(allowed_missing)]
        if missing:
            raise ValueError(f"weights the Llama did not provide: {missing}")
        if config.tie_word_embeddings:
            model.tie_weights()
        return model


__all__ = [
    "MemoryLlamaForCausalLM",
    "MemoryLlamaModel",
    "MemoryLlamaPreTrainedModel",
    "MemoryPlusLayer",
    "memory_lookup",
    "product_key_topk",
]
