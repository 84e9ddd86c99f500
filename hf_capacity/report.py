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


def plot_training_curve(history: list[dict], bits_max: float, out_png: str | os.PathLike, title: str = "", *,
                        num_params: int | None = None, exposures_per_step: float | None = None,
                        model: str | None = None, data: str | None = None) -> Path:
    """Write the knowledge curve PNG (``knowledge_curve.png``): bits learned from step 0 against exposures, bits
    per parameter on the right axis, model and data in the title. See ``plots.training_curve_figure``, which
    returns the figure itself."""
    from .plots import _save, training_curve_figure

    fig = training_curve_figure(history, bits_max, num_params=num_params, exposures_per_step=exposures_per_step,
                                model=model, data=data, title=title or None)
    return Path(_save(fig, out_png))


def model_card(
    report: KnowledgeReport,
    *,
    model_name: str,
    model_type: str = "causal",
    exposures: float | str = "n/a",
    training_summary: str = "",
    quantized: dict[str, dict] | None = None,
    repo_hint: str = "path/to/model",
    curve_png: str | None = None,
):
    """A ``huggingface_hub.ModelCard`` with the capacity results and a ``model-index`` of eval results.

    ``curve_png``: the knowledge curve's file name next to the card (``knowledge_curve.png``), embedded as an
    image; None leaves it out."""
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
        curve_section=f"![Knowledge learned during training]({curve_png})\n" if curve_png else "",
        repo_hint=repo_hint,
    )
    return ModelCard(f"---\n{data.to_yaml()}\n---\n\n{body}")
