"""Reading other tools' per-sample outputs: lm-eval's and lmms-eval's logged samples, VLMEvalKit's prediction
files. Each reader returns a `PeerFile`: (sample id, raw generated text) per row, plus what the file says
about the model and the tool's version. Nothing here imports the peers: these are plain files.

Formats (the peers' own, as of lm-eval 0.4, lmms-eval 0.7 and VLMEvalKit 0.2):

- lm-eval `samples_<task>_<time>.jsonl` (`--log_samples`): one JSON object per doc and filter with `doc_id`,
  `doc`, `target`, `resps` (a list, per request, of the model's raw outputs), `filtered_resps`, `filter`. The
  sample id is a field of `doc` (medharness's exported tasks carry `id`). Beside it, `results_<time>.json`
  names the model (`config.model`, `config.model_args`, `model_name`) and lm-eval's version
  (`lm_eval_version`).
- lmms-eval `<time>_samples_<task>.jsonl`: the same record (`doc_id`, `target`, `resps`, `filtered_resps`,
  `doc` where logged); the sample id is read from `doc`, or from the exported docs file by `doc_id` (the row
  number in the exported split, which lmms-eval keeps in order). `<time>_results.json` beside it names the
  model.
- VLMEvalKit `{model}_{dataset}.xlsx` / `.tsv`: the dataset TSV's columns (`index`, `question`, `answer`,
  `category`, options `A`-`D` on multiple-choice rows, blank elsewhere) plus `prediction`. `index` is the
  row's number in the dataset TSV, mapped to sample ids by the `ids.tsv` that `medharness export --to
  vlmevalkit` wrote.
"""

from __future__ import annotations

import hashlib
import io
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medharness.core.datafiles import check_regular, parse_json, read_text
from medharness.core.errors import DataError

TOOLS = ("lm-eval", "lmms-eval", "vlmevalkit")


@dataclass
class PeerFile:
    """What a peer's output file holds, rows in file order: (sample id, raw text)."""

    tool: str
    path: Path
    rows: list[tuple[str, str]]
    id_mapping: str
    model: str | None = None
    tool_version: str | None = None
    n_rows: int = 0
    problems: list[str] = field(default_factory=list)  # rows that contradict the id map (reported together)
    results_problem: str | None = None  # why the results file beside it gave no model name (unreadable, ...)

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.path.read_bytes()).hexdigest()


def read_peer_file(tool: str, path: Path, id_field: str = "id", id_map: Path | None = None) -> PeerFile:
    """Read one peer output file; any deviation from the peer's format is a DataError naming file and line."""
    check_regular(path, "peer file")  # a FIFO would block the reader, /dev/zero fill memory
    if tool == "lm-eval":
        return _read_logged_samples(tool, path, id_field, None)
    if tool == "lmms-eval":
        return _read_logged_samples(tool, path, id_field, id_map)
    if tool == "vlmevalkit":
        if id_map is None:
            raise DataError(f"{path}: a VLMEvalKit file numbers its rows by `index`; pass --id-map ids.tsv "
                            "(written by `medharness export --to vlmevalkit`) to match them to sample ids")
        return _read_vlmevalkit(path, id_map)
    raise DataError(f"unknown peer tool {tool!r}; one of {', '.join(TOOLS)}")


# --- lm-eval / lmms-eval logged samples ---------------------------------------------------------------------

def _json_lines(path: Path) -> list[tuple[int, dict[str, Any]]]:
    out = []
    for number, line in enumerate(read_text(path, "samples file").splitlines(), 1):
        if not line.strip():
            continue
        record = parse_json(path, line, number)
        if not isinstance(record, dict):
            raise DataError(f"{path}:{number}: not a JSON object")
        out.append((number, record))
    if not out:
        raise DataError(f"{path}: no rows")
    return out


_BOOLS = ("True", "False", "true", "false")


