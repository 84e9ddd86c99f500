"""Tests of MemoryLlama: exact product-key lookup, Llama equivalence, the shared value table, its learning rate and
counts; saving, generation, checkpointing and training through the shared ``model_tester.CausalLMTester``."""

import json

import pytest
import torch
from model_tester import CausalLMTester
from safetensors import safe_open
from transformers import LlamaConfig, LlamaForCausalLM, Trainer, TrainingArguments

import hf_capacity.models  # noqa: F401  (registers "memory_llama" with the Auto classes)
from hf_capacity.models.memory_llama import (
    MemoryLlamaConfig,
    MemoryLlamaForCausalLM,
    MemoryPlusLayer,
    default_memory_layers,
    memory_lookup,
    product_key_topk,
)

VOCAB = 64


def tiny_config(**overrides) -> MemoryLlamaConfig:
    kwargs = dict(
        vocab_size=VOCAB,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=3,
        num_attention_heads=4,
        memory_layers=[0, 2],
        memory_n_keys=8,
        memory_heads=4,
        memory_topk=4,
        memory_key_dim=8,
        pad_token_id=0,
        eos_token_id=None,
        bos_token_id=None,
    )
    kwargs.update(overrides)
    return MemoryLlamaConfig(**kwargs)


def tiny_model(seed: int = 0, **overrides) -> MemoryLlamaForCausalLM:
    torch.manual_seed(seed)
    return MemoryLlamaForCausalLM(tiny_config(**overrides)).eval()


def random_ids(batch: int = 2, length: int = 10, seed: int = 1) -> torch.Tensor:
    return torch.randint(1, VOCAB, (batch, length), generator=torch.Generator().manual_seed(seed))


# -- config ---------------------------------------------------------------------------------------------------------


def test_default_memory_layers_spread_like_the_paper():
    assert default_memory_layers(24) == [4, 12, 20]
    assert default_memory_layers(6) == [1, 3, 5]
    assert default_memory_layers(12, count=1) == [6]


def test_plain_llama_by_default():
    config = MemoryLlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4)
    assert config.memory_layers == [] and config.memory_value_dim == 32
    assert MemoryLlamaForCausalLM(config).model.memory_values is None


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(memory_layers=[3]), "outside 0..2"),
        (dict(memory_layers=[-1]), "outside 0..2"),
        (dict(memory_layers=[1, 1]), "twice"),
        (dict(hidden_size=30), "not a multiple of num_attention_heads"),
        (dict(memory_topk=9), "cannot exceed memory_n_keys"),
        (dict(memory_key_dim=7), "must be even"),
        (dict(mlp_type="swiglu"), "unknown mlp_type"),
    ],
)
def test_config_validation_errors(overrides, message):
    with pytest.raises(ValueError, match=message):
        tiny_config(**overrides)


