"""Tests of the CapacityGPT2 family: configs, MLP/MoE variants, GPT-2 equivalence, PEFT, bnb, the fused loss; saving,
generation, checkpointing and training through the shared ``model_tester.CausalLMTester``."""

import importlib
import logging

import pytest
import torch
from model_tester import CausalLMTester
from transformers import AutoModelForCausalLM, BitsAndBytesConfig, GPT2Config, GPT2LMHeadModel

import hf_capacity.models
from hf_capacity.models.capacity_gpt2 import CapacityGPT2Config, CapacityGPT2ForCausalLM

VOCAB = 101


def tiny_config(**overrides) -> CapacityGPT2Config:
    """2 layers, 2 heads of 16: small enough for a 2-core CPU."""
    shape = dict(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, pad_token_id=0)
    return CapacityGPT2Config(**{**shape, **overrides})


def tiny_model(seed: int = 0, **overrides) -> CapacityGPT2ForCausalLM:
    torch.manual_seed(seed)
    return CapacityGPT2ForCausalLM(tiny_config(**overrides)).eval()


def random_ids(batch: int = 2, length: int = 12, seed: int = 1) -> torch.Tensor:
    return torch.randint(1, VOCAB, (batch, length), generator=torch.Generator().manual_seed(seed))


# ---------------------------------------------------------------- configuration


def test_from_name_builds_the_papers_shape():
    config = CapacityGPT2Config.from_name("gpt2-6-4", vocab_size=500)
    assert (config.num_hidden_layers, config.num_attention_heads, config.hidden_size) == (6, 4, 256)
    assert config.vocab_size == 500 and config.max_position_embeddings == 512
    assert config.position_embedding_type == "rotary" and config.tie_word_embeddings
    assert config.resid_pdrop == config.embd_pdrop == config.attn_pdrop == 0.0
    assert config.rope_parameters == {"rope_type": "default", "rope_theta": 10000.0}
    with pytest.raises(ValueError, match="gpt2-<layers>-<heads>"):
        CapacityGPT2Config.from_name("gpt2-small")


def test_default_intermediate_sizes_and_gpt2_aliases():
    assert tiny_config().intermediate_size == 128
    assert tiny_config(mlp_type="gated").intermediate_size == 85  # round(8·32/3): same parameters as 4d ungated
    assert tiny_config(mlp_type="quarter").intermediate_size == 32
    assert CapacityGPT2Config.default_intermediate_size("gated", 32) == 85
    assert tiny_config(num_experts=4).expert_intermediate_size == 32
    config = CapacityGPT2Config(n_embd=64, n_head=4, n_layer=3, n_positions=128)
    assert (config.hidden_size, config.num_attention_heads, config.num_hidden_layers) == (64, 4, 3)
    assert config.max_position_embeddings == 128


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(num_attention_heads=3), "divisible by `num_attention_heads`"),
        (dict(mlp_type="swiglu"), "Unknown `mlp_type`"),
        (dict(position_embedding_type="alibi"), "Unknown `position_embedding_type`"),
        (dict(num_experts=2, num_experts_per_tok=3), "cannot exceed `num_experts`"),
        (dict(hidden_size=-32), "`hidden_size` must be a positive integer"),
        (dict(intermediate_size=-1), "`intermediate_size` must be a positive integer"),
        (dict(num_experts=-1), "`num_experts` must be an integer >= 0"),
        (dict(num_experts=4, moe_capacity_factor_train=0.0), "must be > 0"),
    ],
)
def test_invalid_configs_raise_value_errors(overrides, message):
    with pytest.raises(ValueError, match=message):
        tiny_config(**overrides)


def test_registration_is_idempotent_and_auto_classes_resolve():
    importlib.reload(hf_capacity.models)
    model = AutoModelForCausalLM.from_config(tiny_config())
    assert isinstance(model, CapacityGPT2ForCausalLM)


# ---------------------------------------------------------------- forward / backward of every variant


