"""CapacityGPT2 model: GPT-2 with rotary (or learned) positions, standard/gated/quarter/no MLP, or top-k MoE experts.

Module names (use them as PEFT LoRA `target_modules`; all are `nn.Linear`):

- attention: `attn.c_attn` (fused q|k|v, d → 3d) and `attn.c_proj` (d → d);
- standard and quarter MLP: `mlp.c_fc` (d → i) and `mlp.c_proj` (i → d);
- gated MLP: `mlp.gate_proj`, `mlp.up_proj` (d → i) and `mlp.down_proj` (i → d);
- MoE: `mlp.router` (d → num_experts, no bias) and `mlp.experts.<e>.c_fc` / `.c_proj` (or the gated names).

For example `LoraConfig(target_modules=["c_attn", "c_proj", "c_fc"])` adapts every projection of a dense model.
Layout of the weights: `transformer.wte`, `transformer.wpe` (learned positions only), `transformer.h.<l>.ln_1`,
`.attn`, `.ln_2`, `.mlp` (no `ln_2`/`mlp` with mlp_type="none"), `transformer.ln_f`, `lm_head` (tied to `wte`).
"""

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F
from transformers import initialization as init
from transformers.activations import ACT2FN
from transformers.cache_utils import Cache, DynamicCache
from transformers.generation import GenerationMixin
from transformers.masking_utils import create_causal_mask
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import BaseModelOutputWithPast, MoeCausalLMOutputWithPast
from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS, dynamic_rope_update
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS, PreTrainedModel
from transformers.utils import can_return_tuple

from .configuration_capacity_gpt2 import CapacityGPT2Config


@dataclass
class CapacityGPT2ModelOutput(BaseModelOutputWithPast):
    """`BaseModelOutputWithPast` plus the MoE outputs: the load-balancing `aux_loss` and per-layer `router_logits`."""

    aux_loss: torch.Tensor | None = None
    router_logits: tuple[torch.Tensor, ...] | None = None


