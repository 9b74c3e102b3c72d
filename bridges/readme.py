"""The README.md of an exported task folder: how to run the peer on it, how it scores, how to bring it
back."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from medharness.taskfiles.task import recipe_for

if TYPE_CHECKING:
    from medharness.taskfiles.task import Task

RUN = {
    "lm-eval": """```bash
lm_eval --model hf-multimodal --model_args pretrained=MODEL_DIR,max_images=1 --apply_chat_template \\
    --include_path {folder} --tasks {name} --batch_size 8 --log_samples --output_path OUT
# or --model vllm-vlm; the samples file is OUT/<model>/samples_{name}_<time>.jsonl
medharness import --from lm-eval OUT/<model>/samples_{name}_<time>.jsonl --task {task} \
--output runs/lm-eval-{task}
```""",
    "lmms-eval": """```bash
python -m lmms_eval --model huggingface --model_args pretrained=MODEL_DIR,device=cpu,device_map=cpu \\
    --include_path {folder} --tasks {name} --batch_size 1 --log_samples --output_path OUT
# lmms-eval's samples file drops the doc: ids come from docs.jsonl by doc_id (row number)
medharness import --from lmms-eval OUT/<model>/<time>_samples_{name}.jsonl --id-map {folder}/docs.jsonl \\
    --task {task} --output runs/lmms-eval-{task}
```""",
    "vlmevalkit": """Copy `{name}.tsv` into VLMEvalKit's data folder (`$LMUData`) and run it as a custom \
dataset
(`python run.py --data {name} --model MODEL`); VLMEvalKit writes `<model>_{name}.xlsx`. Then:

```bash
medharness import --from vlmevalkit outputs/MODEL/MODEL_{name}.xlsx --id-map {folder}/ids.tsv \\
    --task {task} --output runs/vlmevalkit-{task}
```""",
}

SCORING = {
    "lm-eval": "`process_results` in `utils.py` calls medharness's scorer (the task's parser chain and "
               "metrics), so lm-eval reports the numbers medharness would give for the same texts; "
               "medharness must be importable in lm-eval's environment.",
    "lmms-eval": "`process_results` in `utils.py` calls medharness's scorer, as for lm-eval; medharness must "
                 "be importable in lmms-eval's environment. The docs path in the YAML is absolute (lmms-eval "
                 "loads with `datasets.load_dataset`): export again after moving this folder.",
    "vlmevalkit": "VLMEvalKit scores with its own metric: rows with options `A`...  are multiple-choice "
                  "(VLMEvalKit builds its own prompt from `question` and the options, and may call an LLM to "
                  "extract the letter), rows without are VQA. For medharness's number, import the prediction "
                  "file back. `index` is the row number of this TSV; `ids.tsv` maps it to medharness's "
                  "sample ids.",
}


def write_readme(target: str, task: Task, name: str, systems: Sequence[str | None], output: Path,
                 max_new_tokens: int) -> None:
    """README.md of an export: `systems` holds each exported sample's system message (None: none)."""
    recipe = recipe_for(task)
    distinct = {s for s in systems if s}
    lines = [
        f"# {name}: medharness task `{task.name}` (version {task.version}) for {target}",
        "",
        (f"{len(systems)} samples, prompt variant `{task.prompt_name}` rendered by medharness (the text it "
         f"sends to a model), greedy, at most {max_new_tokens} new tokens. Metrics: "
         f"{', '.join(m.label for m in recipe.metrics)} (convention `{recipe.convention}`)."),
        "",
        "## Run",
        "",
        RUN[target].format(folder=output, name=name, task=task.name),
        "",
        "## Scoring",
        "",
        SCORING[target],
    ]
    if distinct:
        lines += ["", "## System message", "",
                  ("The prompt variant has a system message, which a task file of this peer cannot carry: "
                   "pass it to the peer (lm-eval `--system_instruction`, lmms-eval `system_prompt=` "
                   "model argument):"), ""]
        lines += [f"> {s}" for s in sorted(distinct)]
    (output / "README.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
