"""Run reports: results.json, the training-curve PNG and the Hub model card (from ``model_cards/`` templates)."""

from __future__ import annotations

import json
import os
from pathlib import Path

from .evaluation import KnowledgeReport

CARD_TEMPLATE = "capacity_model_card.md"


def _template_path(name: str) -> Path:
    here = Path(__file__).resolve().parent
    for folder in (here / "model_cards", here.parent / "model_cards"):
        if (folder / name).is_file():
            return folder / name
    raise FileNotFoundError(f"model card template {name} not found next to the hf_capacity package")


def write_results(output_dir: str | os.PathLike, report: KnowledgeReport, **extra) -> Path:
    """Write ``results.json``: the knowledge report (``to_dict``) plus ``extra`` (history, quantized runs...)."""
    path = Path(output_dir) / "results.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({**report.to_dict(), **extra}, indent=2, default=float) + "\n")
    return path


def plot_training_curve(history: list[dict], bits_max: float, out_png: str | os.PathLike, title: str = "") -> Path:
    """Knowledge bits (and fraction learned) against training step, with the data's bits_max."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not history:
        raise ValueError("history is empty: nothing to plot")
    steps = [h["step"] for h in history]
    bits = [h["knowledge_bits"] for h in history]
    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    ax.plot(steps, bits, marker="o", label="bits learned")
    ax.axhline(bits_max, color="gray", linestyle="--", label="bits_max (data)")
    ax.set_xlabel("training step")
    ax.set_ylabel("knowledge (bits)")
    ax.set_title(title or "knowledge learned during training")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    out = Path(out_png)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    plt.close(fig)
    return out


def model_card(
    report: KnowledgeReport,
    *,
    model_name: str,
    model_type: str = "causal",
    exposures: float | str = "n/a",
    training_summary: str = "",
    quantized: dict[str, dict] | None = None,
    repo_hint: str = "path/to/model",
):
    """A ``huggingface_hub.ModelCard`` with the capacity results and a ``model-index`` of eval results."""
    from huggingface_hub import EvalResult, ModelCard, ModelCardData

    d = report.to_dict()
    dataset_name = f"{report.family}(N={report.n_people})"

    def result(metric: str, value: float, name: str) -> EvalResult:
        return EvalResult(
            task_type="text-generation",
            task_name="Knowledge capacity",
            dataset_type=f"hf-capacity/{report.family}",
            dataset_name=dataset_name,
            metric_type=metric,
            metric_name=name,
            metric_value=float(value),
        )

    results = [
        result("knowledge_bits", d["bits"], "knowledge bits"),
        result("bits_per_param", d["bits_per_param"], "bits per parameter"),
        result("fraction_learned", d["fraction_learned"], "fraction of knowledge learned"),
    ]
    for scheme, q in (quantized or {}).items():
        results.append(result(f"bits_per_param_{scheme}", q["bits_per_param"], f"bits per parameter ({scheme})"))
    data = ModelCardData(
        model_name=model_name,
        library_name="transformers",
        tags=["hf-capacity", "knowledge-capacity", report.family],
        pipeline_tag="text-generation",
        eval_results=results,
    )
    rows = "\n".join(
        f"| {a} | {r['loss']:.4f} | {100 * r['accuracy']:.1f}% |" for a, r in report.per_attribute.items()
    )
    quantized_section = ""
    if quantized:
        quantized_section = "### After quantization (bitsandbytes)\n\n| scheme | bits per parameter | ratio to full precision |\n|---|---:|---:|\n"
        quantized_section += "\n".join(
            f"| {s} | {q['bits_per_param']:.4f} | {q['ratio_to_full_precision']:.3f} |" for s, q in quantized.items()
        ) + "\n"
    body = _template_path(CARD_TEMPLATE).read_text().format(
        model_name=model_name,
        model_type=model_type,
        family=report.family,
        n_people=f"{report.n_people:,}",
        n_evaluated=f"{report.n_evaluated:,}",
        exposures=exposures,
        bits=f"{d['bits']:,.0f}",
        bits_max=f"{d['bits_max']:,.0f}",
        fraction_learned=f"{100 * d['fraction_learned']:.1f}%",
        num_params=f"{d['num_params']:,}",
        bits_per_param=f"{d['bits_per_param']:.4f}",
        bits_max_per_param=f"{d['bits_max_per_param']:.4f}",
        num_params_non_embedding=f"{d['num_params_non_embedding']:,}",
        p1=f"{d['p1']:.4f}",
        p2=f"{d['p2']:.4f}",
        quantized_section=quantized_section,
        attribute_rows=rows,
        training_summary=training_summary or "See `results.json`.",
        repo_hint=repo_hint,
    )
    return ModelCard(f"---\n{data.to_yaml()}\n---\n\n{body}")
