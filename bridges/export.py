"""`medharness export --to lm-eval|lmms-eval|vlmevalkit TASK --output DIR`: a folder the peer runs as it is.

Every export renders each sample with the task's prompt variant (the same text medharness sends), writes the
images as PNG files (lm-eval, lmms-eval) or base64 cells (VLMEvalKit), and a README saying how to run the peer
on it, how it is scored, and how to bring the peer's output back (`medharness import`).
"""

from __future__ import annotations

import base64
import io
import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from medharness.bridges import peer_task_utils
from medharness.bridges.importer import load_for_import
from medharness.bridges.readme import write_readme
from medharness.core.errors import ConfigError, DataError
from medharness.core.records import Sample
from medharness.taskfiles.task import Task, recipe_for

TARGETS = ("lm-eval", "lmms-eval", "vlmevalkit")
IMAGE_TAG = "<image>"  # lm-eval hf-multimodal / vllm-vlm: where an image goes in the text


@dataclass
class Exported:
    sample: Sample
    text: str  # the user message's text (lmms-eval, VLMEvalKit: images go before it)
    tagged: str  # the same with `<image>` where medharness places each image (lm-eval)
    system: str | None
    images: list[Any]  # PIL images


def peer_task_name(task: Task) -> str:
    return f"medharness_{task.name}"


def render_all(task: Task, limit: int | None) -> list[Exported]:
    """Each sample's prompt as medharness renders it, with its images loaded (a missing one is an error)."""
    samples = task.load_samples()[:limit] if limit else task.load_samples()
    if not samples:
        raise DataError(f"task {task.name}: no samples to export")
    settings = task.settings()
    out = []
    for sample in samples:
        prompt = task.render(sample, settings)
        system = next((p.text for m in prompt.messages if m.role == "system" for p in m.content if p.text),
                      None)
        user = next(m for m in prompt.messages if m.role == "user")
        text = "".join(p.text or "" for p in user.content if p.type == "text")
        tagged = "".join(IMAGE_TAG if p.type == "image" else (p.text or "") for p in user.content)
        images = [task.open_image(ref) for ref in prompt.image_refs()]
        out.append(Exported(sample, text, tagged, system, images))
    return out


def _prepare(output: Path) -> None:
    if output.exists() and any(output.iterdir()):
        raise ConfigError(f"--output {output} exists and is not empty; choose a new folder")
    output.mkdir(parents=True, exist_ok=True)


def _write_docs(task: Task, items: list[Exported], output: Path) -> None:
    """docs.jsonl + images/*.png + utils.py + medharness_task.json (what the exported utils.py reads)."""
    (output / "images").mkdir()
    with (output / "docs.jsonl").open("w", encoding="utf-8") as fh:
        for n, item in enumerate(items):
            refs = []
            for k, image in enumerate(item.images):
                ref = f"images/{n:06d}_{k}.png"
                image.convert("RGB").save(output / ref)
                refs.append(ref)
            doc = {"id": item.sample.id, "text": item.text, "prompt": item.tagged, "images": refs,
                   "target": str(item.sample.target), "sample": item.sample.model_dump_json()}
            fh.write(json.dumps(doc, ensure_ascii=False) + "\n")
    shutil.copyfile(peer_task_utils.__file__, output / "utils.py")
    recipe = recipe_for(task)
    spec: dict[str, Any] = {"task": task.name if task.path.parent.name == "tasks"
                            else str(task.path.resolve()),
            "prompt": task.prompt_name, "version": task.version, "convention": recipe.convention,
            "metrics": [m.label for m in per_sample_metrics(task)]}
    (output / peer_task_utils.SPEC_FILE).write_text(json.dumps(spec, indent=2) + "\n", encoding="utf-8")


def _metric_list(task: Task) -> list[dict[str, Any]]:
    """The task's per-sample metrics, averaged over the samples each applies to (corpus metrics, e.g. kappa,
    are left out: a peer's per-doc `process_results` cannot compute them; importing the output back gives
    them)."""
    return [{"metric": m.label, "aggregation": _Fn("utils.mean_defined"),
             "higher_is_better": m.metric.higher_is_better} for m in per_sample_metrics(task)]


def per_sample_metrics(task: Task) -> list[Any]:
    return [m for m in recipe_for(task).metrics if m.metric.fn is not None]


class _Fn(str):
    """A `!function module.name` value of a peer's task YAML."""


class _Dumper(yaml.SafeDumper):
    pass


_Dumper.add_representer(_Fn, lambda dumper, value: dumper.represent_scalar("!function", str(value)))