class CapacityGPT2RotaryEmbedding(nn.Module):
    """Rotary position embedding: cos/sin tables for given position ids (`inv_freq` is a non-persistent buffer)."""

    def __init__(self, config: CapacityGPT2Config):
        super().__init__()
        self.config = config
        self.max_seq_len_cached = config.max_position_embeddings
        self.original_max_seq_len = config.max_position_embeddings
        self.rope_type = config.rope_parameters.get("rope_type", "default")
        inv_freq, self.attention_scaling = self.compute_inv_freq(config)
        self.register_buffer("inv_freq", inv_freq, persistent=False)
        self.register_buffer("original_inv_freq", inv_freq.clone(), persistent=False)

    def compute_inv_freq(self, config: CapacityGPT2Config) -> tuple[torch.Tensor, float]:
        """Inverse frequencies of the configured rope type, and its attention scaling (1.0 for plain RoPE)."""
        if self.rope_type == "default":
            return self.compute_default_rope_parameters(config)
        return ROPE_INIT_FUNCTIONS[self.rope_type](config)

    @staticmethod
    def compute_default_rope_parameters(config: CapacityGPT2Config, **kwargs) -> tuple[torch.Tensor, float]:
        """theta^(-2i/head_dim) for i < head_dim/2, as in the RoFormer paper."""
        base = config.rope_parameters["rope_theta"]
        dim = config.hidden_size // config.num_attention_heads
        inv_freq = 1.0 / (base ** (torch.arange(0, dim, 2, dtype=torch.int64).float() / dim))
        return inv_freq, 1.0

    @torch.no_grad()
    @dynamic_rope_update
    def forward(self, x: torch.Tensor, position_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        freqs = position_ids[..., None].float() * self.inv_freq.to(device=x.device, dtype=torch.float)
        emb = torch.cat((freqs, freqs), dim=-1)
        return (emb.cos() * self.attention_scaling).to(x.dtype), (emb.sin() * self.attention_scaling).to(x.dtype)


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    """(x1, x2) → (-x2, x1) on the two halves of the last dimension."""
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def apply_rotary_pos_emb(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate x of shape (batch, heads, seq, head_dim) by position; cos/sin have shape (batch, seq, head_dim)."""
    cos, sin = cos.unsqueeze(1), sin.unsqueeze(1)
    return x * cos + rotate_half(x) * sin


def activation(name: str) -> nn.Module:
    """The activation called `name` in transformers' ACT2FN; GPT-2's "gelu_new" runs as the fused
    `F.gelu(approximate="tanh")`, the same function in one kernel instead of eight element-wise ops."""
    return ACT2FN["gelu_pytorch_tanh" if name == "gelu_new" else name]


def residual_projection(in_features: int, out_features: int) -> nn.Linear:
    """An `nn.Linear` writing into the residual stream, marked for GPT-2's depth-scaled initialisation."""
    layer = nn.Linear(in_features, out_features)
    layer.scale_init_by_depth = True
    return layer


def eager_attention_forward(module, query, key, value, attention_mask, scaling, dropout=0.0, **kwargs):
    """softmax(q·kᵀ·scaling + mask)·v in plain torch; returns the output (batch, seq, heads, head_dim) and weights."""
    attn_weights = torch.matmul(query, key.transpose(2, 3)) * scaling
    if attention_mask is not None:
        attn_weights = attn_weights + attention_mask
    attn_weights = F.softmax(attn_weights, dim=-1, dtype=torch.float32).to(query.dtype)
    attn_weights = F.dropout(attn_weights, p=dropout, training=module.training)
    attn_output = torch.matmul(attn_weights, value).transpose(1, 2).contiguous()
    return attn_output, attn_weights


class CapacityGPT2Attention(nn.Module):
    """Causal multi-head self-attention with a fused q|k|v projection (`c_attn`) and output projection (`c_proj`)."""

    def __init__(self, config: CapacityGPT2Config, layer_idx: int):
        super().__init__()
        self.config = config
        self.layer_idx = layer_idx
        self.hidden_size = config.hidden_size
        self.head_dim = config.hidden_size // config.num_attention_heads
        self.scaling = self.head_dim**-0.5
        self.is_causal = True
        self.c_attn = nn.Linear(config.hidden_size, 3 * config.hidden_size)
        self.c_proj = residual_projection(config.hidden_size, config.hidden_size)
        self.resid_dropout = nn.Dropout(config.resid_pdrop)

    def forward(
        self,
        hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        position_embeddings: tuple[torch.Tensor, torch.Tensor] | None = None,
        cache: Cache | None = None,
        **kwargs,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        input_shape = hidden_states.shape[:-1]
        head_shape = (*input_shape, -1, self.head_dim)
        query_key, value = self.c_attn(hidden_states).split([2 * self.hidden_size, self.hidden_size], dim=-1)
        query_key = query_key.view(head_shape).transpose(1, 2)  # (batch, 2·heads, seq, head_dim): q heads, k heads
        value = value.view(head_shape).transpose(1, 2)
        if position_embeddings is not None:  # rotary, one pass over q and k; learned positions are in the input
            query_key = apply_rotary_pos_emb(query_key, *position_embeddings)
        query, key = query_key.chunk(2, dim=1)
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
            dropout=self.config.attn_pdrop if self.training else 0.0,
            scaling=self.scaling,
            **kwargs,
        )
        attn_output = attn_output.reshape(*input_shape, -1).contiguous()
        return self.resid_dropout(self.c_proj(attn_output)), attn_weights


class CapacityGPT2MLP(nn.Module):
    """GPT-2's MLP, c_proj(act(c_fc(x))): d → 4d → d ("standard") or d → d → d ("quarter", and MoE experts)."""

    def __init__(self, config: CapacityGPT2Config, intermediate_size: int):
        super().__init__()
        self.c_fc = nn.Linear(config.hidden_size, intermediate_size)
        self.c_proj = residual_projection(intermediate_size, config.hidden_size)
        self.act = activation(config.activation_function)
        self.dropout = nn.Dropout(config.resid_pdrop)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.c_proj(self.act(self.c_fc(hidden_states))))


class CapacityGPT2GatedMLP(nn.Module):
    """Gated MLP, down_proj(silu(gate_proj(x)) * up_proj(x)), with biases like the rest of GPT-2."""

    def __init__(self, config: CapacityGPT2Config, intermediate_size: int):
        super().__init__()
        self.gate_proj = nn.Linear(config.hidden_size, intermediate_size)
        self.up_proj = nn.Linear(config.hidden_size, intermediate_size)
        self.down_proj = residual_projection(intermediate_size, config.hidden_size)
        self.act = activation(config.activation_function)
        self.dropout = nn.Dropout(config.resid_pdrop)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.down_proj(self.act(self.gate_proj(hidden_states)) * self.up_proj(hidden_states)))