@pytest.mark.parametrize("mlp_type", ["standard", "gated", "quarter", "none"])
@pytest.mark.parametrize("positions", ["rotary", "learned"])
def test_every_mlp_type_runs_forward_and_backward(mlp_type, positions):
    model = tiny_model(mlp_type=mlp_type, position_embedding_type=positions).train()
    ids = random_ids()
    out = model(ids, labels=ids)
    assert out.logits.shape == (2, 12, VOCAB) and out.aux_loss is None
    out.loss.backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    block = model.transformer.h[0]
    assert (block.mlp is None) == (mlp_type == "none")


def test_weight_init_follows_gpt2():
    model = CapacityGPT2ForCausalLM(tiny_config(hidden_size=256, num_hidden_layers=8, num_attention_heads=4))
    block = model.transformer.h[0]
    assert block.attn.c_attn.weight.std().item() == pytest.approx(0.02, rel=0.05)
    assert block.mlp.c_proj.weight.std().item() == pytest.approx(0.02 / 4, rel=0.05)  # 0.02 / sqrt(2·8)
    assert block.attn.c_attn.bias.abs().max() == 0 and block.ln_1.weight.min() == 1
    assert model.lm_head.weight is model.transformer.wte.weight


def test_moe_reports_aux_loss_and_adds_it_to_the_loss():
    model = tiny_model(num_experts=4, router_aux_loss_coef=0.5).train()
    ids = random_ids()
    out = model(ids, labels=ids)
    assert out.aux_loss is not None and out.aux_loss.item() > 0
    lm_only = model.loss_function(logits=out.logits, labels=ids, vocab_size=VOCAB)
    torch.testing.assert_close(out.loss, lm_only + 0.5 * out.aux_loss)
    out.loss.backward()
    assert model.transformer.h[0].mlp.router.weight.grad.abs().sum() > 0
    assert all(p.grad is not None for p in model.parameters())  # every expert is in the graph


def test_moe_drops_tokens_over_capacity():
    model = tiny_model(num_experts=4, moe_capacity_factor_train=0.25, moe_capacity_factor_eval=None)
    moe = model.transformer.h[0].mlp
    x = torch.randn(2, 32, 32)
    moe.train()
    assert moe.capacity(64) == 4  # ceil(0.25 · 64 tokens / 4 experts)
    dropped, _ = moe(x)
    moe.eval()
    kept, _ = moe(x)
    zero_rows = (dropped.reshape(64, -1).abs().sum(-1) == 0).sum().item()
    assert zero_rows >= 64 - 4 * 4 and (kept.reshape(64, -1).abs().sum(-1) == 0).sum() == 0
    out = model.train()(random_ids(length=32), labels=random_ids(length=32))
    assert torch.isfinite(out.loss)


def test_moe_top2_gated_experts_and_inactive_parameter_hook():
    model = tiny_model(num_experts=8, num_experts_per_tok=2, mlp_type="gated")
    expert = model.transformer.h[0].mlp.experts[0]
    per_expert = sum(p.numel() for p in expert.parameters())
    assert model.capacity_parameter_breakdown() == {"inactive_per_token": 6 * per_expert * 2, "memory_values": 0}
    assert tiny_model().capacity_parameter_breakdown() == {"inactive_per_token": 0, "memory_values": 0}
    out = model(random_ids(), labels=random_ids(), output_router_logits=True)
    assert len(out.router_logits) == 2 and out.router_logits[0].shape == (24, 8)


def test_loss_kwargs_reach_the_loss_function():
    """Trainer passes `num_items_in_batch` for gradient accumulation: the loss becomes a sum over that count."""
    model = tiny_model()
    ids = random_ids()
    mean_loss = model(ids, labels=ids).loss
    summed = model(ids, labels=ids, num_items_in_batch=torch.tensor(5)).loss
    torch.testing.assert_close(summed, mean_loss * ids[:, 1:].numel() / 5)