def _is_pair(value: Any) -> bool:
    """A log-likelihood response: [logprob, is_greedy], as numbers and bools or as their strings (lm-eval's
    `sanitize_list` writes `["-0.163", "True"]`)."""
    if not isinstance(value, list) or len(value) != 2:
        return False
    logprob, greedy = value
    number = isinstance(logprob, (int, float)) and not isinstance(logprob, bool)
    if isinstance(logprob, str):
        try:
            float(logprob)
            number = True
        except ValueError:
            number = False
    return number and (isinstance(greedy, bool) or greedy in _BOOLS)


def _loglikelihood(record: dict[str, Any]) -> bool:
    """A multiple-choice (log-likelihood) record: `acc` / `acc_norm` metrics, or responses that are
    [logprob, is_greedy] pairs, one request per option."""
    if "acc" in record or "acc_norm" in record:
        return True
    stack = [record.get("resps"), record.get("filtered_resps")]
    while stack:
        value = stack.pop()
        if _is_pair(value):
            return True
        if isinstance(value, list):
            stack.extend(value[:64])
    return False


def _raw_text(tool: str, path: Path, number: int, record: dict[str, Any]) -> str:
    """The model's raw output. lm-eval: `resps[0][0]` (one generate_until request per doc). lmms-eval 0.7
    flattens one-request docs and drops `resps` when it equals `filtered_resps` (the `none` filter): either,
    unwrapped. A log-likelihood record (a multiple-choice task) is refused: it holds scores, not an answer."""
    if _loglikelihood(record):
        raise DataError(f"{path}:{number}: a log-likelihood record (a multiple-choice task: one request per "
                        "option, [logprob, is_greedy] responses, acc / acc_norm): it holds no generated "
                        f"answer to score; only generation tasks can be imported (keep {tool}'s own acc)")
    value = record.get("resps")
    if tool == "lm-eval" and not (isinstance(value, list) and value and isinstance(value[0], list)
                                  and value[0]):
        raise DataError(f"{path}:{number}: `resps` is not a list of lists of generated texts: not an lm-eval "
                        "samples file of a generation task (lm-eval 0.4 format expected)")
    if value is None:
        value = record.get("filtered_resps")
    while isinstance(value, list) and value:
        value = value[0]
    if not isinstance(value, str):
        raise DataError(f"{path}:{number}: the response is {type(value).__name__}, not generated text (a "
                        "log-likelihood task? only generation tasks can be imported)")
    return value


def _read_logged_samples(tool: str, path: Path, id_field: str, docs: Path | None) -> PeerFile:
    records = _json_lines(path)
    for number, record in records:
        missing = [k for k in ("doc_id", "resps" if tool == "lm-eval" else "filtered_resps")
                   if k not in record]
        if missing:
            raise DataError(f"{path}:{number}: no {', '.join(missing)}: not a {tool} logged-samples record "
                            "(lm-eval 0.4 / lmms-eval 0.7 format expected)")
    # one line per doc and filter; the raw response is the same on each, so one filter's lines are read
    filters = list(dict.fromkeys(str(r.get("filter", "none")) for _, r in records))
    keep = "none" if "none" in filters else filters[0]
    chosen = [(n, r) for n, r in records if str(r.get("filter", "none")) == keep]
    by_doc_id = _docs_rows(docs) if docs is not None else None
    rows, contradictions = [], []
    for number, record in chosen:
        doc = record.get("doc")
        if isinstance(doc, dict) and id_field in doc:
            sid = str(doc[id_field])
        elif by_doc_id is not None:
            doc_id = record["doc_id"]
            if not isinstance(doc_id, int) or isinstance(doc_id, bool):
                raise DataError(f"{path}:{number}: doc_id {doc_id!r} is not a row number")
            mapped = by_doc_id.get(doc_id)
            sid = str(mapped.get(id_field, "")) if mapped is not None else ""
            if not sid:
                raise DataError(f"{path}:{number}: doc_id {doc_id} is not a row of {docs} "
                                f"({len(by_doc_id)} rows)")
            if (why := _contradiction(record, mapped or {})) is not None:
                contradictions.append((number, doc_id, why))
        else:
            raise DataError(f"{path}:{number}: its doc has no {id_field!r} field to match a sample id (the "
                            "tasks medharness exports carry one; pass --id-field, or --id-map docs.jsonl "
                            "for lmms-eval)")
        rows.append((sid, _raw_text(tool, path, number, record)))
    meta = _results_beside(tool, path)
    mapping = f"doc.{id_field}" if by_doc_id is None else (f"doc_id -> {docs.name if docs else ''} row "
                                                           f"{id_field}")
    problems = []
    if contradictions:
        number, doc_id, why = contradictions[0]
        problems.append(f"{len(contradictions)} of its {len(chosen)} rows contradict the row of {docs} their "
                        f"doc_id maps to (e.g. line {number}, doc_id {doc_id}: {why}): a file of another "
                        "task, or a docs file that is stale or reordered")
    return PeerFile(tool, path, rows, mapping, model=meta.get("model"), tool_version=meta.get("version"),
                    n_rows=len(chosen), problems=problems, results_problem=meta.get("unread"))