def expert_parameter_count(config: CapacityGPT2Config) -> int:
    """Parameters of one MoE expert (weights and biases), from the config (so it holds for quantized models too)."""
    d, i = config.hidden_size, config.expert_intermediate_size
    if config.mlp_type == "gated":
        return 3 * d * i + 2 * i + d
    return 2 * d * i + i + d


class CapacityGPT2SparseMoE(nn.Module):
    """Top-k mixture of experts with a per-expert token capacity (Switch Transformer style).

    Each token goes to its `num_experts_per_tok` most probable experts and their outputs are summed, weighted by the
    router probability (renormalised over the chosen experts when k > 1). An expert takes at most
    ceil(capacity_factor · tokens · k / num_experts) tokens of the batch, first choices first, in token order; the
    tokens over capacity get nothing from it (with k = 1 they only pass through the residual connection).
    The capacity factor is `moe_capacity_factor_train` in training and `moe_capacity_factor_eval` in eval mode
    (None: no limit). Padding tokens are routed like any other token.
    """

    def __init__(self, config: CapacityGPT2Config):
        super().__init__()
        self.num_experts = config.num_experts
        self.top_k = config.num_experts_per_tok
        self.capacity_factor_train = config.moe_capacity_factor_train
        self.capacity_factor_eval = config.moe_capacity_factor_eval
        self.router = nn.Linear(config.hidden_size, config.num_experts, bias=False)
        expert_class = CapacityGPT2GatedMLP if config.mlp_type == "gated" else CapacityGPT2MLP
        self.experts = nn.ModuleList(
            [expert_class(config, config.expert_intermediate_size) for _ in range(config.num_experts)]
        )

    def capacity(self, num_tokens: int) -> int | None:
        """Most tokens one expert takes from a batch of `num_tokens` tokens in the current mode, or None (no limit)."""
        factor = self.capacity_factor_train if self.training else self.capacity_factor_eval
        if factor is None:
            return None
        return max(1, math.ceil(factor * num_tokens * self.top_k / self.num_experts))

    def forward(self, hidden_states: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return the expert mixture (same shape as the input) and the router logits (tokens, num_experts)."""
        x = hidden_states.reshape(-1, hidden_states.shape[-1])
        num_tokens = x.shape[0]
        router_logits = self.router(x)
        probs = F.softmax(router_logits, dim=-1, dtype=torch.float32)
        gate, chosen = torch.topk(probs, self.top_k, dim=-1)  # (tokens, k)
        if self.top_k > 1:
            gate = gate / gate.sum(dim=-1, keepdim=True)

        # Routing slots in priority order: every token's first choice (in token order), then second choices...
        slot_expert = chosen.t().reshape(-1)
        slot_gate = gate.t().reshape(-1)
        slot_token = torch.arange(num_tokens, device=x.device).repeat(self.top_k)
        capacity = self.capacity(num_tokens)
        if capacity is not None:
            one_hot = F.one_hot(slot_expert, self.num_experts)
            rank_in_expert = (one_hot.cumsum(dim=0) * one_hot).sum(dim=-1) - 1
            kept = rank_in_expert < capacity
            slot_expert, slot_gate, slot_token = slot_expert[kept], slot_gate[kept], slot_token[kept]

        order = torch.argsort(slot_expert, stable=True)
        slot_token, slot_gate = slot_token[order], slot_gate[order]
        counts = torch.bincount(slot_expert, minlength=self.num_experts).tolist()
        expert_inputs = x[slot_token].split(counts)
        # Every expert runs, even on zero tokens, so each parameter is in the graph (DDP without unused parameters).
        expert_outputs = torch.cat([expert(chunk) for expert, chunk in zip(self.experts, expert_inputs)])
        weighted = expert_outputs * slot_gate.unsqueeze(-1).to(expert_outputs.dtype)
        output = torch.zeros_like(x).index_add_(0, slot_token, weighted.to(x.dtype))
        return output.view_as(hidden_states), router_logits


def load_balancing_loss(router_logits: tuple[torch.Tensor, ...], num_experts: int, top_k: int) -> torch.Tensor:
    """Switch Transformer auxiliary loss, averaged over MoE layers: num_experts · Σ_e f_e · P_e.

    f_e is the fraction of routing choices (top-k, before capacity dropping) that go to expert e and P_e the mean
    router probability of e. It is 1.0 for perfectly uniform routing and grows as routing concentrates.
    """
    losses = []
    for logits in router_logits:
        probs = F.softmax(logits, dim=-1, dtype=torch.float32)
        chosen = torch.topk(probs, top_k, dim=-1).indices
        fraction = F.one_hot(chosen, num_experts).float().sum(dim=(0, 1)) / chosen.numel()
        losses.append(num_experts * (fraction * probs.mean(dim=0)).sum())
    return torch.stack(losses).mean()


class CapacityGPT2Block(GradientCheckpointingLayer):
    """Pre-LayerNorm transformer block: x + attn(ln_1(x)), then + mlp(ln_2(x)) unless mlp_type is "none"."""

    def __init__(self, config: CapacityGPT2Config, layer_idx: int):
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_epsilon)
        self.attn = CapacityGPT2Attention(config, layer_idx)
        self.is_moe = config.num_experts > 0
        if self.is_moe:
            self.ln_2 = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_epsilon)
            self.mlp = CapacityGPT2SparseMoE(config)
        elif config.mlp_type == "gated":
            self.ln_2 = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_epsilon)
            self.mlp = CapacityGPT2GatedMLP(config, config.intermediate_size)
        elif config.mlp_type in ("standard", "quarter"):
            self.ln_2 = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_epsilon)
            self.mlp = CapacityGPT2MLP(config, config.intermediate_size)
        else:
            self.ln_2 = self.mlp = None

    def forward(
        self,
        hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        position_embeddings: tuple[torch.Tensor, torch.Tensor] | None = None,
        cache: Cache | None = None,
        **kwargs,
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """Return the new hidden states, the attention weights (eager only) and the router logits (MoE only)."""
        attn_output, attn_weights = self.attn(
            self.ln_1(hidden_states),
            attention_mask=attention_mask,
            position_embeddings=position_embeddings,
            cache=cache,
            **kwargs,
        )
        hidden_states = hidden_states + attn_output
        router_logits = None
        if self.mlp is not None:
            mlp_output = self.mlp(self.ln_2(hidden_states))
            if self.is_moe:
                mlp_output, router_logits = mlp_output
            hidden_states = hidden_states + mlp_output
        return hidden_states, attn_weights, router_logits


class CapacityGPT2PreTrainedModel(PreTrainedModel):
    """Weight initialisation (GPT-2's) and the capabilities shared by the CapacityGPT2 models."""

    config: CapacityGPT2Config
    base_model_prefix = "transformer"
    supports_gradient_checkpointing = True
    _no_split_modules = ["CapacityGPT2Block"]
    _supports_flash_attn = True
    _supports_sdpa = True
    _supports_flex_attn = True
    _supports_attention_backend = True

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        """Normal(0, 0.02) weights, zero biases, unit LayerNorms; residual projections get std 0.02/sqrt(2·layers).

        Also recomputes the rotary `inv_freq` buffers: models are built on the meta device, so a non-persistent
        buffer would otherwise hold garbage after `from_pretrained`.
        """
        super()._init_weights(module)
        # Marked on the Linear itself: for code outside transformers, parents without own parameters are skipped.
        if isinstance(module, nn.Linear) and getattr(module, "scale_init_by_depth", False):
            residual_std = self.config.initializer_range / math.sqrt(2 * self.config.num_hidden_layers)
            init.normal_(module.weight, mean=0.0, std=residual_std)
        elif isinstance(module, CapacityGPT2RotaryEmbedding):
            inv_freq, _ = module.compute_inv_freq(module.config)
            init.copy_(module.inv_freq, inv_freq)
            init.copy_(module.original_inv_freq, inv_freq)


class CapacityGPT2Model(CapacityGPT2PreTrainedModel):
    """The CapacityGPT2 transformer without a head: embeddings, blocks, final LayerNorm."""

    _input_embed_layer = "wte"

    def __init__(self, config: CapacityGPT2Config):
        super().__init__(config)
        self.wte = nn.Embedding(config.vocab_size, config.hidden_size)
        if config.position_embedding_type == "learned":
            self.wpe = nn.Embedding(config.max_position_embeddings, config.hidden_size)
            self.rotary_emb = None
        else:
            self.wpe = None
            self.rotary_emb = CapacityGPT2RotaryEmbedding(config)
        self.drop = nn.Dropout(config.embd_pdrop)
        self.h = nn.ModuleList([CapacityGPT2Block(config, layer_idx) for layer_idx in range(config.num_hidden_layers)])
        self.ln_f = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_epsilon)
        self.gradient_checkpointing = False
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.wte

    def set_input_embeddings(self, new_embeddings: nn.Embedding) -> None:
        self.wte = new_embeddings

    @can_return_tuple
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        cache: Cache | None = None,
        inputs_embeds: torch.Tensor | None = None,
        use_cache: bool | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        output_router_logits: bool | None = None,
        **kwargs,
    ) -> CapacityGPT2ModelOutput:
        r"""Run the transformer. `position_ids` that restart at 0 inside a row (packed documents, no
        `attention_mask`, no filled cache) make each document attend only to itself."""
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("Pass exactly one of `input_ids` or `inputs_embeds`.")
        output_attentions = self.config.output_attentions if output_attentions is None else output_attentions
        output_hidden_states = (
            self.config.output_hidden_states if output_hidden_states is None else output_hidden_states
        )
        use_cache = self.config.use_cache if use_cache is None else use_cache
        if self.training:  # a cache is never reused in training (and gradient checkpointing forbids it)
            use_cache = False
        if inputs_embeds is None:
            inputs_embeds = self.wte(input_ids)
        if use_cache and cache is None:
            cache = DynamicCache(config=self.config)
        if position_ids is None:
            past_seen = cache.get_seq_length() if cache is not None else 0
            position_ids = torch.arange(inputs_embeds.shape[1], device=inputs_embeds.device) + past_seen
            position_ids = position_ids.unsqueeze(0)

        # An empty dynamic cache says nothing about the mask; leaving it out lets transformers detect packed
        # documents from `position_ids` (block-diagonal causal mask).
        cache_is_empty = isinstance(cache, DynamicCache) and cache.get_seq_length() == 0
        causal_mask = create_causal_mask(
            config=self.config,
            inputs_embeds=inputs_embeds,
            attention_mask=attention_mask,
            cache=None if cache_is_empty else cache,
            position_ids=position_ids,
        )

        hidden_states = inputs_embeds
        position_embeddings = None
        if self.wpe is not None:
            hidden_states = hidden_states + self.wpe(position_ids).to(hidden_states.device)
        else:
            position_embeddings = self.rotary_emb(hidden_states, position_ids)
        hidden_states = self.drop(hidden_states)

        all_hidden_states = [] if output_hidden_states else None
        all_attentions = [] if output_attentions else None
        all_router_logits = []
        for block in self.h:
            if output_hidden_states:
                all_hidden_states.append(hidden_states)
            hidden_states, attn_weights, router_logits = block(
                hidden_states,
                attention_mask=causal_mask,
                position_embeddings=position_embeddings,
                cache=cache,
                **kwargs,
            )
            if output_attentions:
                all_attentions.append(attn_weights)
            if router_logits is not None:
                all_router_logits.append(router_logits)
        hidden_states = self.ln_f(hidden_states)
        if output_hidden_states:
            all_hidden_states.append(hidden_states)

        aux_loss = None
        if all_router_logits:
            aux_loss = load_balancing_loss(
                tuple(all_router_logits), self.config.num_experts, self.config.num_experts_per_tok
            )
        return CapacityGPT2ModelOutput(
            last_hidden_state=hidden_states,
            cache=cache,
            hidden_states=tuple(all_hidden_states) if output_hidden_states else None,
            attentions=tuple(all_attentions) if output_attentions else None,
            aux_loss=aux_loss,
            router_logits=tuple(all_router_logits) if output_router_logits and all_router_logits else None,
        )