# ---------------------------------------------------------------- equivalences


def test_from_gpt2_matches_stock_gpt2_logits():
    torch.manual_seed(0)
    gpt2_config = GPT2Config(vocab_size=VOCAB, n_positions=64, n_embd=48, n_layer=2, n_head=3,
                             resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    gpt2 = GPT2LMHeadModel(gpt2_config).eval()
    ours = CapacityGPT2ForCausalLM.from_gpt2(gpt2).eval()
    assert ours.config.position_embedding_type == "learned" and ours.config.mlp_type == "standard"
    ids = random_ids(length=20)
    mask = torch.ones_like(ids)
    mask[1, :5] = 0  # left padding goes through the same mask code
    with torch.no_grad():
        for attention_mask in (None, mask):
            expected = gpt2(ids, attention_mask=attention_mask).logits
            torch.testing.assert_close(ours(ids, attention_mask=attention_mask).logits, expected, atol=1e-5, rtol=0)


def test_packed_documents_attend_only_to_themselves():
    model = tiny_model()
    doc_a, doc_b = random_ids(1, 7, seed=2), random_ids(1, 5, seed=3)
    packed = torch.cat([doc_a, doc_b], dim=1)
    position_ids = torch.cat([torch.arange(7), torch.arange(5)]).unsqueeze(0)
    with torch.no_grad():
        logits = model(packed, position_ids=position_ids).logits
        torch.testing.assert_close(logits[:, :7], model(doc_a).logits, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(logits[:, 7:], model(doc_b).logits, atol=1e-5, rtol=1e-5)


# ---------------------------------------------------------------- the checks every family passes (model_tester.py)


class TestCapacityGPT2Common(CausalLMTester):
    model_class = CapacityGPT2ForCausalLM
    code_files = ("modeling_capacity_gpt2.py", "configuration_capacity_gpt2.py")
    remote_code_atol = 1e-5  # a fresh process may use another thread count (another summation order)
    train_steps, loss_ratio = 25, 0.5

    def tiny_model(self, seed: int = 0, **overrides) -> CapacityGPT2ForCausalLM:
        return tiny_model(seed, **overrides)

    def random_ids(self, batch: int = 2, length: int = 12, seed: int = 1) -> torch.Tensor:
        return random_ids(batch, length, seed)

    def model_to_save(self):
        return tiny_model(num_experts=4)

    def checkpointing_model(self):
        return tiny_model(seed=3, num_experts=4)

    def first_attention(self, model):
        return model.transformer.h[0].attn

    def training_run(self):
        model = tiny_model(seed=4).train()
        return model, torch.optim.AdamW(model.parameters(), lr=3e-3), random_ids(4, 16, seed=5)

    @pytest.fixture(params=["rotary", "learned"])
    def variant(self, request) -> dict:
        return {"position_embedding_type": request.param}


def test_bf16_forward():
    model = tiny_model(num_experts=4).to(torch.bfloat16)
    out = model(random_ids(), labels=random_ids())
    assert out.logits.dtype == torch.bfloat16 and torch.isfinite(out.loss)


def test_lora_adapters_train_through_peft():
    from peft import LoraConfig, get_peft_model

    model = get_peft_model(tiny_model(), LoraConfig(r=4, lora_alpha=8, target_modules=["c_attn", "c_proj", "c_fc"]))
    trainable = [name for name, p in model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in name for name in trainable)
    assert len(trainable) == 2 * 2 * 4  # A and B for 4 projections in each of 2 blocks
    model.train()
    ids = random_ids(4, 16, seed=6)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    first = None
    for _ in range(15):
        loss = model(input_ids=ids, labels=ids).loss
        first = first if first is not None else loss.item()
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    assert loss.item() < first


# ---------------------------------------------------------------- bitsandbytes on CPU


@pytest.fixture(scope="module")
def saved_tiny_model(tmp_path_factory):
    path = tmp_path_factory.mktemp("tiny_capacity_gpt2")
    tiny_model(hidden_size=64, num_attention_heads=2).save_pretrained(path)
    return path


def _bitsandbytes_cpu_available() -> bool:
    try:
        import bitsandbytes  # noqa: F401
    except Exception:
        return False
    return True


@pytest.mark.skipif(not _bitsandbytes_cpu_available(), reason="bitsandbytes CPU backend unavailable")
@pytest.mark.parametrize(
    "quantization",
    [
        BitsAndBytesConfig(load_in_8bit=True),
        BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.bfloat16),
    ],
    ids=["int8", "nf4"],
)
def test_quantized_loading_runs_a_forward_pass(saved_tiny_model, quantization):
    import bitsandbytes as bnb

    logging.getLogger("bitsandbytes").setLevel(logging.ERROR)
    dtype = torch.bfloat16 if quantization.load_in_4bit else torch.float32
    model = CapacityGPT2ForCausalLM.from_pretrained(saved_tiny_model, quantization_config=quantization, dtype=dtype)
    layer_class = bnb.nn.Linear4bit if quantization.load_in_4bit else bnb.nn.Linear8bitLt
    assert isinstance(model.transformer.h[0].attn.c_attn, layer_class)
    reference = CapacityGPT2ForCausalLM.from_pretrained(saved_tiny_model).eval()
    ids = random_ids()
    with torch.no_grad():
        logits = model.eval()(ids).logits.float()
        expected = reference(ids).logits
    assert torch.isfinite(logits).all()
    assert torch.nn.functional.cosine_similarity(logits.flatten(), expected.flatten(), dim=0) > 0.95


@pytest.mark.parametrize("accumulated_items", [None, 37])
def test_fused_loss_gives_the_plain_loss_and_gradients(accumulated_items):
    labels = random_ids(3, 12, seed=6)
    labels[0, :4] = -100  # ignored positions (padding)
    results = []
    for fused in (False, True):
        model = tiny_model(seed=2, fused_loss=fused).train()
        kwargs = {} if accumulated_items is None else {"num_items_in_batch": torch.tensor(accumulated_items)}
        out = model(random_ids(3, 12, seed=5), labels=labels, **kwargs)
        out.loss.backward()
        results.append((out.loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}, out.logits))
    (plain_loss, plain_grads, plain_logits), (fused_loss, fused_grads, fused_logits) = results
    torch.testing.assert_close(fused_loss, plain_loss, rtol=1e-5, atol=1e-6)
    for name, grad in plain_grads.items():
        torch.testing.assert_close(fused_grads[name], grad, rtol=1e-4, atol=1e-6, msg=name)
    assert plain_logits is not None and fused_logits is None  # the fused path never builds the logits


