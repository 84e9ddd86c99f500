"""KnowledgeData saved and loaded as a folder: a data folder or a model folder with remote code."""

import subprocess
import sys
import textwrap

import hf_capacity.models  # noqa: F401  (registers the families, so save_pretrained writes their code)
from hf_capacity.data import KnowledgeData
from hf_capacity.training import CapacityTrainingConfig, build_model


def test_loading_the_data_of_a_model_folder_never_prompts_or_touches_the_model_config(tmp_path, bios_data):
    model = build_model(CapacityTrainingConfig(model="gpt2-1-1", head_dim=16), bios_data.tokenizer)
    model.save_pretrained(tmp_path)  # config.json with auto_map and the modeling code: remote code
    bios_data.save(tmp_path)
    assert (tmp_path / "modeling_capacity_gpt2.py").is_file()
    script = textwrap.dedent(f"""
        from hf_capacity.data import KnowledgeData   # hf_capacity.models is not imported
        data = KnowledgeData.load({str(tmp_path)!r})
        print("people", data.population.n_people, "tokens", len(data.used_token_ids()))
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, stdin=subprocess.DEVNULL,
                            timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == f"people 300 tokens {len(bios_data.used_token_ids())}"
    assert "trust_remote_code" not in result.stderr and "[y/N]" not in result.stdout + result.stderr
    assert "model of type" not in result.stderr


def test_a_saved_data_folder_loads_back_the_same_renderings(tmp_path, bios_data):
    bios_data.save(tmp_path)
    loaded = KnowledgeData.load(tmp_path)
    assert loaded.renderer.render([0, 5], 3).tokens.tolist() == bios_data.renderer.render([0, 5], 3).tokens.tolist()
    assert loaded.bits_max().total == bios_data.bits_max().total
