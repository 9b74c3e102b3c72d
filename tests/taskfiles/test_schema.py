"""Task files: strict schema with file/line/key errors, overrides, discovery, prompt rendering."""

from __future__ import annotations

from pathlib import Path

import pytest

from medharness.core.errors import ConfigError, DataError
from medharness.taskfiles.task import discover_tasks, families, load_task, parse_task_file, resolve_task_names

MINIMAL = """\
name: toy
version: "1"
description: a toy task
card: {licence: CC0-1.0, citation: none, sizes: {test: 2}}
sources:
  - kind: local
    path: "{split}.jsonl"
columns: {id: qid, meta: {answer_type: kind}}
prompts:
  default: plain
  variants:
    plain: {user: "{question}?"}
"""


def write(tmp_path: Path, text: str, name: str = "toy.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_unknown_key_names_file_line_and_key(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL + "group_bye: [kind]\n")
    with pytest.raises(ConfigError) as err:
        parse_task_file(path)
    msg = str(err.value)
    assert f"{path}:13: unknown key 'group_bye'" in msg


def test_nested_unknown_key_line(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL.replace("    path:", "    pth: x\n    path:"))
    with pytest.raises(ConfigError, match=r"toy.yaml:7: unknown key 'sources.0.local.pth'"):
        parse_task_file(path)


def test_missing_required_and_bad_default_prompt(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL.replace("default: plain", "default: fancy"))
    with pytest.raises(ConfigError, match="default prompt 'fancy' is not among"):
        parse_task_file(path)
    path = write(tmp_path, MINIMAL.replace('version: "1"\n', ""))
    with pytest.raises(ConfigError, match="version: Field required"):
        parse_task_file(path)


def test_not_yaml_and_duplicate_keys(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not valid YAML"):
        parse_task_file(write(tmp_path, "name: [unclosed\n"))
    with pytest.raises(ConfigError, match="duplicate key 'name'"):
        parse_task_file(write(tmp_path, MINIMAL + "name: again\n"))


def test_no_code_in_yaml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="is not allowed"):
        parse_task_file(write(tmp_path, MINIMAL + "extra: !!python/object/apply:os.system ['true']\n"))


def test_overrides_validated_strictly(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL)
    assert parse_task_file(path, {"prompt": "plain"}).prompt == "plain"
    with pytest.raises(ConfigError, match="unknown key 'promt'"):
        parse_task_file(path, {"promt": "plain"})


def test_local_source_needs_data_dir_and_reports_sizes(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL)
    task = load_task(path)
    with pytest.raises(DataError, match="pass --data-dir DIR"):
        task.load_samples()
    data = tmp_path / "data"
    data.mkdir()
    (data / "test.jsonl").write_text('{"qid": 7, "question": "q1", "answer": "Yes", "kind": "CLOSED"}\n'
                                     '{"qid": 8, "question": "q2", "answer": "lung", "kind": "OPEN"}\n'
                                     '{"qid": 9, "question": "q3", "answer": "no", "kind": "CLOSED"}\n')
    with pytest.raises(DataError, match="the card expects 2 test samples, local test.jsonl gave 3"):
        load_task(path, {"data_dir": str(data)}).load_samples()
    task = load_task(path, {"data_dir": str(data), "check_sizes": False})
    samples = task.load_samples()
    assert [s.id for s in samples] == ["7", "8", "9"]
    assert samples[0].target == "Yes" and samples[1].meta == {"answer_type": "OPEN"}
    assert task.load_report == {"split": "test", "source": "local test.jsonl", "expected": 2, "actual": 3}


def test_duplicate_ids_refused(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "test.jsonl").write_text('{"qid": 1, "question": "a", "answer": "x", "kind": "OPEN"}\n' * 2)
    task = load_task(write(tmp_path, MINIMAL), {"data_dir": str(data)})
    with pytest.raises(DataError, match="duplicate sample id '1'"):
        task.load_samples()


def test_render_placeholders(tmp_path: Path) -> None:
    unknown = write(tmp_path, MINIMAL.replace('"{question}?"', '"{question} [{organ}]"'))
    with pytest.raises(ConfigError, match=r"toy.yaml:12: prompts.variants.plain.user: unknown "
                                          r"placeholder\(s\) \{organ\} for source 1 \(local\); available: "
                                          r"answer_type, choices"):
        load_task(unknown)  # the source does not provide it: refused when the file is read, not at run time
    task = load_task(write(tmp_path, MINIMAL.replace('"{question}?"', '"{question} [{organ}]"').replace(
        "meta: {answer_type: kind}", "meta: {answer_type: kind, organ: organ}")))
    from medharness.core.records import Sample

    sample = Sample(id="1", task="toy", question="Where?", target="x", images=("a.jpg",), meta={})
    with pytest.raises(ConfigError, match=r"unknown placeholder\(s\) \['organ'\]"):
        task.render(sample, task.settings())  # a sample without it (a plugin source's) still fails by name
    sample = sample.model_copy(update={"meta": {"organ": "CHEST"}})
    prompt = task.render(sample, task.settings(max_new_tokens=5))
    assert [p.type for p in prompt.messages[0].content] == ["image", "text"]
    assert prompt.messages[0].content[1].text == "Where? [CHEST]"
    assert prompt.settings.max_new_tokens == 5
    assert prompt.image_refs() == ["a.jpg"]


def test_shipped_tasks_discovered_and_families() -> None:
    names = discover_tasks()
    assert {"vqa_rad", "slake", "medmnist_pneumonia", "phantom_presence", "phantom_box"} <= set(names)
    assert sorted(families()["phantom"]) == ["phantom_box", "phantom_count", "phantom_presence",
                                             "phantom_side", "phantom_size"]
    assert resolve_task_names("vqa_rad,phantom")[:2] == ["vqa_rad", "phantom_box"]
    with pytest.raises(ConfigError, match="Did you mean 'vqa_rad'"):
        resolve_task_names("vqa-rad")


def test_the_family_peek_is_the_parsed_family() -> None:
    """Family names resolve from a peek at each file's text; it agrees with the strict parse of every file."""
    parsed: dict[str, list[str]] = {}
    for name, path in discover_tasks().items():
        family = parse_task_file(path).family
        if family:
            parsed.setdefault(family, []).append(name)
    assert families() == parsed


def test_every_shipped_task_validates() -> None:
    from medharness.cli_output import validate_files

    assert validate_files([]) == 0


def test_python_tag_on_a_scalar_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not valid YAML"):
        parse_task_file(write(tmp_path, MINIMAL + "extra: !!python/name:os.system\n"))