def _yaml(data: dict[str, Any]) -> str:
    return yaml.dump(data, Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=1000)


def _lm_eval_yaml(task: Task, max_new_tokens: int) -> dict[str, Any]:
    return {
        "task": peer_task_name(task),
        "custom_dataset": _Fn("utils.load_docs"),
        "dataset_kwargs": {"data_files": "docs.jsonl"},
        "test_split": "test",
        "output_type": "generate_until",
        "doc_to_image": _Fn("utils.doc_to_image"),
        "doc_to_text": "{{prompt}}",
        "doc_to_target": "target",
        "generation_kwargs": {"until": [], "do_sample": False, "temperature": 0.0,
                              "max_gen_toks": max_new_tokens},
        "process_results": _Fn("utils.process_results"),
        "metric_list": _metric_list(task),
        "metadata": {"version": task.version, "medharness_task": task.name, "prompt": task.prompt_name},
    }


def _lmms_eval_yaml(task: Task, output: Path, max_new_tokens: int) -> dict[str, Any]:
    return {
        "task": peer_task_name(task),
        "dataset_path": "json",
        # lmms-eval loads with datasets.load_dataset and no task-relative paths: absolute, so re-export
        # if moved
        "dataset_kwargs": {"data_files": {"test": str((output / "docs.jsonl").resolve())}},
        "test_split": "test",
        "output_type": "generate_until",
        "doc_to_visual": _Fn("utils.doc_to_visual"),
        "doc_to_text": _Fn("utils.doc_to_text"),
        "doc_to_target": "target",
        "generation_kwargs": {"max_new_tokens": max_new_tokens, "temperature": 0.0, "do_sample": False,
                              "until": []},
        "process_results": _Fn("utils.process_results"),
        "metric_list": _metric_list(task),
        "metadata": {"version": task.version, "medharness_task": task.name, "prompt": task.prompt_name},
    }


def _vlmevalkit_tsv(task: Task, items: list[Exported], output: Path) -> None:
    """`<dataset>.tsv` (index, base64 image, question, A..., answer, category) and `ids.tsv` (index -> id)."""
    import pandas as pd

    n_options = max(len(i.sample.choices) for i in items)
    letters = [chr(65 + k) for k in range(n_options)]
    group = task.config.group_by[0] if task.config.group_by else None
    records, ids = [], []
    for index, item in enumerate(items):
        if len(item.images) != 1:
            raise DataError(f"task {task.name}: sample {item.sample.id} has {len(item.images)} images; this "
                            "export writes VLMEvalKit's one-image TSV")
        buffer = io.BytesIO()
        item.images[0].convert("RGB").save(buffer, format="PNG")
        choices = item.sample.choices
        target = str(item.sample.target)
        row: dict[str, Any] = {"index": index, "image": base64.b64encode(buffer.getvalue()).decode("ascii"),
                               "question": item.text}
        row.update({letter: (choices[k] if k < len(choices) else None) for k, letter in enumerate(letters)})
        row["answer"] = letters[choices.index(target)] if target in choices else target
        row["category"] = str(item.sample.meta.get(group, "")) if group else task.name
        records.append(row)
        ids.append({"index": index, "id": item.sample.id, "question": item.text})
    name = peer_task_name(task)
    pd.DataFrame.from_records(records).to_csv(output / f"{name}.tsv", sep="\t", index=False)
    pd.DataFrame.from_records(ids).to_csv(output / "ids.tsv", sep="\t", index=False)


def export_task(target: str, task_ref: str, output: Path, data_dir: str | None = None,
                overrides: dict[str, Any] | None = None, limit: int | None = None) -> Path:
    """Write the folder; return the path of its main file (the task YAML or the dataset TSV)."""
    if target not in TARGETS:
        raise ConfigError(f"--to {target!r}: one of {', '.join(TARGETS)}")
    task = load_for_import(task_ref, data_dir, overrides)
    items = render_all(task, limit)
    _prepare(output)
    max_new_tokens = task.settings().max_new_tokens
    name = peer_task_name(task)
    if target == "vlmevalkit":
        _vlmevalkit_tsv(task, items, output)
        main = output / f"{name}.tsv"
    else:
        _write_docs(task, items, output)
        data = _lm_eval_yaml(task, max_new_tokens) if target == "lm-eval" else \
            _lmms_eval_yaml(task, output, max_new_tokens)
        main = output / f"{name}.yaml"
        main.write_text(_yaml(data), encoding="utf-8")
    write_readme(target, task, name, [i.system for i in items], output, max_new_tokens)
    return main