def _docs_rows(docs: Path) -> dict[int, dict[str, Any]]:
    """Row number -> row of an exported docs JSONL (lmms-eval logs `doc_id`, the row in the split)."""
    check_regular(docs, "--id-map file")
    return {i: r for i, (_, r) in enumerate(_json_lines(docs))}


def _contradiction(record: dict[str, Any], row: dict[str, Any]) -> str | None:
    """How a logged record contradicts the exported docs row its doc_id names: its target (the docs'
    `target`, lmms-eval's `doc_to_target`) or its input (the docs' `text`, the exported `doc_to_text`)."""
    for mine, theirs in (("target", "target"), ("input", "text")):
        if isinstance(record.get(mine), str) and isinstance(row.get(theirs), str) \
                and record[mine].strip() != row[theirs].strip():
            return f"{mine} {record[mine][:40]!r}, the docs' {row[theirs][:40]!r}"
    return None


def _results_beside(tool: str, samples: Path) -> dict[str, str]:
    """Model and tool version from the same run's aggregated results file next to the samples file, if
    there; `unread`: why one that is there gave nothing (the importer names it if the model is missing)."""
    name = samples.stem
    if tool == "lm-eval":  # samples_<task>_<date>.jsonl -> results_<date>.json
        candidates = [samples.with_name(f"results_{name.rsplit('_', 1)[-1]}.json")]
    else:  # <date>_samples_<task>.jsonl -> <date>_results.json
        candidates = [samples.with_name(f"{name.split('_samples_', 1)[0]}_results.json")]
    for file in candidates:
        if file.is_file():
            try:
                data = parse_json(file, read_text(file, "results file"))
            except DataError as exc:
                return {"unread": str(exc)}
            if not isinstance(data, dict):
                return {"unread": f"{file}: not a JSON object"}
            found = data.get("config")
            config: dict[str, Any] = found if isinstance(found, dict) else {}
            model = data.get("model_name") or config.get("model")
            runner = data.get("model_source") or config.get("model")
            version = data.get("lm_eval_version") or data.get("lmms_eval_version")
            label = f"{runner}:{model}" if runner and model and runner != model else model
            return {k: str(v) for k, v in {"model": label, "version": version}.items() if v}
    return {}


# --- VLMEvalKit ---------------------------------------------------------------------------------------------

