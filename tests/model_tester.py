"""The checks every model family of hf_capacity passes, written once (in the manner of transformers' model testers).

A family's test file subclasses ``CausalLMTester`` as ``Test<Family>Common``, says how to build a tiny model and
random ids, and overrides a hook where its model differs; the file itself keeps only the family's own features.
Checked here: save/load is bit-exact and the saved folder loads as remote code in a process without hf_capacity,
generation with the cache equals generation without, a left-padded batch generates what each prompt generates
alone, SDPA attention equals eager, gradient checkpointing gives the same gradients, a few steps drive the loss
down. Override the ``variant`` fixture to run the generation checks on several configurations.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest
import torch
from transformers import AutoModelForCausalLM


class CausalLMTester:
    model_class: type
    """The family's ``...ForCausalLM``, the class ``AutoModelForCausalLM`` resolves its saved folder to."""
    code_files: tuple[str, ...]
    """The files ``save_pretrained`` writes beside the weights for ``trust_remote_code``."""
    remote_code_atol: float = 0.0
    """How far a fresh process's logits may lie from this one's (0: bitwise equal)."""
    train_steps: int
    loss_ratio: float
    """After ``train_steps`` steps on one repeated batch, the loss is below ``loss_ratio`` × the first loss."""

    def tiny_model(self, seed: int = 0, **overrides) -> torch.nn.Module:
        raise NotImplementedError

    def random_ids(self, batch: int = 2, length: int = 10, seed: int = 1) -> torch.Tensor:
        raise NotImplementedError

    # -- hooks a family overrides where its model differs

    def model_to_save(self) -> torch.nn.Module:
        return self.tiny_model()

    def check_saved_folder(self, folder) -> None:
        """Family checks of a saved folder (e.g. which tensors the weights file holds)."""

    def checkpointing_model(self) -> torch.nn.Module:
        return self.tiny_model()

    def first_attention(self, model) -> torch.nn.Module:
        raise NotImplementedError

    def training_run(self) -> tuple[torch.nn.Module, torch.optim.Optimizer, torch.Tensor]:
        """(model in train mode, its optimizer, the batch it trains on again and again)."""
        raise NotImplementedError

    @pytest.fixture(params=[{}], ids=["default"])
    def variant(self, request) -> dict:
        """Config overrides the generation checks run with (one case each)."""
        return request.param

    # -- saving and loading

    def test_save_load_round_trip_is_bit_exact_and_loads_as_remote_code(self, tmp_path):
        model = self.model_to_save()
        ids = self.random_ids()
        with torch.no_grad():
            expected = model(ids).logits
        model.save_pretrained(tmp_path / "model")
        for name in self.code_files:
            assert (tmp_path / "model" / name).exists(), name
        self.check_saved_folder(tmp_path / "model")

        reloaded = AutoModelForCausalLM.from_pretrained(tmp_path / "model").eval()
        assert type(reloaded) is self.model_class
        # the rotary inverse frequencies are rebuilt, not left as meta-device garbage
        assert torch.equal(reloaded.base_model.rotary_emb.inv_freq, model.base_model.rotary_emb.inv_freq)
        with torch.no_grad():
            assert torch.equal(reloaded(ids).logits, expected)

        torch.save({"ids": ids, "logits": expected}, tmp_path / "expected.pt")
        script = textwrap.dedent(f"""
            import sys
            sys.modules["hf_capacity"] = None  # the package must not be needed: the saved code is self-contained
            import torch
            from transformers import AutoModelForCausalLM
            try:
                import hf_capacity
            except ImportError:
                pass
            else:
                raise SystemExit("hf_capacity was importable")
            model = AutoModelForCausalLM.from_pretrained({str(tmp_path / "model")!r}, trust_remote_code=True).eval()
            assert type(model).__module__.startswith("transformers_modules"), type(model).__module__
            saved = torch.load({str(tmp_path / "expected.pt")!r})
            with torch.no_grad():
                logits = model(saved["ids"]).logits
            torch.testing.assert_close(logits, saved["logits"], rtol=0, atol={self.remote_code_atol!r})
            print("remote-code-ok")
        """)
        env = dict(os.environ, HF_HUB_OFFLINE="1", HF_MODULES_CACHE=str(tmp_path / "modules"), HOME=str(tmp_path))
        result = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True,
                                timeout=300)
        assert "remote-code-ok" in result.stdout, result.stderr[-3000:]

    # -- generation

    def test_generate_with_cache_equals_generate_without(self, variant):
        model = self.tiny_model(**variant)
        prompt = self.random_ids(2, 5)
        settings = dict(max_new_tokens=8, do_sample=False, pad_token_id=0)
        with_cache = model.generate(prompt, use_cache=True, **settings)
        without_cache = model.generate(prompt, use_cache=False, **settings)
        assert with_cache.shape == (2, 13)
        assert torch.equal(with_cache, without_cache)

    def test_left_padded_batch_generates_what_each_prompt_generates_alone(self, variant):
        model = self.tiny_model(**variant)
        long_prompt, short_prompt = self.random_ids(1, 6, seed=2), self.random_ids(1, 3, seed=3)
        batch = torch.cat([long_prompt, torch.cat([torch.zeros(1, 3, dtype=torch.long), short_prompt], 1)])
        mask = torch.cat([torch.ones(1, 6), torch.cat([torch.zeros(1, 3), torch.ones(1, 3)], 1)]).long()
        settings = dict(max_new_tokens=6, do_sample=False, pad_token_id=0)
        for use_cache in (True, False):
            out = model.generate(batch, attention_mask=mask, use_cache=use_cache, **settings)
            alone = [model.generate(p, use_cache=use_cache, **settings) for p in (long_prompt, short_prompt)]
            assert torch.equal(out[0, 6:], alone[0][0, 6:])
            assert torch.equal(out[1, 6:], alone[1][0, 3:])

    # -- attention, checkpointing, training

    def test_eager_and_sdpa_attention_agree(self):
        model = self.tiny_model()
        ids = self.random_ids(2, 12)
        config = model.config
        with torch.no_grad():
            sdpa = model(ids).logits
            model.set_attn_implementation("eager")
            out = model(ids, output_attentions=True, output_hidden_states=True)
        torch.testing.assert_close(out.logits, sdpa, atol=1e-5, rtol=1e-5)
        assert len(out.attentions) == config.num_hidden_layers
        assert out.attentions[0].shape == (2, config.num_attention_heads, 12, 12)
        assert len(out.hidden_states) == config.num_hidden_layers + 1

    @pytest.mark.parametrize("use_reentrant", [False, True])
    def test_gradient_checkpointing_gives_the_same_gradients(self, use_reentrant):
        ids = self.random_ids()

        def gradients(checkpointing: bool) -> tuple[dict[str, torch.Tensor], int]:
            model = self.checkpointing_model().train()
            if checkpointing:
                model.activation_checkpointing_enable({"use_reentrant": use_reentrant})
            attention_calls = []
            self.first_attention(model).register_forward_hook(lambda *_: attention_calls.append(1))
            model(ids, labels=ids).loss.backward()
            return {name: p.grad.clone() for name, p in model.named_parameters()}, len(attention_calls)

        (plain, plain_calls), (checkpointed, checkpointed_calls) = gradients(False), gradients(True)
        assert (plain_calls, checkpointed_calls) == (1, 2)  # the checkpointed block is recomputed in backward
        assert plain.keys() == checkpointed.keys()
        for name in plain:
            torch.testing.assert_close(checkpointed[name], plain[name], msg=name)

    def test_a_few_training_steps_drive_the_loss_down(self):
        model, optimizer, ids = self.training_run()
        losses = []
        for _ in range(self.train_steps):
            loss = model(ids, labels=ids).loss
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
            losses.append(loss.item())
        assert losses[-1] < self.loss_ratio * losses[0]
