"""Run reports: results.json, the training-curve PNG and the Hub model card (from ``model_cards/`` templates)."""

from __future__ import annotations

import json
import math
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


NO_RATIO = "n/a (the full-precision model stores no bits)"
"""What a report says for a quantized model's ratio to full precision when the full-precision model stored 0 bits."""


def json_safe(value):
    """``value`` with every NaN or infinite float (numpy's too) replaced by None, so ``json.dumps`` writes null:
    NaN is not JSON, and standard parsers refuse it."""
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):  # numpy scalars
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_results(output_dir: str | os.PathLike, report: KnowledgeReport, **extra) -> Path:
    """Write ``results.json``: the knowledge report (``to_dict``) plus ``extra`` (history, quantized runs...);
    a value that is not a finite number (a ratio to 0 bits) is written as null."""
    path = Path(output_dir) / "results.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(json_safe({**report.to_dict(), **extra}), indent=2, default=float) + "\n")
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
    adapter: dict | None = None,
    base_population: dict | None = None,
):
    """A ``huggingface_hub.ModelCard`` with the capacity results and a ``model-index`` of eval results.

    ``curve_png``: the knowledge curve's file name next to the card (``knowledge_curve.png``), embedded as an
    image; None leaves it out. ``adapter`` (``adapters.adapter_summary``, or ``{"method": "full", "base_model":
    ...}`` for full fine-tuning) makes it a card of a model trained from a base model: ``base_model`` in the
    metadata and, for LoRA/QLoRA, a valid adapter card (``library_name: peft``); ``base_population`` (what
    ``ForgettingCallback.summary`` returns) adds the base population's bits before and after."""
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
    is_peft = bool(adapter) and adapter.get("library") == "peft"
    tags = ["hf-capacity", "knowledge-capacity", report.family]
    if adapter:
        tags += [adapter["method"], "peft"] if is_peft else ["fine-tuned"]
    data = ModelCardData(
        model_name=model_name,
        library_name="peft" if is_peft else "transformers",
        base_model=str(adapter["base_model"]) if adapter and adapter.get("base_model") else None,
        tags=tags,
        pipeline_tag="text-generation",
        eval_results=results,
    )
    p = report.num_params
    params_label = "parameters P (paper's rule: used embedding rows, tied once)"
    if p.is_adapter:
        params_label = "trainable adapter parameters P (the base model's stay frozen)"
    bits_label, bits_max_label = "bits of knowledge learned", "bits in the data (bits_max)"
    if report.prior is not None:  # an adapter run: what it added over its base, of what is new
        bits_label += f" (net of the {report.prior.bits.total:,.0f} its base model held on these people)"
        if report.bits_max_measured.total != report.bits_max.total:
            bits_max_label = "new bits in the data (bits_max, without the base's diversity sets)"
    non_embedding_row = ("" if p.is_adapter else  # an adapter's P has no embedding to leave out
                         f"| non-embedding parameters | {d['num_params_non_embedding']:,} |")
    adapter_section = _adapter_section(adapter, base_population, p.base_paper_params) if adapter else ""
    if is_peft:
        use_section = (
            "```python\nfrom peft import PeftModel\nfrom transformers import AutoModelForCausalLM\n\n"
            f'base = AutoModelForCausalLM.from_pretrained("{adapter["base_model"]}", trust_remote_code=True)\n'
            f'model = PeftModel.from_pretrained(base, "{repo_hint}")\n```\n'
        )
    else:
        use_section = (
            "```python\nfrom transformers import AutoModelForCausalLM, AutoTokenizer\n\n"
            f'model = AutoModelForCausalLM.from_pretrained("{repo_hint}", trust_remote_code=True)\n'
            f'tokenizer = AutoTokenizer.from_pretrained("{repo_hint}")\n```\n'
        )
    rows = "\n".join(
        f"| {a} | {r['loss']:.4f} | {_number(r.get('uniform_loss'), '.4f', '—')} | {100 * r['accuracy']:.1f}% |"
        for a, r in report.per_attribute.items()
    )
    terms = [("name bits", "name_bits"), ("value bits", "value_bits")]
    if report.family == "bioD":
        terms.append(("diversity bits", "diversity_bits"))
    bits_rows = "\n".join(f"| {label} | {getattr(report.bits, key):,.0f} of {getattr(report.bits_max, key):,.0f} |"
                          for label, key in terms)
    losses = [("p1 (name loss, nats per person)", report.p1, report.p1_uniform),
              (f"p2 (value loss, {report.value_loss_unit})", report.p2, report.p2_uniform)]
    if report.p3 is not None:
        losses.append((f"p3 (first-chunk loss, {report.value_loss_unit})", report.p3, report.p3_uniform))
    loss_rows = "\n".join(f"| {label} | {value:.4f} | {_number(uniform, '.4f', 'n/a')} |"
                          for label, value, uniform in losses)
    quantized_section = ""
    if quantized:
        quantized_section = (
            "### After quantization (bitsandbytes)\n\n"
            "| scheme | bits per parameter | ratio to full precision |\n|---|---:|---:|\n"
        )
        quantized_section += "\n".join(
            f"| {s} | {q['bits_per_param']:.4f} | {_number(q['ratio_to_full_precision'], '.3f', NO_RATIO)} |"
            for s, q in quantized.items()
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
        bits_label=bits_label,
        bits_max_label=bits_max_label,
        non_embedding_row=non_embedding_row,
        bits_rows=bits_rows,
        loss_rows=loss_rows,
        quantized_section=quantized_section,
        attribute_rows=rows,
        training_summary=training_summary or "See `results.json`.",
        curve_section=f"![Knowledge learned during training]({curve_png})\n" if curve_png else "",
        params_label=params_label,
        adapter_section=adapter_section,
        use_section=use_section,
    )
    return ModelCard(f"---\n{data.to_yaml()}\n---\n\n{body}")