# -- the product-key lookup ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("k", [1, 5, 10])
def test_product_key_topk_is_exact_over_all_slots(k):
    tokens, heads, d, n_keys = 50, 3, 12, 10
    generator = torch.Generator().manual_seed(0)
    query = torch.randn(tokens, heads, d, generator=generator, dtype=torch.float64)
    half_keys = torch.randn(heads, 2, n_keys, d // 2, generator=generator, dtype=torch.float64)

    scores, slots = product_key_topk(query, half_keys, k)
    weights = torch.softmax(scores.float(), dim=-1)

    for h in range(heads):
        q1, q2 = query[:, h, : d // 2], query[:, h, d // 2 :]
        # every slot a*n_keys + b scores q1·K1[a] + q2·K2[b]
        all_scores = ((q1 @ half_keys[h, 0].T)[:, :, None] + (q2 @ half_keys[h, 1].T)[:, None, :]).flatten(1)
        expected_scores, expected_slots = all_scores.topk(k, dim=-1)
        torch.testing.assert_close(scores[:, h], expected_scores)
        assert torch.equal(slots[:, h], expected_slots)
        torch.testing.assert_close(weights[:, h], torch.softmax(expected_scores.float(), dim=-1))


def test_embedding_bag_lookup_equals_naive_gather():
    tokens, heads, k, rows, v = 20, 4, 6, 100, 16
    generator = torch.Generator().manual_seed(0)
    values = torch.randn(rows, v, generator=generator, requires_grad=True)
    slots = torch.randint(0, rows, (tokens, heads, k), generator=generator)
    weights = torch.rand(tokens, heads, k, generator=generator).softmax(-1).requires_grad_()

    fast = memory_lookup(values, slots, weights)
    naive = (values[slots] * weights[..., None]).sum(dim=(1, 2))  # materialises (tokens, H, k, v)
    torch.testing.assert_close(fast, naive)

    probe = torch.randn(tokens, v, generator=generator)
    fast_grads = torch.autograd.grad((fast * probe).sum(), (values, weights))
    naive_grads = torch.autograd.grad((naive * probe).sum(), (values, weights))
    for fast_grad, naive_grad in zip(fast_grads, naive_grads):
        torch.testing.assert_close(fast_grad, naive_grad)


# -- equivalence with Llama -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
def test_from_llama_without_memory_layers_matches_llama_logits(attn):
    """The LLaMA blocks (marked "Mirrors transformers.models.llama...") compute what transformers' LLaMA computes:
    same logits (left padding included), loss and cached greedy generation, so a change on either side fails here."""
    torch.manual_seed(0)
    llama_config = LlamaConfig(
        vocab_size=VOCAB,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        rope_parameters={"rope_type": "default", "rope_theta": 500.0},
    )
    llama = LlamaForCausalLM(llama_config).eval()
    model = MemoryLlamaForCausalLM.from_llama(llama).eval()
    assert model.config.memory_layers == [] and model.config.num_key_value_heads == 2
    llama.config._attn_implementation = model.config._attn_implementation = attn

    ids = random_ids()
    mask = torch.ones_like(ids)
    mask[0, :3] = 0  # left padding exercises the causal-mask path
    with torch.no_grad():
        expected = llama(ids, attention_mask=mask, labels=ids)
        actual = model(ids, attention_mask=mask, labels=ids)
    torch.testing.assert_close(actual.logits, expected.logits, atol=1e-5, rtol=0)
    torch.testing.assert_close(actual.loss, expected.loss)
    prompt = ids[1:, :4]
    assert torch.equal(model.generate(prompt, max_new_tokens=6, do_sample=False),
                       llama.generate(prompt, max_new_tokens=6, do_sample=False))


def test_from_llama_can_add_memory_layers():
    torch.manual_seed(0)
    llama = LlamaForCausalLM(
        LlamaConfig(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4)
    )
    memory = dict(memory_layers=[1], memory_n_keys=8, memory_key_dim=8, memory_topk=4)
    model = MemoryLlamaForCausalLM.from_llama(llama, **memory)
    assert isinstance(model.model.layers[1].mlp, MemoryPlusLayer)
    assert torch.equal(model.model.layers[0].mlp.up_proj.weight, llama.model.layers[0].mlp.up_proj.weight)


# -- the shared value table -----------------------------------------------------------------------------------------


def test_value_table_is_one_tensor_fed_by_every_memory_layer():
    model = tiny_model()
    table = model.model.memory_values
    state = model.state_dict()
    assert [name for name, tensor in state.items() if tensor.data_ptr() == table.data_ptr()] == ["model.memory_values"]
    assert [name for name in state if "values" in name] == ["model.memory_values"]
    assert not any("memory_values" in name for name, _ in model.model.layers.named_parameters())

    seen = {}  # layer index -> (table it was given, rows it read)

    def record(index):
        def hook(layer, args):
            hidden_states, memory_values = args
            slots, _ = layer.lookup(hidden_states.reshape(-1, hidden_states.shape[-1]))
            seen[index] = (memory_values, set(slots.flatten().tolist()))

        return hook

    for index in model.config.memory_layers:
        model.model.layers[index].mlp.register_forward_pre_hook(record(index))
    ids = random_ids()
    model(ids, labels=ids).loss.backward()

    assert set(seen) == {0, 2}
    assert all(table is model.model.memory_values for table, _ in seen.values())
    rows_read = seen[0][1] | seen[2][1]
    rows_with_grad = set(model.model.memory_values.grad.abs().sum(-1).nonzero().flatten().tolist())
    assert rows_with_grad == rows_read
    assert seen[0][1] - seen[2][1] and seen[2][1] - seen[0][1]  # each layer contributes rows of its own


# -- the checks every family passes (model_tester.py) ---------------------------------------------------------------


class TestMemoryLlamaCommon(CausalLMTester):
    model_class = MemoryLlamaForCausalLM
    code_files = ("modeling_memory_llama.py", "configuration_memory_llama.py")
    train_steps, loss_ratio = 15, 0.7

    def tiny_model(self, seed: int = 0, **overrides) -> MemoryLlamaForCausalLM:
        return tiny_model(seed, **overrides)

    def random_ids(self, batch: int = 2, length: int = 10, seed: int = 1) -> torch.Tensor:
        return random_ids(batch, length, seed)

    def check_saved_folder(self, folder) -> None:
        with safe_open(folder / "model.safetensors", "pt") as saved:
            assert [key for key in saved.keys() if "memory" in key] == ["model.memory_values"]  # one table
        assert json.loads((folder / "config.json").read_text())["auto_map"]["AutoModelForCausalLM"] == (
            "modeling_memory_llama.MemoryLlamaForCausalLM"
        )

    def first_attention(self, model):
        return model.model.layers[0].self_attn

    def training_run(self):
        model = tiny_model().train()
        optimizer = torch.optim.AdamW(model.optimizer_param_groups(lr=3e-3, weight_decay=0.0, memory_value_lr=3e-2))
        return model, optimizer, random_ids(batch=4, length=12)


# -- the table's own learning rate ------------------------------------------------------------------------------------


def test_optimizer_param_groups_give_the_table_its_own_lr():
    model = tiny_model()
    groups = {group["name"]: group for group in model.optimizer_param_groups(lr=1e-4, weight_decay=0.1)}
    assert set(groups) == {"decay", "no_decay", "memory_values"}
    assert groups["memory_values"]["params"] == [model.model.memory_values]
    assert groups["memory_values"]["lr"] == model.config.memory_value_lr == 1e-3
    assert groups["memory_values"]["weight_decay"] == 0.0 and groups["no_decay"]["weight_decay"] == 0.0
    assert all(param.ndim == 1 for param in groups["no_decay"]["params"])  # biases and norm gains
    counted = sum(param.numel() for group in groups.values() for param in group["params"])
    assert counted == model.num_parameters()


def test_trainer_uses_the_param_groups(tmp_path):
    model = tiny_model().train()
    table_before = model.model.memory_values.detach().clone()
    optimizer = torch.optim.AdamW(model.optimizer_param_groups(lr=1e-4, weight_decay=0.01, memory_value_lr=5e-3))
    dataset = [{"input_ids": ids, "labels": ids} for ids in random_ids(batch=8, length=12)]
    args = TrainingArguments(
        output_dir=str(tmp_path),
        max_steps=3,
        per_device_train_batch_size=4,
        use_cpu=True,
        report_to=[],
        save_strategy="no",
        logging_steps=1,
    )
    trainer = Trainer(model=model, args=args, train_dataset=dataset, optimizers=(optimizer, None))
    trainer.train()

    groups = {group["name"]: group for group in trainer.optimizer.param_groups}
    assert groups["memory_values"]["initial_lr"] == 5e-3  # the scheduler Trainer built scales each group's own lr
    assert groups["decay"]["initial_lr"] == 1e-4
    assert trainer.state.global_step == 3
    assert not torch.equal(model.model.memory_values.detach(), table_before)


# -- counts and options ---------------------------------------------------------------------------------------------


def test_capacity_parameter_breakdown_by_hand():
    model = tiny_model()  # table 8² rows × 32; 2 memory layers × 4 heads × top-4 × 32 read per token
    expected = {"inactive_per_token": 64 * 32 - 2 * 4 * 4 * 32, "memory_values": 64 * 32}
    assert model.capacity_parameter_breakdown() == expected
    small = tiny_model(memory_n_keys=4)  # 16 rows × 32 = 512 < 1024 read: nothing is inactive
    assert small.capacity_parameter_breakdown() == {"inactive_per_token": 0, "memory_values": 512}
    assert tiny_model(memory_layers=[]).capacity_parameter_breakdown() == {"inactive_per_token": 0, "memory_values": 0}


def test_qk_norm_makes_the_lookup_invariant_to_key_scale():
    model = tiny_model(memory_qk_norm=True)
    layer = model.model.layers[0].mlp
    x = torch.randn(30, 32)
    slots, weights = layer.lookup(x)
    with torch.no_grad():
        layer.half_keys.mul_(3.0)
    scaled_slots, scaled_weights = layer.lookup(x)
    assert torch.equal(slots, scaled_slots)
    torch.testing.assert_close(weights, scaled_weights)
    ids = random_ids()
    model(ids, labels=ids).loss.backward()
    assert layer.query_norm.weight.grad is not None


def test_output_gate_starts_at_one_half():
    gated, plain = tiny_model(memory_output_gate=True), tiny_model()
    gated.load_state_dict(plain.state_dict(), strict=False)
    gate = gated.model.layers[0].mlp.output_gate
    torch.nn.init.zeros_(gate.weight)
    x = torch.randn(2, 5, 32)
    values = plain.model.memory_values
    with torch.no_grad():
        torch.testing.assert_close(gated.model.layers[0].mlp(x, values), 0.5 * plain.model.layers[0].mlp(x, values))
    ids = random_ids()
    gated(ids, labels=ids).loss.backward()
    assert gate.weight.grad.abs().sum() > 0


def test_standard_mlp_is_ungated():
    model = tiny_model(mlp_type="standard", memory_layers=[1])
    mlp = model.model.layers[0].mlp
    assert not hasattr(mlp, "gate_proj")
    x = torch.randn(3, 32)
    with torch.no_grad():
        torch.testing.assert_close(mlp(x), mlp.down_proj(torch.nn.functional.silu(mlp.up_proj(x))))



def test_the_config_gives_each_mlp_type_its_parameter_matched_width():
    """Built directly, the config holds what `build_model` builds: 4d for the standard MLP, 8d/3 rounded up to a
    multiple of 8 for the gated one (both ≈ 8d² weights); a width given, or saved in a config, is kept."""
    shape = dict(hidden_size=96, num_hidden_layers=1, num_attention_heads=2)
    assert MemoryLlamaConfig(**shape, mlp_type="standard").intermediate_size == 384
    assert (MemoryLlamaConfig(**shape).intermediate_size == 256
            == MemoryLlamaConfig.default_intermediate_size("gated", 96))
    assert MemoryLlamaConfig(**shape, mlp_type="standard", intermediate_size=256).intermediate_size == 256