class FusedLinearCrossEntropy(torch.autograd.Function):
    """Summed next-token cross-entropy of `hidden @ weight.T` against `labels` (-100 ignored), chunk by chunk.

    The forward pass also computes the gradients of `hidden` and `weight`, so neither pass ever holds the
    (tokens × vocabulary) logits: each chunk's logits are made, turned into probabilities (one softmax pass) and
    used for both gradients while they are in cache. A token whose probability underflows float32 gets its loss
    recomputed exactly from its logits after the loop (one host read per call). The backward pass only scales the
    stored gradients.

    With `padded_rows` > the vocabulary the head is laid out with that many rows (zero rows appended, whose logits
    are set to -inf, so their probabilities are exactly 0 and the loss and gradients are unchanged): a row stride
    that is a multiple of 64 bytes makes the chunk's matmuls faster (`fused_padded_rows`).
    """

    @staticmethod
    def forward(ctx, hidden, weight, labels, chunk_size: int, padded_rows: int | None = None):
        vocab = weight.shape[0]
        rows = max(vocab, padded_rows or vocab)
        if rows > vocab:
            head = weight.new_zeros((rows, weight.shape[1]))
            head[:vocab] = weight
        else:
            head = weight
        valid = labels != -100
        target = torch.where(valid, labels, 0)
        # Ignored rows enter as zero vectors: their logits are 0 (no overflow), they add nothing to the weight's
        # gradient, and their hidden gradient and loss are masked once after the loop (no per-chunk pass).
        masked = hidden * valid[:, None].to(hidden.dtype)
        grad_hidden = torch.empty_like(hidden)
        grad_weight = torch.zeros((rows, weight.shape[1]), dtype=torch.float32, device=weight.device)
        picked = torch.empty(hidden.shape[0], dtype=torch.float32, device=hidden.device)
        minus_one = torch.full((chunk_size, 1), -1.0, dtype=torch.float32, device=hidden.device)
        # One float32 buffer serves every chunk: logits, then probabilities, then their gradient, in place (fresh
        # chunk-sized tensors made the loop 1.12x slower at 128 rows x 5,096 tokens, 1.9x at 256 rows).
        buffer = torch.empty((chunk_size, rows), dtype=torch.float32, device=hidden.device)
        for start in range(0, hidden.shape[0], chunk_size):
            chunk = slice(start, start + chunk_size)
            h, y = masked[chunk], target[chunk, None]
            probs = buffer[: h.shape[0]]
            if h.dtype == torch.float32:
                torch.mm(h, head.T, out=probs)
            else:
                probs.copy_(h @ head.T)
            if rows > vocab:
                probs[:, vocab:] = -math.inf  # the padding rows: probability exactly 0
            torch.softmax(probs, dim=1, out=probs)
            picked[chunk] = probs.gather(1, y)[:, 0]
            probs.scatter_add_(1, y, minus_one[: y.shape[0]])  # p - onehot: the logits' gradient
            grad = probs.to(h.dtype)  # float32: the buffer itself; bf16/fp16: a copy, as the products take
            torch.mm(grad, head, out=grad_hidden[chunk])
            grad_weight.addmm_(grad.T.float(), h.float())
        grad_hidden.mul_(valid[:, None].to(grad_hidden.dtype))
        token_loss = -picked.clamp_min(1e-30).log()
        underflow = valid & (picked < 1e-30)  # the probability underflowed float32's normal range
        if underflow.any():
            logits = (hidden[underflow] @ weight.T).float()
            picked_logit = logits.gather(1, target[underflow, None])[:, 0]
            token_loss[underflow] = torch.logsumexp(logits, dim=1) - picked_logit
        ctx.save_for_backward(grad_hidden, grad_weight[:vocab].to(weight.dtype))
        return (token_loss * valid).sum()

    @staticmethod
    def backward(ctx, grad_output):
        grad_hidden, grad_weight = ctx.saved_tensors
        return (
            grad_hidden * grad_output.to(grad_hidden.dtype),
            grad_weight * grad_output.to(grad_weight.dtype),
            None,
            None,
            None,
        )