def _number(value: float | None, spec: str, missing: str) -> str:
    """``value`` formatted with ``spec``, or ``missing`` when it is None or not finite."""
    return format(value, spec) if value is not None and math.isfinite(value) else missing


def _adapter_section(adapter: dict, base_population: dict | None, base_params: int | None) -> str:
    """The card's "Trained from a base model" table: method, rank, base P and the base population's bits."""
    rows = [("base model", f"`{adapter.get('base_model')}`"), ("method", adapter["method"])]
    if adapter.get("r"):
        targets = adapter.get("target_modules")
        rows += [("LoRA rank r / alpha", f"{adapter['r']} / {adapter.get('lora_alpha')}"),
                 ("target modules", targets if isinstance(targets, str) else ", ".join(targets or []))]
    if base_params is None:  # full fine-tuning: the base population's count
        base_params = (base_population or {}).get("num_params")
    if base_params is not None:
        rows.append(("base model's P (paper's rule, on its own population's tokens)", f"{base_params:,}"))
    if base_population:
        bp = base_population
        rows.append(("base population", f"N = {bp['n_people']:,}, {bp['bits_max']:,.0f} bits in the data"))
        if bp.get("bits_before") is not None:
            rows.append(("its bits before → after", f"{bp['bits_before']:,.0f} → {bp['bits_after']:,.0f}"))
            share = f" ({1 - bp['fraction_kept']:.1%})" if bp.get("fraction_kept") is not None else ""
            rows.append(("bits forgotten", f"{bp['bits_forgotten']:,.0f}{share}"))
    table = "\n".join(f"| {k} | {v} |" for k, v in rows)
    return f"### Trained from a base model\n\n| quantity | value |\n|---|---|\n{table}\n\n"


def write_run_files(output_dir: str | os.PathLike, report: KnowledgeReport, *, history: list[dict],
                    exposures: float | None = None, exact_exposures: int | None = None,
                    exposures_per_step: float | None = None, exposures_described: str | None = None,
                    quantized: dict | None = None, model_type: str | None = None, adapter: dict | None = None,
                    base_population: dict | None = None, model_name: str | None = None, args=None,
                    state=None) -> list[Path]:
    """Write a finished run's ``results.json``, ``knowledge_curve.png`` and Hub model card (``README.md`` with
    ``model-index`` results) into ``output_dir``; returns the three paths.

    ``report``: the final knowledge measurement; ``history``: the measurements during training (dicts with
    ``step``), each given its exposures from ``exposures_per_step``; ``exposures``: the token-based average count,
    ``exact_exposures`` the exact one when the run made whole passes (it wins); ``exposures_described``: the
    card's wording of them; ``quantized``, ``adapter`` and ``base_population``: the summaries of the quantized,
    adapter and forgetting measurements; ``args``/``state``: the Trainer's, for the card's training summary."""
    out = Path(output_dir)
    history = [dict(h) for h in history]
    if exposures_per_step is not None:
        for h in history:
            h.setdefault("exposures", round(h["step"] * exposures_per_step, 4))
    extra = {"history": history, "exposures": exact_exposures if exact_exposures is not None else exposures,
             "exposures_exact": exact_exposures is not None, "quantized": quantized, "model_type": model_type}
    if adapter is not None:
        extra["adapter"] = adapter
    if base_population is not None:
        extra["base_population"] = base_population
    results = write_results(out, report, **extra)
    name = model_name or out.name
    plot = plot_training_curve(
        history, report.bits_max.total, out / "knowledge_curve.png", num_params=report.num_params.paper_params,
        exposures_per_step=exposures_per_step, data=f"{report.family}(N={report.n_people:,})",
        model=f"{name} ({model_type or 'causal LM'}, P = {report.num_params.paper_params:,})",
    )
    summary = ""
    if args is not None and state is not None:
        summary = (
            f"{state.global_step} steps, per-device batch {args.per_device_train_batch_size}, learning rate "
            f"{args.learning_rate}, weight decay {args.weight_decay}, schedule "
            f"{getattr(args.lr_scheduler_type, 'value', args.lr_scheduler_type)}"
            + (f", {exposures_described} exposures" if exposures_described else "")
            + "."
        )
    card = model_card(
        report,
        model_name=name,
        model_type=model_type or "causal",
        exposures=exposures_described or "n/a",
        training_summary=summary,
        quantized=quantized,
        repo_hint=getattr(args, "hub_model_id", None) or str(output_dir),
        curve_png=plot.name,
        adapter=adapter,
        base_population=base_population,
    )
    card_path = out / "README.md"
    card.save(card_path)
    return [results, plot, card_path]


def push_capacity_files(output_dir, repo_id: str, token: str | None = None):
    """Upload ``README.md`` (the capacity card), ``results.json`` and the plot of ``output_dir`` to ``repo_id``."""
    from huggingface_hub import HfApi
    from huggingface_hub.errors import OfflineModeIsEnabled

    try:
        return HfApi(token=token).upload_folder(
            repo_id=repo_id,
            folder_path=str(output_dir),
            allow_patterns=["README.md", "results.json", "knowledge_curve.png"],
            commit_message="hf-capacity: knowledge capacity results",
        )
    except OfflineModeIsEnabled as err:
        raise RuntimeError(
            f"cannot push to the Hub: offline mode is enabled (HF_HUB_OFFLINE=1). The files are in {output_dir}; "
            "push them later with `hf upload`."
        ) from err
