"""`medharness train`: resolve the recipe config, prepare samples / rewards / data, build the TRL trainer,
train, and write the output directory (the contract other stages rely on):

    OUTPUT/train.json            status running|finished|failed|interrupted, resolved config, final path,
                                 times
    OUTPUT/checkpoint-<step>/    TRL's checkpoints, each with the processor and `medharness.json`
    OUTPUT/final/                full weights or a LoRA adapter folder, the processor and `medharness.json`
    OUTPUT/logs.jsonl            one line per logging step (trainers/logs.py)
    OUTPUT/completions.jsonl     sampled completions with parsed answer and every reward component (GRPO)
    OUTPUT/train_samples.json    the training sample ids (and content keys), for held-out evaluation
    OUTPUT/evals/step-<N>/       with --eval-every / --eval-checkpoints: a `run` directory per scored
                                 checkpoint, the curve in train.json `evals` and logs.jsonl
                                 (trainers/evals.py)
    OUTPUT/launch/               with --launcher accelerate: the accelerate / DeepSpeed configs (launch.py)
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from medharness.backends.vlm_common import check_attn_implementation
from medharness.core.atomic import write_json_atomic, write_text_atomic
from medharness.core.datafiles import parse_json, read_text
from medharness.core.errors import ConfigError, DataError
from medharness.core.records import TrainLog
from medharness.core.secrets import scrub, scrub_value
from medharness.runs.folders import TRAIN_FILE, TRAIN_SAMPLES_FILE, TrainDir
from medharness.runs.runlog import LOCK_FILE, RunLock
from medharness.taskfiles.task import resolve_task_names
from medharness.trainers.checkpoints import check_vision_frozen, save_final
from medharness.trainers.config import Layers, build_config, load_layers
from medharness.trainers.evals import EvalRequest, TrainSamples, evaluate_checkpoints, plan
from medharness.trainers.launch import LAUNCH_DIR, LaunchSpec, launch_record
from medharness.trainers.prepare import load_train_task, prepare
from medharness.trainers.resume import (
    Checkpoint,
    check_adapter_checkpoint,
    final_from_checkpoint,
    is_done,
    last_checkpoint,
    load_full_checkpoint,
    raw_reload_quiet,
)
from medharness.trainers.schema import TrainConfig
from medharness.trainers.styles import record_styles, style_tasks

if TYPE_CHECKING:
    from medharness.trainers.prepare import Prepared

log = logging.getLogger(__name__)
# Keys a resumed run must share with the run it continues.
RESUME_KEYS = ("recipe", "model", "task", "prompt", "prompt_styles", "seed", "samples", "rewards", "lora",
               "rejected", "max_pixels", "options")


@dataclass
class TrainRequest:
    """The `medharness train` flags."""

    recipe: str | None = None
    presets: list[str] = field(default_factory=list)
    config_file: Path | None = None
    overrides: list[str] = field(default_factory=list)
    task: str | None = None
    model: str | None = None
    prompt: str | None = None
    data_dir: str | None = None
    samples_file: Path | None = None
    seed: int | None = None
    max_steps: int | None = None
    output: Path | None = None
    resume: bool = False
    evals: EvalRequest | None = None  # --eval-every / --eval-checkpoints (trainers/evals.py)


def resolve(req: TrainRequest) -> tuple[TrainConfig, Layers]:
    """The validated recipe config from presets, `--config`, flags and `-C` overrides."""
    every = req.evals.every if req.evals else None
    cli = {"task": req.task, "model": req.model, "prompt": req.prompt, "data_dir": req.data_dir,
           "seed": req.seed,
           "samples.file": str(req.samples_file) if req.samples_file else None,
           "trl.max_steps": req.max_steps, "trl.save_steps": every,
           "trl.save_strategy": "steps" if every else None}
    layers = load_layers(req.recipe, req.presets, req.config_file, cli, req.overrides)
    config = build_config(layers)
    if config.model and Path(config.model).expanduser().exists():  # a folder here: recorded absolute, so an
        # adapter's config and every manifest name a base that loads from anywhere (else: a hub id)
        config = config.model_copy(update={"model": str(Path(config.model).expanduser().resolve())})
    if every and (config.trl.get("save_steps"), config.trl.get("save_strategy")) != (every, "steps"):
        raise ConfigError(f"--eval-every {every} saves a checkpoint every {every} steps: remove the "
                          f"trl.save_steps / trl.save_strategy set at {layers.where(('trl', 'save_steps'))}")
    missing = [flag for flag, value in (("--model", config.model), ("--task", config.task)) if not value]
    if missing:
        raise ConfigError(f"train needs {' and '.join(missing)} (or `model:` / `task:` in --config)")
    check_attn_implementation(config.attn_implementation, "train")
    if config.prompt_styles:  # every style exists and reads answers as the run's prompt does
        task = load_train_task(config)
        style_tasks(task, config.prompt_styles, task.prompt_name, config.data_dir)
    return config, layers


def default_output(config: TrainConfig, layers: Layers) -> Path:
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    # a task given as a path: its file name, so the folder stays inside runs/train/
    task = re.sub(r"[^A-Za-z0-9_.+-]+", "-", Path(str(config.task)).stem).strip("-.") or "task"
    return Path("runs") / "train" / f"{'+'.join(layers.presets) or config.recipe}-{task}-{stamp}"


def dry_run(req: TrainRequest, data_elsewhere: bool = False,
            launch: LaunchSpec | None = None) -> dict[str, Any]:
    """`train --dry-run`: the config a run would train with, resolved and checked as `train` does before
    its model loads (presets, `--config`, flags and `-C`; the recipe's rewards with their weights; TRL's own
    config object, every setting), as one JSON-ready object. No model is loaded and nothing is written; the
    training samples are counted where their local copy is here. Its keys are the TrainConfig's fields
    (`trl` holding every resolved TRL argument, `rewards` the components), then what the run adds
    (`presets`, `output`, `data`, `prompts`, `evaluation`, `set_at`, `notes`). `data_elsewhere` (a sweep's
    dry run): a data folder not on this machine, and a k-shot id file its split stage has not written yet,
    are noted instead of refused. `launch` (`--launcher accelerate ...`): TRL's settings are checked at its
    world size, as the launching process checks them (`launch.check_trl_at_world_size`)."""
    import importlib.util

    from medharness.trainers.prepare import check_ablation
    from medharness.trainers.recipes.base import recipe_class
    from medharness.trainers.rewards import RewardSet, default_rewards

    config, layers = resolve(req)
    output = req.output or default_output(config, layers)
    evals = req.evals if req.evals is not None and req.evals.enabled else None
    if evals is not None and evals.tasks:
        resolve_task_names(evals.tasks)
    if req.resume:
        resume_point(output, config)
    recipe = recipe_class(config.recipe)()
    check_ablation(config, recipe)
    has_trl = importlib.util.find_spec("trl") is not None
    use_gpu = False
    if has_trl:  # every TRL key and value checked first, as `prepare` does
        import torch

        use_gpu = torch.cuda.is_available()
        checked_trl(config, layers, output, use_gpu, launch)
    task = load_train_task(config)
    prompt = task.prompt_name
    notes: list[str] = []
    rewards = None
    if recipe.uses_rewards:  # the components and weights `prepare` builds (no sample scored here)
        specs = (config.rewards or recipe.default_rewards(task, prompt, config)
                 or default_rewards(task, prompt))
        rewards = RewardSet(task, prompt, specs, [], model=config.model)
    settings = dict(config.trl)
    if rewards is not None:
        if "reward_weights" in settings:
            raise DataError("trl.reward_weights is set from the `rewards:` weights; remove it from trl:")
        settings["reward_weights"] = rewards.weights
        notes += ["trl.generation_kwargs: the model's vision placeholder ids are suppressed when it loads",
                  "each reward is checked on the gold answers as the run starts (with its reward models)"]
    data = _data(task, config, data_elsewhere)
    trl: dict[str, Any]
    if has_trl:
        with_weights = config.model_copy(update={"trl": settings})
        trl = checked_trl(with_weights, layers, output, use_gpu, launch).to_dict()
    else:  # a light install: the settings as given, TRL's checks and defaults when it is installed
        trl = settings
        notes.append("trl is not installed: `trl` holds the settings given, not TRL's checked and complete "
                     "config (pip install 'medharness[train]')")
    out = json.loads(config.model_dump_json(by_alias=True))
    out["prompt"] = prompt  # the variant trained with (the task's default where none was given)
    options = recipe.parse_options(config.options)  # with the recipe's defaults
    out["options"] = options.model_dump(mode="json") if options is not None else {}
    out["trl"] = trl
    if rewards is not None:
        out["rewards"] = [{"label": lab, "metric": s.metric, "args": s.args, "weight": w}
                          for lab, s, w in zip(rewards.labels, rewards.specs, rewards.weights, strict=True)]
    styles = style_tasks(task, config.prompt_styles, prompt, config.data_dir) if config.prompt_styles else {}
    out.update(
        presets=layers.presets, output=str(output), output_exists=output.exists(), data=data,
        prompts={name: {"system": t.prompt_spec.system, "user": t.prompt_spec.user}
                 for name, t in {prompt: task, **styles}.items()},
        evaluation=evals.model_dump(mode="json") if evals is not None else None,
        set_at={".".join(map(str, loc)): where for loc, where in layers.origin.items()
                if _is_setting(layers.data, loc)},
        notes=notes)
    # no credentials (`http://user:KEY@host` as `http://***@host`), as train.json records them; the prompts
    # shown word for word
    info = json.loads(json.dumps(out, default=str))
    return {k: v if k == "prompts" else scrub_value(v) for k, v in info.items()}


def checked_trl(config: TrainConfig, layers: Any, output: Path, use_gpu: bool,
                launch: LaunchSpec | None) -> Any:
    """TRL's config object of `config`: at the launch's world size when it has several processes (built at
    world size 1, TRL would refuse a generation batch that only the whole world fills)."""
    from medharness.trainers.config import trl_args
    from medharness.trainers.launch import check_trl_at_world_size

    if launch is not None and launch.num_processes > 1:
        return check_trl_at_world_size(config, layers, output, launch)
    return trl_args(config, layers, output, use_gpu)


def _data(task: Any, config: TrainConfig, data_elsewhere: bool) -> dict[str, Any]:
    """The dry run's `data`: the split and the number of training samples, where their copy is here (else
    why not). A data folder or id file that is given and wrong fails as in the run (see `dry_run`)."""
    from medharness.taskfiles.splits import read_sample_ids
    from medharness.trainers.data import select_samples

    data: dict[str, Any] = {"split": config.samples.split, "count": None}
    try:
        source = task.source
    except DataError as exc:
        if config.data_dir is not None and not data_elsewhere:
            raise
        source, data["note"] = None, f"not counted: {exc}"
    pending = data_elsewhere and config.samples.file is not None and not Path(config.samples.file).exists()
    if pending:
        data["note"] = f"not counted: {config.samples.file} is written by the sweep's split stage"
    elif getattr(source, "kind", None) == "hf":
        data["note"] = "not counted: the dry run reads no hub dataset"
    elif source is not None:
        data["count"] = len(select_samples(task, config))
    if data["count"] is None and config.samples.file and not pending:
        read_sample_ids(Path(config.samples.file))  # a missing or unreadable id file fails as in the run
    return data


def _is_setting(data: dict[str, Any], loc: tuple[Any, ...]) -> bool:
    """A key path of the merged layers that holds one setting (not a section, nor a list's item)."""
    node: Any = data
    for part in loc[:-1]:
        node = node.get(str(part)) if isinstance(node, dict) else None
    return isinstance(node, dict) and not isinstance(node.get(str(loc[-1])), dict)


def write_json(path: Path, data: dict[str, Any]) -> None:
    if int(os.environ.get("RANK", "0")) != 0:  # under accelerate launch, the main process writes
        return
    write_json_atomic(path, data, indent=1)


def write_train_log(path: Path, log: TrainLog) -> None:
    """train.json: the fields this run set (a field never set, such as `steps` before training ends, is
    absent). An error message may quote a setting it was given: it is recorded scrubbed of credentials
    (core/secrets.py), as the config is."""
    record = log.model_dump(mode="json", exclude_unset=True)
    for part in (record, record.get("evals")):
        if isinstance(part, dict) and isinstance(part.get("error"), str):
            part["error"] = scrub(part["error"])
    write_json(path, record)


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def refuse_non_empty(output: Path) -> None:
    """A new run needs an empty --output (launch/ holds the accelerate config the launching process wrote
    just before starting this one)."""
    if output.exists() and any(p.name not in (LAUNCH_DIR, LOCK_FILE) for p in output.iterdir()):
        raise ConfigError(f"{output} exists and is not empty: continue it with --resume, or choose "
                          "another --output")


def resume_point(output: Path, config: TrainConfig) -> Checkpoint | None:
    """`--resume`: check that OUTPUT is this run's; the checkpoint it continues from (None: start over)."""
    info = output / TRAIN_FILE
    if not info.is_file():
        raise DataError(f"--resume: {output} has no {TRAIN_FILE} (not a medharness training directory)")
    before = TrainDir(output).log()
    stored = dict(before.config) if before is not None else {}
    now = scrub_value(json.loads(config.model_dump_json(by_alias=True)))  # as train.json recorded it
    stored.setdefault("options", {})  # runs from before recipes had options
    for side in (stored, now):  # how rollouts are generated may change, like TRL settings (and is newer)
        if isinstance(side.get("lora"), dict):
            side["lora"] = {k: v for k, v in side["lora"].items() if k != "merge_for_rollouts"}
    differ = [k for k in RESUME_KEYS if stored.get(k) != now.get(k)]
    if differ:
        raise ConfigError(f"--resume: {output} was trained with different {', '.join(differ)}; "
                          "give the same settings (only TRL settings such as max_steps may change)")
    last = last_checkpoint(output)
    if last is None:
        log.warning("--resume: no checkpoint in %s yet; training starts over", output)
    return last


def prepare_output(output: Path, resume: bool, last: Checkpoint | None) -> None:
    """A new run: an empty OUTPUT. A resumed one: the log rows past its checkpoint dropped."""
    if not resume:
        refuse_non_empty(output)
        output.mkdir(parents=True, exist_ok=True)
        return
    for name in ("logs.jsonl", "completions.jsonl"):  # rows past the checkpoint are logged again
        drop_rows_after(output / name, last.step if last else 0)


def drop_rows_after(file: Path, step: int) -> None:
    """Keep the JSONL rows logged at or before `step`. Read as `TrainDir.log_rows` reads it (the common
    reader and parser): a torn last line (no newline after it: a kill) goes too; any other line that is not a
    row is an error naming the file and line, never dropped in silence."""
    if not file.is_file():
        return
    lines = read_text(file, "training log").split("\n")
    kept = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = parse_json(file, line, number)
            at = row.get("step") if isinstance(row, dict) else "no row"
            if not isinstance(at, int | None) or isinstance(at, bool):
                raise DataError(f"{file}:{number}: not a log row (an object with an integer step)")
        except DataError:
            if number == len(lines):  # torn
                continue
            raise
        if (at or 0) <= step:
            kept.append(line + "\n")
    write_text_atomic(file, "".join(kept))


@contextmanager
def output_lock(output: Path, resume: bool) -> Iterator[None]:
    """The training output locked (as run directories are: `run.lock`) while a run writes it, so a second
    `train` (or `--resume`) on it is refused instead of interleaving its logs; a new output must be empty.
    Under a launcher, the main process holds it."""
    if not _main_process():
        yield
        return
    if not resume:
        refuse_non_empty(output)
    output.mkdir(parents=True, exist_ok=True)
    lock = RunLock.acquire(output, "train --resume" if resume else "train")
    try:
        yield
    finally:
        lock.release()


def _main_process() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def train(req: TrainRequest, progress: Callable[[str], None] | None = None) -> Path:
    """Run one training job (then score its checkpoints when `req.evals` asks); returns the output
    directory."""
    config, layers = resolve(req)
    output = req.output or default_output(config, layers)
    evals = req.evals if req.evals is not None and req.evals.enabled else None
    if evals is not None and evals.tasks:
        resolve_task_names(evals.tasks)  # a misspelt eval task fails before the model loads
    last = resume_point(output, config) if req.resume else None
    prepared = prepare(config, layers, output)  # bad input fails before the directory exists
    ctx, lineage = prepared.ctx, prepared.lineage
    done = last is not None and is_done(ctx.trl_args, last)  # the checkpoint is at max_steps
    trained = TrainSamples.create(ctx.task.name, config.samples.split, ctx.samples, lineage.sample_ids)
    eval_plan = plan(evals, str(config.task), ctx.task, config.data_dir, trained) if evals else None
    with output_lock(output, req.resume):  # one writer per output: before anything in it changes
        prepare_output(output, req.resume, last)
        write_json(output / TRAIN_SAMPLES_FILE, trained.to_json())
        style_counts = None
        if prepared.styles is not None and config.prompt_styles and _main_process():
            style_counts = record_styles(output, config.prompt_styles, config.seed, prepared.styles)
        if eval_plan is not None and _main_process():
            eval_plan.write(output)
        prepared.add_callbacks(output, progress)
        record = TrainLog(
            status="running", recipe=config.recipe, presets=layers.presets, task=config.task,
            prompt=lineage.prompt, model=config.model, seed=config.seed, output=str(output),
            n_train_samples=len(lineage.sample_ids), config=lineage.resolved(),
            batch=prepared.batch_info(),
            rewards=prepared.reward_info(), prompt_styles=style_counts,
            resumed_from=str(last.folder) if last else None, final=None,
            started=_now(), finished=None, error=None, launch=launch_record(output),
            evals={**eval_plan.info(), "status": "pending"} if eval_plan else None)
        before = TrainDir(output).log() if req.resume else None
        if before is not None:  # keep the earlier attempts' status and times
            record = record.model_copy(update={"previous": [*before.previous, before.attempt()]})
        info = output / TRAIN_FILE
        write_train_log(info, record)
        record = _fit(prepared, record, info, last, done)
        del prepared, ctx
        if eval_plan is None or not _main_process():
            return output
        _free_memory()
        curve: dict[str, Any] = dict(record.evals or {})
        try:
            curve = {**evaluate_checkpoints(output, eval_plan, str(config.model), progress),
                     "status": "finished"}
        except BaseException as exc:
            failed = "interrupted" if isinstance(exc, KeyboardInterrupt) else "failed"
            curve = {**curve, "status": failed, "error": f"{type(exc).__name__}: {exc}"}
            raise
        finally:
            write_train_log(info, record.model_copy(update={"evals": curve}))
        return output


def _fit(prepared: Prepared, log: TrainLog, info: Path, last: Checkpoint | None, done: bool) -> TrainLog:
    """Build the TRL trainer, train (from `last` on `--resume`), save final/; train.json records the outcome
    (returned). `done`: `last` is at max_steps, so final/ is that checkpoint and nothing trains."""
    output = prepared.ctx.output
    start = time.perf_counter()
    record: dict[str, Any] = {}  # what this attempt sets
    try:
        if last is not None and done:
            final = output / "final"
            if _main_process():
                final = final_from_checkpoint(last, output, prepared.lineage.manifest(last.step))
            record.update(status="finished", final=str(final), steps=last.step)
        else:
            _train(prepared, last, record)
    except KeyboardInterrupt:
        record.update(status="interrupted")
        raise
    except Exception as exc:
        record.update(status="failed", error=f"{type(exc).__name__}: {exc}")
        raise
    finally:
        record.update(finished=_now(), seconds=round(time.perf_counter() - start, 2))
        log = log.model_copy(update=record)
        write_train_log(info, log)
    return log


def _train(prepared: Prepared, last: Checkpoint | None, record: dict[str, Any]) -> None:
    """Train with TRL (from `last` on `--resume`) and save final/, noting in `record` what train.json
    keeps."""
    ctx = prepared.ctx
    built = prepared.recipe.build(ctx)
    if ctx.config.freezes_vision:
        # asserted: no vision parameter trains
        record["trainable_tensors"] = check_vision_frozen(built.model)
    from transformers.trainer_callback import PrinterCallback

    # raw dicts on stdout; medharness prints its own progress lines
    built.remove_callback(PrinterCallback)
    quiet: AbstractContextManager[None] = nullcontext()
    if last is not None and ctx.config.lora is not None:
        check_adapter_checkpoint(built.model, last.folder)
    elif last is not None and not (built.is_deepspeed_enabled or built.is_fsdp_enabled):
        # DeepSpeed and FSDP resume from their own state files, under the model's names
        load_full_checkpoint(built.model, last.folder)
        quiet = raw_reload_quiet()
    with quiet:
        built.train(resume_from_checkpoint=str(last.folder) if last else None)
    final = save_final(built, ctx.processor, prepared.lineage, ctx.output)
    record.update(status="finished", final=str(final), steps=built.state.global_step)


def _free_memory() -> None:
    """Drop the trainer's model and optimiser before the evaluation loads its own model."""
    import gc

    gc.collect()
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()
