"""Configuration of MemoryLlama: a LLaMA whose MLPs at chosen layers are Memory+ product-key memory layers."""

import copy
import math

from transformers import PreTrainedConfig

MLP_TYPES = ("gated", "standard")


def default_memory_layers(num_layers: int, count: int = 3) -> list[int]:
    """Spread `count` memory layers evenly over `num_layers` blocks, at the centres of equal slices.

    For `count=3` this is about [L/6, L/2, 5L/6]: `default_memory_layers(24) == [4, 12, 20]`.
    """
    if num_layers < 1 or count < 0:
        raise ValueError(f"need num_layers >= 1 and count >= 0, got num_layers={num_layers}, count={count}")
    if count > num_layers:
        raise ValueError(f"cannot place {count} memory layers in a model with {num_layers} layers")
    layers = [min(num_layers - 1, int((2 * i + 1) * num_layers / (2 * count) + 0.5)) for i in range(count)]
    # Rounding can collide in very shallow models; fall back to the next free index.
    chosen: list[int] = []
    for layer in layers:
        while layer in chosen:
            layer = (layer + 1) % num_layers
        chosen.append(layer)
    return sorted(chosen)


class MemoryLlamaConfig(PreTrainedConfig):
    r"""Configuration of a [`MemoryLlamaForCausalLM`].

    The LLaMA fields mean what they mean in `LlamaConfig` (and default to its values, but for
    `intermediate_size`: see `mlp_type`). The memory fields:

    - `memory_layers` (`list[int]`, default `None` → `[]`, a plain LLaMA): indices of the decoder blocks whose MLP is
      replaced by a Memory+ layer. `default_memory_layers(num_hidden_layers)` gives the paper's spread.
    - `memory_n_keys` (1024): half-keys per head and per half; the shared value table has `memory_n_keys**2` rows.
    - `memory_heads` (4), `memory_topk` (32): lookup heads and values read per head.
    - `memory_key_dim` (512): query/key width `d` per head (must be even: two halves of `d/2`).
    - `memory_value_dim` (`None` → `hidden_size`): width `v` of a value row.
    - `memory_qk_norm` (False): RMS-normalise each query half (learnable gain) and L2-normalise the half-keys.
    - `memory_output_gate` (False): multiply the layer output by a per-token scalar gate `sigmoid(w_g·x + b_g)`,
      so each token can turn its memory read down; it starts at 0.5.
    - `memory_value_lr` (1e-3): learning rate of the value table in `optimizer_param_groups`.
    - `mlp_type` ("gated" | "standard"): the dense MLP, `down(act(gate(x)) * up(x))` or the ungated
      ablation `down(act(up(x)))`, both with `intermediate_size` hidden units; `intermediate_size` None (the
      default) is `MemoryLlamaConfig.default_intermediate_size(mlp_type, hidden_size)`, the width that gives
      both types the same parameter count.

    Example:

    ```python
    >>> config = MemoryLlamaConfig(vocab_size=128, hidden_size=64, intermediate_size=172, num_hidden_layers=6,
    ...                            num_attention_heads=4, memory_layers=default_memory_layers(6),
    ...                            memory_n_keys=16, memory_key_dim=32, memory_topk=4)
    ```
    """

    model_type = "memory_llama"
    keys_to_ignore_at_inference = ["cache"]

    vocab_size: int = 32000
    hidden_size: int = 4096
    intermediate_size: int | None = None
    num_hidden_layers: int = 32
    num_attention_heads: int = 32
    num_key_value_heads: int | None = None
    head_dim: int | None = None
    hidden_act: str = "silu"
    mlp_type: str = "gated"
    max_position_embeddings: int = 2048
    initializer_range: float = 0.02
    rms_norm_eps: float = 1e-6
    use_cache: bool = True
    pad_token_id: int | None = None
    bos_token_id: int | None = 1
    eos_token_id: int | list[int] | None = 2
    tie_word_embeddings: bool = False
    rope_parameters: dict | None = None
    attention_bias: bool = False
    attention_dropout: float = 0.0
    mlp_bias: bool = False

    memory_layers: list[int] | None = None
    memory_n_keys: int = 1024
    memory_heads: int = 4
    memory_topk: int = 32
    memory_key_dim: int = 512
    memory_value_dim: int | None = None
    memory_qk_norm: bool = False
    memory_output_gate: bool = False
    memory_value_lr: float = 1e-3

    def __post_init__(self, **kwargs):
        if self.head_dim is None:
            if self.hidden_size % self.num_attention_heads != 0:
                raise ValueError(
                    f"hidden_size ({self.hidden_size}) is not a multiple of num_attention_heads "
                    f"({self.num_attention_heads}); change one of them or set head_dim explicitly."
                )
            self.head_dim = self.hidden_size // self.num_attention_heads
        if self.num_key_value_heads is None:
            self.num_key_value_heads = self.num_attention_heads
        if self.memory_value_dim is None:
            self.memory_value_dim = self.hidden_size
        if self.intermediate_size is None:
            self.intermediate_size = self.default_intermediate_size(self.mlp_type, self.hidden_size)
        self.memory_layers = [] if self.memory_layers is None else list(self.memory_layers)
        self._check_fields()
        self.memory_layers = sorted(self.memory_layers)
        super().__post_init__(**kwargs)

    @staticmethod
    def default_intermediate_size(mlp_type: str, hidden_size: int) -> int:
        """The MLP's hidden units when `intermediate_size` is None, parameter-matched across MLP types: the gated
        MLP (three matrices) 8·hidden/3 rounded up to a multiple of 8, the standard one (two matrices) 4·hidden, so
        both hold ≈ 8·hidden² weights, as GPT-2's MLP does. (Runs before this rule gave the standard MLP the gated
        width; their saved configs record the width they had and load as they were.)"""
        if mlp_type == "standard":
            return 4 * hidden_size
        return 8 * math.ceil(8 * hidden_size / 3 / 8)

    def _check_fields(self):
        if self.num_attention_heads % self.num_key_value_heads != 0:
            raise ValueError(
                f"num_attention_heads ({self.num_attention_heads}) must be a multiple of num_key_value_heads "
                f"({self.num_key_value_heads})."
            )
        if self.mlp_type not in MLP_TYPES:
            raise ValueError(f"unknown mlp_type {self.mlp_type!r}; choose one of {list(MLP_TYPES)}.")
        layers = self.memory_layers
        bad = [
            i for i in layers if not isinstance(i, int) or isinstance(i, bool) or not 0 <= i < self.num_hidden_layers
        ]
        if bad:
            raise ValueError(
                f"memory_layers {layers} has indices outside 0..{self.num_hidden_layers - 1} "
                f"(num_hidden_layers={self.num_hidden_layers}): {bad}."
            )
        if len(set(layers)) != len(layers):
            raise ValueError(f"memory_layers {layers} lists a layer twice; each index may appear once.")
        for name in ("memory_n_keys", "memory_heads", "memory_topk", "memory_key_dim", "memory_value_dim"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be a positive integer, got {getattr(self, name)}.")
        if self.memory_topk > self.memory_n_keys:
            raise ValueError(
                f"memory_topk ({self.memory_topk}) cannot exceed memory_n_keys ({self.memory_n_keys}): each half "
                "of the product key picks its top-k among n_keys half-keys."
            )
        if self.memory_key_dim % 2 != 0:
            raise ValueError(
                f"memory_key_dim ({self.memory_key_dim}) must be even: a query is split into two halves of d/2."
            )

    @classmethod
    def from_llama_config(cls, llama_config: PreTrainedConfig, **overrides) -> "MemoryLlamaConfig":
        """The MemoryLlama config with the same architecture as a `LlamaConfig` (no memory layers unless given)."""
        own_fields = [name for name in cls.__annotations__ if not name.startswith("memory_") and name != "mlp_type"]
        source = llama_config.to_dict()
        kwargs = {name: copy.deepcopy(source[name]) for name in own_fields if name in source}
        if source.get("dtype") is not None:
            kwargs["dtype"] = source["dtype"]
        kwargs.update(overrides)
        config = cls(**kwargs)
        config._attn_implementation = llama_config._attn_implementation
        return config

    @property
    def memory_slots(self) -> int:
        """Rows of the shared value table: `memory_n_keys ** 2`."""
        return self.memory_n_keys**2


__all__ = ["MemoryLlamaConfig", "default_memory_layers"]