def fused_chunk_size(vocab_size: int) -> int:
    """Rows of logits per chunk of `FusedLinearCrossEntropy`: the power of two that keeps a chunk's float32 logits
    within 4 MiB (2^20 values); 16 to 1024 rows. With one buffer reused for every chunk the kernel is flat from 64
    to 256 rows; this rule picks its fastest measured size at both calibration vocabularies (128 rows at 5,096
    tokens, 10% faster than 32; 256 at 2,745, 3% faster than 64: `benchmarks/bench_fused_loss.py`)."""
    rows = max(1, (1 << 20) // max(1, vocab_size))
    return min(1024, max(16, 1 << (rows.bit_length() - 1)))


def fused_padded_rows(vocab_size: int) -> int:
    """Rows the fused loss lays the head out with: the vocabulary rounded up to a multiple of 16 (a float32 row
    stride of 64 bytes) that is not a multiple of 256 (strides of 1 KiB multiples alias in the cache). At hidden
    size 32, on one quiet core, the kernel runs 1.15-1.19x faster at 4,096 -> 4,112 rows and 1.05-1.06x at the
    fitted calibration vocabulary's 2,745 -> 2,752 (1.2x under load); 5,096 -> 5,104 gains nothing
    (`benchmarks/bench_fused_loss.py`)."""
    rows = -(-vocab_size // 16) * 16
    while rows % 256 == 0:
        rows += 16
    return rows


def fused_causal_lm_loss(hidden_states, weight, labels, num_items_in_batch=None, chunk_size: int | None = None,
                         **kwargs):
    """The causal-LM loss of `ForCausalLMLoss` (shifted labels, mean over counted tokens, or sum divided by
    `num_items_in_batch` under gradient accumulation) computed by `FusedLinearCrossEntropy` (``chunk_size``
    rows at a time, default `fused_chunk_size` of the vocabulary; the head laid out with `fused_padded_rows`)."""
    chunk_size = chunk_size or fused_chunk_size(weight.shape[0])
    hidden = hidden_states[:, :-1, :].reshape(-1, hidden_states.shape[-1])
    targets = labels[:, 1:].reshape(-1).to(hidden.device)
    total = FusedLinearCrossEntropy.apply(hidden, weight, targets, chunk_size, fused_padded_rows(weight.shape[0]))
    count = num_items_in_batch if num_items_in_batch is not None else (targets != -100).sum()
    if torch.is_tensor(count):
        count = count.to(total.device)
    return total / count


class CapacityGPT2ForCausalLM(CapacityGPT2PreTrainedModel, GenerationMixin):
    """CapacityGPT2 with a language-modelling head tied to the input embeddings (unless `tie_word_embeddings=False`).

    With labels the loss is the next-token cross-entropy (`self.loss_function`, so Trainer's gradient-accumulation
    scaling applies) plus `router_aux_loss_coef · aux_loss` for MoE models; `aux_loss` is also on the output.
    """

    _tied_weights_keys = {"lm_head.weight": "transformer.wte.weight"}

    def __init__(self, config: CapacityGPT2Config):
        super().__init__(config)
        self.transformer = CapacityGPT2Model(config)
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
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        output_router_logits: bool | None = None,
        **kwargs,
    ) -> MoeCausalLMOutputWithPast:
        r"""`labels` are the input ids (shifted inside; -100 is ignored).

        `logits_to_keep=n` keeps the last n logits."""
        outputs: CapacityGPT2ModelOutput = self.transformer(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            cache=cache,
            inputs_embeds=inputs_embeds,
            use_cache=use_cache,
            output_attentions=output_attentions,
            output_hidden_states=output_hidden_states,
            output_router_logits=output_router_logits,
            **kwargs,
        )
        hidden_states = outputs.last_hidden_state
        loss = logits = None
        if labels is not None and self.config.fused_loss and self.training and torch.is_grad_enabled():
            loss = fused_causal_lm_loss(hidden_states, self.lm_head.weight, labels, **kwargs)
        else:
            keep = slice(-logits_to_keep, None) if isinstance(logits_to_keep, int) else logits_to_keep
            logits = self.lm_head(hidden_states[:, keep, :])
        if labels is not None and loss is None:
            loss = self.loss_function(logits=logits, labels=labels, vocab_size=self.config.vocab_size, **kwargs)
        if labels is not None:
            if outputs.aux_loss is not None:
                loss = loss + self.config.router_aux_loss_coef * outputs.aux_loss.to(loss.device)
        return MoeCausalLMOutputWithPast(
            loss=loss,
            aux_loss=outputs.aux_loss,
            logits=logits,
            cache=outputs.cache,
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
            router_logits=outputs.router_logits,
        )

    def capacity_parameter_breakdown(self) -> dict[str, int]:
        """Parameter counts for the capacity accounting of `hf_capacity.params`.

        `inactive_per_token`: parameters a single token does not use, i.e. for MoE the experts it is not routed to,
        (num_experts - k) · params per expert · layers; 0 for dense models. `memory_values`: 0 (no memory layers).
        """
        config = self.config
        inactive = 0
        if config.num_experts > 0:
            idle_experts = config.num_experts - config.num_experts_per_tok
            inactive = idle_experts * expert_parameter_count(config) * config.num_hidden_layers
        return {"inactive_per_token": inactive, "memory_values": 0}

    @classmethod
    def from_gpt2(cls, gpt2_model) -> "CapacityGPT2ForCausalLM":
        """Convert a transformers `GPT2LMHeadModel` into an equivalent CapacityGPT2 (learned positions, standard MLP).

        GPT-2's `Conv1D` weights are stored transposed (in, out); they become `nn.Linear` weights (out, in).
        """
        source = gpt2_model.config
        unsupported = {
            "add_cross_attention": True,
            "scale_attn_by_inverse_layer_idx": True,
            "scale_attn_weights": False,
        }
        for name, bad_value in unsupported.items():
            if getattr(source, name, not bad_value) == bad_value:
                raise ValueError(f"Cannot convert a GPT-2 with `{name}={bad_value}`: CapacityGPT2 has no such option.")
        config = CapacityGPT2Config(
            vocab_size=source.vocab_size,
            max_position_embeddings=source.n_positions,
            hidden_size=source.n_embd,
            num_hidden_layers=source.n_layer,
            num_attention_heads=source.n_head,
            position_embedding_type="learned",
            mlp_type="standard",
            intermediate_size=source.n_inner or 4 * source.n_embd,
            activation_function=source.activation_function,
            resid_pdrop=source.resid_pdrop,
            embd_pdrop=source.embd_pdrop,
            attn_pdrop=source.attn_pdrop,
            layer_norm_epsilon=source.layer_norm_epsilon,
            initializer_range=source.initializer_range,
            bos_token_id=source.bos_token_id,
            eos_token_id=source.eos_token_id,
            pad_token_id=source.pad_token_id,
            tie_word_embeddings=source.tie_word_embeddings,
        )
        model = cls(config)
        transposed = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")
        state_dict = {}
        for name, tensor in gpt2_model.state_dict().items():
            if name.endswith((".attn.bias", ".attn.masked_bias")):  # causal-mask buffers of old checkpoints
                continue
            state_dict[name] = tensor.t().contiguous() if name.endswith(transposed) else tensor
        model.load_state_dict(state_dict, strict=False)
        expected = set(model.state_dict())
        missing = expected - set(state_dict)
        if config.tie_word_embeddings:
            missing.discard("lm_head.weight")
        if missing or set(state_dict) - expected:
            raise ValueError(
                f"GPT-2 weights do not map onto CapacityGPT2: missing {sorted(missing)}, "
                f"unexpected {sorted(set(state_dict) - expected)}."
            )
        model.to(dtype=gpt2_model.dtype)
        return model


__all__ = [
    "CapacityGPT2ForCausalLM",
    "CapacityGPT2Model",
    "CapacityGPT2PreTrainedModel",
    "CapacityGPT2ModelOutput",
]
