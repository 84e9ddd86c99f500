"""Configuration of CapacityGPT2: the paper's GPT2-ℓ-h (rotary GPT-2) with MLP ablations and an optional MoE."""

import math
import re

from transformers import PreTrainedConfig

MLP_TYPES = ("standard", "gated", "quarter", "none")
POSITION_EMBEDDING_TYPES = ("rotary", "learned")
HEAD_SIZE = 64  # the paper's GPT2-ℓ-h has heads of width 64
# The gpt2 names of hf_capacity.model_names, read here because a model folder imports no hf_capacity (remote code);
# tests/test_model_names.py keeps the two readings in step.
_NAME_PATTERN = re.compile(r"^gpt2-(\d+)-(\d+)$")


class CapacityGPT2Config(PreTrainedConfig):
    r"""Configuration of a [`CapacityGPT2ForCausalLM`].

    A GPT-2 (pre-LayerNorm blocks, biases in every linear, tied embeddings) with rotary positions and no dropout
    by default, as in the knowledge-capacity paper. `CapacityGPT2Config.from_name("gpt2-6-4")` builds GPT2-6-4
    (6 layers, 4 heads of 64, hidden 256). Any head count that divides `hidden_size` is accepted.

    - `vocab_size` (50257), `hidden_size` (768, alias `n_embd`), `num_hidden_layers` (12, alias `n_layer`),
      `num_attention_heads` (12, alias `n_head`), `max_position_embeddings` (512, alias `n_positions`).
    - `position_embedding_type` ("rotary" | "learned"): rotary settings live in `rope_parameters`
      (default `{"rope_type": "default", "rope_theta": 10000.0}`); "learned" adds GPT-2's `wpe` table.
    - `mlp_type`: "standard" (d → 4d → d, `activation_function` "gelu_new", GPT-2's MLP), "gated"
      (`down(silu(gate(x)) * up(x))` with `intermediate_size` defaulting to round(8d/3), the standard MLP's
      parameter count), "quarter" (d → d → d) or "none" (attention-only blocks).
      `intermediate_size` (None → `CapacityGPT2Config.default_intermediate_size(mlp_type, hidden_size)`, the
      type's parameter-matched width) overrides the hidden width.
    - MoE (`num_experts` > 0 replaces every MLP): `num_experts_per_tok` (top-k, 1), `expert_intermediate_size`
      (None → `hidden_size`: each expert is d → d → d, gated when `mlp_type` is "gated"),
      `moe_capacity_factor_train` (2.0) and `moe_capacity_factor_eval` (None = no dropping): an expert takes at most
      ceil(factor · tokens · k / num_experts) tokens of a batch, the rest skip it (residual only).
      `router_aux_loss_coef` (0.01) scales the Switch load-balancing loss added to `loss`.
    - `resid_pdrop`, `embd_pdrop`, `attn_pdrop` (all 0.0), `layer_norm_epsilon` (1e-5), `initializer_range` (0.02),
      `tie_word_embeddings` (True).
    - `fused_loss` (False): in training with labels, compute the head and the cross-entropy chunk by chunk with
      the gradients in the same pass, never materialising the (tokens × vocabulary) logits; the output then has
      `logits=None`. Same loss and gradients as the plain path (to float rounding), faster where the head dominates.

    Example:

    ```python
    >>> config = CapacityGPT2Config.from_name("gpt2-6-4", vocab_size=5000)
    >>> config.hidden_size, config.num_hidden_layers, config.num_attention_heads
    (256, 6, 4)
    >>> moe = CapacityGPT2Config(hidden_size=64, num_hidden_layers=2, num_attention_heads=2, num_experts=8)
    ```
    """

    model_type = "capacity_gpt2"
    keys_to_ignore_at_inference = ["cache"]
    attribute_map = {
        "n_embd": "hidden_size",
        "n_layer": "num_hidden_layers",
        "n_head": "num_attention_heads",
        "n_positions": "max_position_embeddings",
        "n_inner": "intermediate_size",
    }

    vocab_size: int = 50257
    max_position_embeddings: int = 512
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    position_embedding_type: str = "rotary"
    rope_parameters: dict | None = None
    mlp_type: str = "standard"
    intermediate_size: int | None = None
    activation_function: str | None = None
    num_experts: int = 0
    num_experts_per_tok: int = 1
    expert_intermediate_size: int | None = None
    moe_capacity_factor_train: float | int | None = 2.0
    moe_capacity_factor_eval: float | int | None = None
    router_aux_loss_coef: float | int = 0.01
    resid_pdrop: float | int = 0.0
    embd_pdrop: float | int = 0.0
    attn_pdrop: float | int = 0.0
    layer_norm_epsilon: float = 1e-5
    initializer_range: float = 0.02
    use_cache: bool = True
    bos_token_id: int | None = None
    eos_token_id: int | list[int] | None = None
    pad_token_id: int | None = None
    tie_word_embeddings: bool = True
    fused_loss: bool = False

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)  # applies aliases (n_embd, ...) and fills `rope_parameters`
        self._validate()
        if self.intermediate_size is None:
            self.intermediate_size = self.default_intermediate_size(self.mlp_type, self.hidden_size)
        if self.expert_intermediate_size is None and self.num_experts > 0:
            self.expert_intermediate_size = self.hidden_size
        if self.activation_function is None:
            self.activation_function = "silu" if self.mlp_type == "gated" else "gelu_new"

    @staticmethod
    def default_intermediate_size(mlp_type: str, hidden_size: int) -> int | None:
        """The MLP's hidden width when `intermediate_size` is None, parameter-matched across MLP types: 4d for
        "standard" (two d×4d matrices), round(8d/3) for "gated" (three matrices, the same ≈ 8d² weights), d for
        "quarter", None for "none"."""
        if mlp_type == "standard":
            return 4 * hidden_size
        if mlp_type == "gated":
            return int(math.floor(8 * hidden_size / 3 + 0.5))
        if mlp_type == "quarter":
            return hidden_size
        return None

    def _validate(self) -> None:
        """Raise a `ValueError` naming the offending field and the accepted values."""
        for name in (
            "vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "max_position_embeddings"
        ):
            value = getattr(self, name)
            if not isinstance(value, int) or value <= 0:
                raise ValueError(f"`{name}` must be a positive integer, got {value!r}.")
        for name in ("intermediate_size", "expert_intermediate_size"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value <= 0):
                raise ValueError(f"`{name}` must be a positive integer or None (the default width), got {value!r}.")
        if self.hidden_size % self.num_attention_heads != 0:
            raise ValueError(
                f"`hidden_size` ({self.hidden_size}) must be divisible by `num_attention_heads` "
                f"({self.num_attention_heads}); the paper's GPT2-ℓ-h uses heads of {HEAD_SIZE}: "
                f"hidden = {HEAD_SIZE}·h."
            )
        if self.mlp_type not in MLP_TYPES:
            raise ValueError(f"Unknown `mlp_type` {self.mlp_type!r}; choose one of {MLP_TYPES}.")
        if self.position_embedding_type not in POSITION_EMBEDDING_TYPES:
            raise ValueError(
                f"Unknown `position_embedding_type` {self.position_embedding_type!r}; "
                f"choose one of {POSITION_EMBEDDING_TYPES}."
            )
        if self.position_embedding_type == "rotary" and (self.hidden_size // self.num_attention_heads) % 2:
            raise ValueError(
                f"Rotary positions need an even head size, got {self.hidden_size // self.num_attention_heads}."
            )
        if not isinstance(self.num_experts, int) or self.num_experts < 0:
            raise ValueError(f"`num_experts` must be an integer >= 0 (0 = dense MLP), got {self.num_experts!r}.")
        if self.num_experts > 0:
            if self.mlp_type == "none":
                raise ValueError('`num_experts` > 0 replaces the MLP by experts; it cannot go with mlp_type="none".')
            if not isinstance(self.num_experts_per_tok, int) or self.num_experts_per_tok < 1:
                raise ValueError(f"`num_experts_per_tok` must be an integer >= 1, got {self.num_experts_per_tok!r}.")
            if self.num_experts_per_tok > self.num_experts:
                raise ValueError(
                    f"`num_experts_per_tok` ({self.num_experts_per_tok}) cannot exceed `num_experts` "
                    f"({self.num_experts})."
                )
        for name in ("moe_capacity_factor_train", "moe_capacity_factor_eval"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ValueError(f"`{name}` must be > 0, or None for no token dropping, got {value!r}.")
        for name in ("router_aux_loss_coef", "resid_pdrop", "embd_pdrop", "attn_pdrop"):
            if getattr(self, name) < 0:
                raise ValueError(f"`{name}` must be >= 0, got {getattr(self, name)!r}.")

    @classmethod
    def from_name(cls, name: str, **overrides) -> "CapacityGPT2Config":
        """The paper's GPT2-ℓ-h from its name: "gpt2-6-4" is 6 layers and 4 heads of 64 (hidden 256).

        Keyword overrides (e.g. `vocab_size=`, `mlp_type=`, `num_experts=`) are passed to the config.
        """
        match = _NAME_PATTERN.match(name) if isinstance(name, str) else None
        if match is None:
            raise ValueError(
                f"Cannot read a model shape from {name!r}: expected 'gpt2-<layers>-<heads>' such as 'gpt2-6-4' "
                f"(heads of {HEAD_SIZE}, hidden size {HEAD_SIZE}·heads)."
            )
        layers, heads = int(match.group(1)), int(match.group(2))
        shape = {"num_hidden_layers": layers, "num_attention_heads": heads, "hidden_size": HEAD_SIZE * heads}
        return cls(**{**shape, **overrides})


__all__ = ["CapacityGPT2Config"]