def test_fused_loss_applies_only_in_training():
    model = tiny_model(fused_loss=True).eval()
    ids = random_ids()
    out = model(ids, labels=ids)
    assert out.logits is not None and torch.isfinite(out.loss)


def test_fused_loss_is_exact_where_a_probability_underflows():
    from hf_capacity.models.capacity_gpt2.modeling_capacity_gpt2 import FusedLinearCrossEntropy

    hidden = torch.tensor([[1.0, 0.0], [0.0, 1.0]], requires_grad=True)
    weight = torch.tensor([[200.0, 0.0], [0.0, 200.0], [-200.0, 0.0]], requires_grad=True)
    labels = torch.tensor([2, 1])  # row 0's target has probability e^-400: far below float32's range
    fused = FusedLinearCrossEntropy.apply(hidden, weight, labels, 128)
    plain = torch.nn.functional.cross_entropy(hidden @ weight.T, labels, reduction="sum")
    torch.testing.assert_close(fused, plain)
    assert fused.item() == pytest.approx(400.0, rel=1e-5)


def test_a_capacity_run_builds_moe_with_the_papers_capacity_factors(bios_data):
    """32 experts top-1, capacity factor 2 in training and 8 at test (Allen-Zhu & Li), unless the run says else."""
    from hf_capacity.training import CapacityTrainingConfig, build_model

    model = build_model(CapacityTrainingConfig(model="gpt2-1-2", head_dim=16, num_experts=32, progress=False),
                        bios_data.tokenizer)
    config = model.config
    assert (config.num_experts, config.num_experts_per_tok) == (32, 1)
    assert (config.moe_capacity_factor_train, config.moe_capacity_factor_eval) == (2.0, 8.0)
    free = build_model(CapacityTrainingConfig(model="gpt2-1-2", head_dim=16, num_experts=4,
                                              moe_capacity_factor_eval=None, progress=False), bios_data.tokenizer)
    assert free.config.moe_capacity_factor_eval is None


