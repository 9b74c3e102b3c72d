"""VRFT-Aug's rewards against values computed by hand from the paper's formulas: MFRS at each grade distance,
IoU > 0.5 (edge cases, each coordinate convention), the strict formats, recitation BLEU with both signs, the
weighted totals; the recipe's choice of rewards per task; and the same numbers through `medharness reward`."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from medharness.cli import main
from medharness.core.errors import ConfigError
from medharness.core.records import Answer, Sample
from medharness.scoring.metrics import METRICS
from medharness.scoring.metrics.text import format_ok
from medharness.taskfiles.task import load_task, recipe_for
from medharness.trainers.recipes.vrft_aug import VrftOptions, coords_warning, vrft_rewards
from medharness.trainers.rewards import RewardSet, component_label

SHARED = Path(__file__).resolve().parents[4] / "shared" / "data"
RETINA = tuple(f"grade {i}" for i in range(5))


def reward_set(task: str, prompt: str, samples: list[Sample], **options: object) -> RewardSet:
    t = load_task(task, {"prompt": prompt})
    return RewardSet(t, prompt, vrft_rewards(t, prompt, VrftOptions.model_validate(options)), samples)


def grade_sample(gold: int) -> Sample:
    return Sample(id="r", task="medmnist_retina", question="q", target=gold, choices=RETINA)


# -- MFRS: 1 exact, 1/4 one grade off, 1/16 two off, 0 otherwise; total 0.9 x MFRS + 0.1 x format ------------

@pytest.mark.parametrize(("gold", "pred", "mfrs"), [
    (2, 2, 1.0), (2, 1, 0.25), (2, 3, 0.25), (2, 0, 1 / 16), (2, 4, 1 / 16), (0, 3, 0.0), (0, 4, 0.0),
    (4, 0, 0.0)])
def test_mfrs_each_distance(gold: int, pred: int, mfrs: float) -> None:
    rs = reward_set("medmnist_retina", "names", [grade_sample(gold)])
    _, comps = rs.score(grade_sample(gold), f"<think>looking</think>\\boxed{{{pred}}}")
    assert comps == {"mfrs": mfrs, "format_strict": 1.0}
    assert rs.total(comps) == pytest.approx(0.9 * mfrs + 0.1)


def test_mfrs_unparsed_and_the_exact_grade_reward() -> None:
    rs = reward_set("medmnist_retina", "names", [grade_sample(2)])
    _, comps = rs.score(grade_sample(2), "<think>hmm</think>\\boxed{two or three}")
    assert comps == {"mfrs": 0.0, "format_strict": 1.0}  # unparsed: no credit, never a guess
    exact = reward_set("medmnist_retina", "names", [grade_sample(2)], reward="accuracy")  # Table 3's R_acc
    assert exact.specs[0].metric == "grade_accuracy"
    assert exact.score(grade_sample(2), "<think>x</think>\\boxed{1}")[1]["grade_accuracy"] == 0.0


# -- IoU > 0.5, in the variant's coordinate convention -------------------------------------------------------

def box_sample(gold: list[float], **meta: object) -> Sample:
    return Sample(id="b", task="ham10000_bbox", question="q", target=gold, meta=dict(meta))


@pytest.mark.parametrize(("pred", "iou", "acc"), [
    ([0, 0, 10, 10], 1.0, 1.0),
    ([0, 0, 6, 10], 0.6, 1.0),
    ([0, 0, 5, 10], 0.5, 0.0),      # exactly 0.5: VRFT-Aug rewards IoU > 0.5 only
    ([0, 0, 5.1, 10], 0.51, 1.0),
    ([5, 5, 5, 5], 0.0, 0.0),       # zero area
    ([20, 20, 30, 30], 0.0, 0.0),   # disjoint
    ([-5, 0, 5, 10], 50 / 150, 0.0),
])
def test_iou_edge_cases(pred: list[float], iou: float, acc: float) -> None:
    sample = box_sample([0, 0, 10, 10])
    rs = reward_set("ham10000_bbox", "box", [sample])
    answer, comps = rs.score(sample, f"<think>lesion</think><answer>{json.dumps(pred)}</answer>")
    assert METRICS.get("iou").fn(answer, sample, "") == pytest.approx(iou)  # type: ignore[misc]
    assert comps == {"iou_gt_50": acc, "format_strict": 1.0}


def test_reversed_box_is_unparsed() -> None:
    sample = box_sample([0, 0, 10, 10])
    rs = reward_set("ham10000_bbox", "box", [sample])
    answer, comps = rs.score(sample, "<think>x</think><answer>[10, 10, 0, 0]</answer>")
    assert answer.value is None and comps["iou_gt_50"] == 0.0


@pytest.mark.parametrize(("prompt", "text", "meta"), [
    ("box", "[100, 50, 300, 250]", {}),                                             # absolute pixels
    ("box_norm1000", "[166.67, 111.11, 500, 555.56]", {"image_size": [600, 450]}),  # Qwen2-VL: 0-1000
    ("box_resized", "[98, 49.78, 294, 248.89]",
     {"image_size": [600, 450], "resized_size": [588, 448]}),                       # 2.5-VL
])
def test_iou_in_each_coordinate_convention(prompt: str, text: str, meta: dict[str, object]) -> None:
    """The gold is absolute [100, 50, 300, 250] on a 600 x 450 image; each convention's answer is that box, so
    IoU = 1 (to rounding); the same numbers read as absolute pixels are another box (norm1000: a miss; resized
    588 x 448: 2 % smaller, still IoU 0.95)."""
    sample = box_sample([100, 50, 300, 250], **{"image_size": [600, 450], "resized_size": [588, 448], **meta})
    iou = METRICS.get("iou").fn
    assert iou is not None
    rs = reward_set("ham10000_bbox", prompt, [sample])
    answer, comps = rs.score(sample, f"<think>x</think><answer>{text}</answer>")
    assert comps["iou_gt_50"] == 1.0 and iou(answer, sample, "") > 0.999
    wrong, comps = reward_set("ham10000_bbox", "box", [sample]).score(sample, f"<answer>{text}</answer>")
    inter, area = {"box": (200 * 200, 200 * 200), "box_norm1000": (133.33 * 138.89, 333.33 * 444.45),
                   "box_resized": (194 * 198.89, 196 * 199.11)}[prompt]  # overlap with the gold, area
    expected = inter / (200 * 200 + area - inter)
    assert iou(wrong, sample, "") == pytest.approx(expected, abs=1e-3)


# -- strict formats ------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("text", "ok"), [
    ("<think>round mass</think>\\boxed{malignant}", True),
    ("<think>round mass</think>\n\\boxed{malignant}\n<|im_end|>", True),
    ("<think>a</think>The answer is \\boxed{malignant}", False),   # words around the box
    ("<think>a</think>\\boxed{malignant}.", False),
    ("<think>a</think>\\boxed{malignant}\\boxed{normal}", False),
    ("<think>a</think>\\boxed{}", False),
    ("\\boxed{malignant}", False),                                  # no thinking
    ("<think>a</think><think>b</think>\\boxed{malignant}", False),
    ("<think>a\\boxed{malignant}", False),                          # unclosed think
])
def test_strict_boxed_format(text: str, ok: bool) -> None:
    assert format_ok(text, "think_boxed") is ok


@pytest.mark.parametrize(("answer", "ok"), [
    ("[1, 2, 3, 4]", True),
    ('{"bbox_2d": [1.5, 2, 3, 4], "label": "lesion"}', True),
    ('[{"bbox_2d": [1, 2, 3, 4]}]', True),
    ("```json\n[1, 2, 3, 4]\n```", True),
    ("[1, 2, 3]", False),
    ("[1, 2, 3, 4", False),                # not JSON
    ("x1=1, y1=2, x2=3, y2=4", False),
    ('["1", "2", "3", "4"]', False),       # strings, not numbers
    ("[1, 2, NaN, 4]", False),
])
def test_strict_box_answer_format(answer: str, ok: bool) -> None:
    assert format_ok(f"<think>x</think><answer>{answer}</answer>", "think_answer_box") is ok
    assert not format_ok(f"<answer>{answer}</answer>", "think_answer_box")


# -- recitation: delta x BLEU(<think>, knowledge block) ------------------------------------------------------

@pytest.fixture()
def knowledge(tmp_path: Path) -> Path:
    file = tmp_path / "k.txt"
    file.write_text("# two classes\na: red round spots\nb: blue long lines\n", encoding="utf-8")
    return file


@pytest.mark.parametrize("delta", [0.2, -2.0])
def test_recitation_bleu_both_signs(knowledge: Path, delta: float) -> None:
    """Block "a: red round spots\\nb: blue long lines" = 10 tokens (13a splits the colons). Reciting it all:
    BLEU 1. Its first line, 5 tokens: every n-gram matches, brevity penalty exp(1 - 10/5) = e^-1. Unrelated
    text or no thinking: 0."""
    sample = Sample(id="s", task="t", question="q", target="a", choices=("a", "b"))
    fn = METRICS.get("recitation_bleu").fn
    assert fn is not None

    def reward(text: str) -> float:
        return fn(Answer(value="a"), sample, text, knowledge=str(knowledge), delta=delta)

    assert reward("<think>a: red round spots\nb: blue long lines</think>\\boxed{a}") == pytest.approx(delta)
    assert reward("<think>a: red round spots</think>\\boxed{a}") == pytest.approx(delta * math.exp(-1))
    assert reward("<think>green square</think>\\boxed{a}") == 0.0
    assert reward("\\boxed{a}") == 0.0
    assert fn(Answer(value="a"), sample.model_copy(update={"choices": ()}), "x",
              knowledge=str(knowledge)) is None
    # no knowledge file named
    assert fn(Answer(value="a"), sample, "<think>a: red round spots</think>") is None


def test_recitation_total_and_knowledge_of_the_prompt() -> None:
    """total = 0.9 x accuracy + 0.1 x format + R_recite; the block is the one the knowledge prompt shows."""
    task = load_task("medmnist_pneumonia", {"prompt": "knowledge"})
    sample = Sample(id="p", task=task.name, question="q", target="pneumonia", choices=("normal", "pneumonia"))
    block = task.knowledge_text(sample.choices)
    for delta in (0.2, -2.0):
        rs = reward_set("medmnist_pneumonia", "knowledge", [sample], recitation=delta)
        _, comps = rs.score(sample, f"<think>{block}</think>\\boxed{{Pneumonia}}")
        assert comps == {"label_accuracy": 1.0, "format_strict": 1.0, "recitation_bleu": pytest.approx(delta)}
        assert rs.total(comps) == pytest.approx(1.0 + delta)
    with pytest.raises(ConfigError, match="has none; use knowledge"):
        reward_set("medmnist_pneumonia", "names", [sample], recitation=0.2)


# -- the recipe's choices ------------------------------------------------------------------------------------

@pytest.mark.parametrize(("task", "prompt", "options", "accuracy", "fmt"), [
    ("medmnist_breast", "names", {}, ("label_accuracy", "label_accuracy", {}), "think_boxed"),
    ("medmnist_breast", "knowledge", {}, ("label_accuracy", "label_accuracy", {}), "think_boxed"),
    ("medmnist_retina", "knowledge", {}, ("mfrs", "mfrs", {}), "think_boxed"),
    ("covid_severity", "r1", {"reward": "accuracy"}, ("grade_accuracy", "grade_accuracy", {}), "think_boxed"),
    ("heel_bbox", "box_resized", {}, ("iou_gt_50", "iou_accuracy", {"threshold": 0.5, "strict": True}),
     "think_answer_box"),
    ("phantom_box", "r1", {"iou_threshold": 0.7},
     ("iou_accuracy(strict=True, threshold=0.7)", "iou_accuracy", {"threshold": 0.7, "strict": True}),
     "think_answer_box"),
    ("phantom_presence", "r1", {}, ("yes_no_accuracy", "yes_no_accuracy", {}), "r1"),
])
def test_rewards_per_task(task: str, prompt: str, options: dict[str, object],
                          accuracy: tuple[str, str, dict[str, object]], fmt: str) -> None:
    """Each component is named by the metric that computes it: the variant's column for the same metric and
    arguments (VRFT-Aug's strict format is `format_strict` beside the lenient `format_compliance`)."""
    t = load_task(task, {"prompt": prompt})
    specs = vrft_rewards(t, prompt, VrftOptions.model_validate(options))
    recorded = recipe_for(t, prompt=prompt).metrics
    fmt_label = "format_compliance" if fmt == "r1" else "format_strict"
    assert [(component_label(s, recorded), s.metric, s.args, s.weight) for s in specs] == [
        (*accuracy, 0.9), (fmt_label, "format_compliance", {"format": fmt}, pytest.approx(0.1))]


@pytest.mark.parametrize(("task", "prompt", "options", "message"), [
    ("medmnist_breast", "plain", {}, "use one of: names, knowledge"),
    ("medmnist_breast", "names", {"reward": "mfrs"}, "needs a grading task"),
    ("medmnist_retina", "names", {"reward": "iou"}, "needs a box task"),
])
def test_refused(task: str, prompt: str, options: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        vrft_rewards(load_task(task, {"prompt": prompt}), prompt, VrftOptions.model_validate(options))


# -- through `medharness reward` -----------------------------------------------------------------------------

def test_reward_command_boxes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    gold = load_task("phantom_box").load_samples("test")[0]
    x1, y1, x2, y2 = gold.target
    half = [x1, y1, x1 + 0.45 * (x2 - x1), y2]  # IoU 0.45: no accuracy
    lines = [f"<think>bright</think><answer>{json.dumps(gold.target)}</answer>",
             f"<think>bright</think><answer>{json.dumps(half)}</answer>", json.dumps(gold.target)]
    file = tmp_path / "c.jsonl"
    file.write_text("".join(json.dumps({"sample_id": gold.id, "text": t}) + "\n" for t in lines))
    assert main(["reward", "--task", "phantom_box", "--prompt", "r1", "--recipe", "vrft_aug", "--completions",
                 str(file), "--json"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(r["rewards"]["iou_gt_50"], r["rewards"]["format_strict"], r["total"]) for r in rows] == [
        (1.0, 1.0, pytest.approx(1.0)), (0.0, 1.0, pytest.approx(0.1)), (0.0, 0.0, 0.0)]


def test_reward_command_mfrs_and_recitation(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A RetinaMNIST-layout file of the card's 400 test images (blank pixels: only the labels matter to a
    reward), grades 0, 1, 2, 3, 4, 0, ..."""
    labels = (np.arange(400) % 5).reshape(-1, 1)
    images = np.zeros((400, 28, 28, 3), dtype=np.uint8)
    np.savez(tmp_path / "retinamnist.npz", **{f"{s}_{k}": v for s in ("train", "val", "test")
                                              for k, v in (("images", images), ("labels", labels))})
    ids = [s.id for s in load_task("medmnist_retina", {"data_dir": str(tmp_path)}).load_samples("test")]
    file = tmp_path / "c.txt"
    file.write_text("<think>x</think>\\boxed{2}\n<think>x</think>\\boxed{0}\nno thinking \\boxed{4}\n")
    base = ["reward", "--task", "medmnist_retina", "--prompt", "knowledge", "--data-dir", str(tmp_path),
            "--recipe", "vrft_aug", "--completions", str(file), "--sample-id", ids[2], "--json"]
    assert main(base) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(r["rewards"]["mfrs"], r["rewards"]["format_strict"]) for r in rows] == [
        (1.0, 1.0), (1 / 16, 1.0), (1 / 16, 0.0)]
    assert [r["total"] for r in rows] == pytest.approx([1.0, 0.9 / 16 + 0.1, 0.9 / 16])
    assert main([*base, "--option", "recitation=-2"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert all(r["rewards"]["recitation_bleu"] == 0.0 for r in rows)  # "x" recites nothing
    assert main([*base, "--option", "recitaton=-2"]) == 2
    assert "recitaton" in capsys.readouterr().err


@pytest.mark.skipif(not (SHARED / "pneumoniamnist").is_dir(),
                    reason="../shared/data/pneumoniamnist is absent")
def test_reward_command_on_real_pneumoniamnist(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    task = load_task("medmnist_pneumonia", {"data_dir": str(SHARED / "pneumoniamnist"),
                                            "prompt": "knowledge"})
    sample = task.load_samples("test")[0]
    block = task.knowledge_text(sample.choices)
    file = tmp_path / "c.jsonl"
    texts = [f"<think>{block}</think>\\boxed{{{sample.target}}}", "<think>no idea</think>\\boxed{maybe}"]
    file.write_text("".join(json.dumps({"sample_id": sample.id, "text": t}) + "\n" for t in texts))
    assert main(["reward", "--task", "medmnist_pneumonia", "--prompt", "knowledge", "--data-dir",
                 str(SHARED / "pneumoniamnist"), "--recipe", "vrft_aug", "--option", "recitation=0.2",
                 "--completions", str(file), "--json"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert rows[0]["rewards"] == {"label_accuracy": 1.0, "format_strict": 1.0,
                               "recitation_bleu": pytest.approx(0.2)}
    assert (rows[1]["rewards"]["label_accuracy"] == 0.0
            and rows[1]["total"] == pytest.approx(0.1 + rows[1]["rewards"]["recitation_bleu"]))


@pytest.mark.parametrize(("model_type", "prompt", "warned"), [
    ("qwen2_5_vl", "box_resized", False), ("qwen2_5_vl", "box_norm1000", True),
    ("qwen2_vl", "box_norm1000", False), ("qwen2_vl", "box", True), ("llava", "box", False)])
def test_coordinate_convention_of_the_model_family(model_type: str, prompt: str, warned: bool) -> None:
    note = coords_warning(model_type, load_task("heel_bbox", {"prompt": prompt}), prompt)
    assert (note is not None) is warned
    assert coords_warning("qwen2_vl", load_task("medmnist_breast"), "names") is None  # not a box task


# -- the presets and options ---------------------------------------------------------------------------------

def test_paper_preset_batch_translation(tmp_path: Path) -> None:
    """`--recipe vrft_aug` starts from vrft_aug_paper; 256 completions = 32 prompts x 8 per step on one GPU;
    vrft_aug_loc: 1 prompt (8 completions) x accumulation 2, two epochs."""
    pytest.importorskip("trl")
    from medharness.trainers.checkpoints import batch_sizes
    from medharness.trainers.config import trl_args
    from medharness.trainers.run import TrainRequest, resolve

    config, layers = resolve(TrainRequest(recipe="vrft_aug", task="medmnist_breast"))
    assert layers.presets == ["vrft_aug_paper"] and config.model == "Qwen/Qwen2.5-VL-3B-Instruct"
    batch = batch_sizes(trl_args(config, layers, tmp_path, use_gpu=False))
    assert (batch["completions_per_step"], batch["prompts_per_step"]) == (256, 32)
    paper = config.options["paper_batch"]
    assert (paper["size"], paper["counts"]) == (256, "completions") and "2,048 completions" in paper["note"]
    config, layers = resolve(TrainRequest(presets=["vrft_aug_paper", "vrft_aug_loc"], task="phantom_box"))
    args = trl_args(config, layers, tmp_path, use_gpu=False)
    assert (batch_sizes(args)["prompts_per_step"], args.num_train_epochs, args.max_steps) == (2, 2, -1)
    assert config.options["paper_batch"]["counts"] == "prompts"


@pytest.mark.parametrize(("recipe", "override", "message"), [
    ("vrft_aug", "options.recitaton=0.2", "-C options.recitaton=0.2: unknown key 'options.recitaton'"),
    ("vrft_aug", "options.accuracy_weight=1.5",
     "options.accuracy_weight: Input should be less than or equal to 1"),
    ("vrft_aug", "options.reward=bleu",
     "options.reward: Input should be 'auto', 'accuracy', 'mfrs' or 'iou'"),
    ("grpo", "options.recitation=0.2", "recipe grpo takes no `options:` (got recitation)"),
])
def test_options_are_checked(recipe: str, override: str, message: str) -> None:
    pytest.importorskip("trl")
    from medharness.trainers.run import TrainRequest, resolve

    with pytest.raises(ConfigError) as err:
        resolve(TrainRequest(recipe=recipe, task="medmnist_breast", model="m", overrides=[override]))
    assert message in str(err.value)