def _blank(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _index(value: Any, path: Path, row: int) -> int:
    """VLMEvalKit's `index`: an integer, though spreadsheets hand it back as a float (3.0)."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = math.nan
    if _blank(value) or math.isnan(number) or number != int(number):
        raise DataError(f"{path}: row {row}: index {value!r} is not a row number")
    return int(number)


def read_id_map(path: Path) -> dict[int, tuple[str, str]]:
    """`ids.tsv` written by the VLMEvalKit export: index -> (sample id, question)."""
    import pandas as pd

    text = read_text(path, "id map")  # the common reader: a regular file, UTF-8, errors by byte
    try:
        table = pd.read_csv(io.StringIO(text), sep="\t", dtype=str, keep_default_na=False)
    except ValueError as exc:  # pandas' ParserError (an unclosed quote, ragged rows) is a ValueError
        raise DataError(f"--id-map {path}: not a readable TSV ({' '.join(str(exc).split())[:200]})") from None
    if not {"index", "id"} <= set(table.columns):
        raise DataError(f"--id-map {path}: needs columns index and id (has {list(table.columns)})")
    out: dict[int, tuple[str, str]] = {}
    for i, r in table.iterrows():
        out[_index(r["index"], path, int(str(i)) + 1)] = (r["id"], r.get("question", ""))
    return out


MAX_ZIP_MEMBER = 256 * 2**20  # bytes a member of an .xlsx may inflate to (VLMEvalKit sheets: a few MB)


def check_zip_size(path: Path, limit: int = MAX_ZIP_MEMBER) -> None:
    """An .xlsx (a zip) whose members inflate past `limit` (a zip bomb: 7 MB growing to 2 GB) or that is not a
    readable zip is refused before anything is inflated."""
    import zipfile

    try:
        with zipfile.ZipFile(path) as archive:
            big = [m for m in archive.infolist() if m.file_size > limit]
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        raise DataError(f"{path}: not a readable .xlsx (a zip archive): {exc}") from None
    if big:
        raise DataError(f"{path}: member {big[0].filename} inflates to {big[0].file_size:,} bytes, over the "
                        f"{limit:,} a prediction sheet needs: refused unread")


def _read_vlmevalkit(path: Path, id_map: Path) -> PeerFile:
    import pandas as pd

    suffix = path.suffix.lower()
    try:
        if suffix == ".xlsx":
            check_zip_size(path)
            table = pd.read_excel(path, engine="openpyxl")
        elif suffix in (".tsv", ".csv"):
            table = pd.read_csv(io.StringIO(read_text(path, "prediction table")),
                                sep="\t" if suffix == ".tsv" else ",")
        else:
            raise DataError(f"{path}: a VLMEvalKit prediction file is .xlsx, .tsv or .csv")
    except ImportError as exc:
        raise DataError(f"{path}: reading .xlsx needs openpyxl ({exc})") from None
    except ValueError as exc:
        raise DataError(f"{path}: not a readable {suffix} table ({exc})") from None
    missing = [c for c in ("index", "prediction") if c not in table.columns]
    if missing:
        raise DataError(f"{path}: no column {', '.join(missing)}: not a VLMEvalKit prediction file "
                        f"(columns: {list(table.columns)[:12]})")
    mapping = read_id_map(id_map)
    rows: list[tuple[str, str]] = []
    mismatched = []
    for number, record in enumerate(table.to_dict("records"), 1):
        index = _index(record["index"], path, number)
        # an index the export never wrote matches no sample id: counted as unmatched
        sid, question = mapping.get(index, (f"<index {index} not in {id_map.name}>", ""))
        if question and "question" in record and not _blank(record["question"]) \
                and str(record["question"]).strip() != question.strip():
            mismatched.append(index)
            continue
        text = record["prediction"]
        rows.append((sid, "" if _blank(text) else str(text)))  # an empty cell is an empty answer (unparsed)
    if mismatched:
        raise DataError(f"{path}: the question of {len(mismatched)} of {len(table)} rows differs from the "
                        f"exported dataset's ({id_map}) at the same index (e.g. index {mismatched[0]}): a "
                        f"file of another dataset, or of a re-ordered TSV; {len(table) - len(mismatched)} "
                        "rows matched")
    model = None
    stem = path.stem
    for dataset in (p.stem for p in id_map.parent.glob("*.tsv") if p.name != id_map.name):
        if stem.endswith("_" + dataset):  # {model}_{dataset}.xlsx, the dataset being the exported TSV's name
            model = stem[: -len(dataset) - 1]
    return PeerFile("vlmevalkit", path, rows, f"index via {id_map.name}", model=model, n_rows=len(table))