@pytest.mark.parametrize("padded_rows", [None, 64])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_fused_loss_is_the_plain_loss_across_chunks_with_ignored_rows(dtype, padded_rows):
    """Chunks of 5 rows over 23 tokens (a ragged last chunk), a third of them ignored, one chunk wholly ignored; the
    50-token head as it is and laid out with 64 rows (14 padding rows that must not change a thing)."""
    from hf_capacity.models.capacity_gpt2.modeling_capacity_gpt2 import FusedLinearCrossEntropy

    generator = torch.Generator().manual_seed(3)
    hidden = torch.randn(23, 8, generator=generator).to(dtype).requires_grad_()
    weight = torch.randn(50, 8, generator=generator).to(dtype).requires_grad_()
    labels = torch.randint(0, 50, (23,), generator=generator)
    labels[torch.randperm(23, generator=generator)[:8]] = -100
    labels[5:10] = -100
    fused = FusedLinearCrossEntropy.apply(hidden, weight, labels, 5, padded_rows)
    fused_grads = torch.autograd.grad(fused * 0.5, (hidden, weight))
    assert fused_grads[1].shape == weight.shape
    plain = torch.nn.functional.cross_entropy((hidden @ weight.T).float(), labels, reduction="sum")
    plain_grads = torch.autograd.grad(plain * 0.5, (hidden, weight))
    tolerance = {"rtol": 1e-5, "atol": 1e-5} if dtype == torch.float32 else {"rtol": 2e-2, "atol": 2e-2}
    torch.testing.assert_close(fused.float(), plain, **tolerance)
    for got, expected in zip(fused_grads, plain_grads):
        torch.testing.assert_close(got.float(), expected.float(), **tolerance)
    assert (fused_grads[0][labels == -100] == 0).all()  # ignored rows get no gradient


def test_the_fused_head_is_padded_to_a_64_byte_stride_off_1_kib_multiples():
    from hf_capacity.models.capacity_gpt2.modeling_capacity_gpt2 import fused_padded_rows

    assert [fused_padded_rows(v) for v in (2745, 5096, 2752, 1500, 4096, 2048, 250, 1)] == [
        2752, 5104, 2752, 1504, 4112, 2064, 272, 16]


def test_padding_the_fused_head_changes_neither_loss_nor_gradients():
    """The padded layout against the unpadded one on the same inputs: equal to float rounding, in float64."""
    from hf_capacity.models.capacity_gpt2.modeling_capacity_gpt2 import FusedLinearCrossEntropy

    generator = torch.Generator().manual_seed(5)
    hidden = torch.randn(70, 16, generator=generator, dtype=torch.float64).requires_grad_()
    weight = torch.randn(2745, 16, generator=generator, dtype=torch.float64).requires_grad_()
    labels = torch.randint(0, 2745, (70,), generator=generator)
    labels[::7] = -100
    results = []
    for rows in (None, 2752):
        loss = FusedLinearCrossEntropy.apply(hidden, weight, labels, 32, rows)
        results.append((loss, *torch.autograd.grad(loss, (hidden, weight))))
    for unpadded, padded in zip(*results):
        torch.testing.assert_close(padded, unpadded, rtol=1e-12, atol=1e-12)
