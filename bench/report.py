"""Render ``bench/results/*.json`` into a dated section at the top of ``bench/RESULTS.md``.

Older sections stay below it: RESULTS.md is the record of every run, each with the
machine and the command that measured it.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).parent
RESULTS = HERE / "results"
RECORD = HERE / "RESULTS.md"
TITLE = "# Benchmark results\n\nNewest run first. `make bench` adds a section.\n"


def _machine(m: dict[str, Any]) -> str:
    gpu = m.get("gpu") or "no GPU"
    isa = f" ({m['cpu_isa']}{', bf16' if m.get('cpu_bf16') else ''})" if "cpu_isa" in m else ""
    return (f"{m.get('cpu')}{isa}, {m.get('cores')} cores, {m.get('memory_gb')} GB, {gpu}; "
            f"torch {m.get('torch')}, commit {m.get('commit')}")


def _gain(gain: dict[str, Any] | None) -> str:
    """A rung's gain over the rung it is judged against (``bench.shared.ladder_gains``)."""
    if not gain:
        return ""
    low, high = gain["interval"]
    return f"{gain['gain']:+.4f} [{low:+.4f}, {high:+.4f}] over {gain['vs']}: {gain['verdict']}"


_SET_WORDS = {"test": "test books (read once, reported)",
              "dev": "dev books (every choice is judged on them)",
              "heldout": "held-out books"}


def pipeline_section(r: dict[str, Any]) -> list[str]:
    """The run's header, then the test books' figures, then the dev books' (a run from
    before the dev/test split: its one held-out set)."""
    data = r["data"]
    lines = [
        f"### End to end, profile `{r['profile']}`",
        "",
        f"- command: `{r['command']}`",
        f"- machine: {_machine(r['machine'])}",
        f"- training fonts {', '.join(data['train_fonts'])} ({data['train_pages']} "
        f"pages, vocabulary {data.get('vocabulary_size', 'all')})",
        f"- stage wall time (summed over the processes of a stopped and resumed run): "
        f"{r['train_minutes_total']} min "
        f"({', '.join(f'{k} {v:.0f}s' for k, v in r['train_seconds'].items())})",
        "- each model's own training time (summed over resumes): " + ", ".join(
            f"{k} {v:.0f}s" for k, v in r.get("model_train_seconds", {}).items()),
    ]
    sets = {name: r[name] for name in ("test", "dev") if name in r} or {"heldout": r}
    for name, figures in sets.items():
        if "quality" in figures:
            lines += ["", f"#### {_SET_WORDS[name]}", ""]
            lines += set_lines(figures, data.get(f"{name}_fonts", []))
    if owed := r.get("not_measured"):
        lines += ["", f"Not measured (the evaluation was stopped): {', '.join(owed)}."]
    lines += ["", f"The final blend is at `{r['bundle']}`.", ""]
    return lines


def set_lines(r: dict[str, Any], fonts: list[str]) -> list[str]:
    """One set's figures: the ladder, errors, adaptation, read-time shifts, speed."""
    q = r["quality"]
    lines = [
        f"Fonts never seen in training: {', '.join(fonts)} ({q['pages']} pages, "
        f"{q['characters']} characters)",
        "",
        "| rung | F1 | gain (90% interval, bootstrap over pages) "
        "| per book |",
        "| --- | --- | --- | --- |",
    ]
    for rung, fig in q["ladder"].items():
        books = ", ".join(f"{b} {f:.3f}" for b, f in fig["by_book"].items())
        lines.append(f"| {rung} | {fig['f1']:.4f} | {_gain(fig.get('gain'))} | {books} |")
    books = ", ".join(f"{b} {f:.3f}" for b, f in q["detection_by_book"].items())
    lines.append(f"| detection only (detector boxes) | {q['detection_f1']:.4f} | | {books} |")
    if t := r.get("tesseract"):
        books = ", ".join(f"{b} {c['f1']:.3f}" for b, c in t["f1"]["by_book"].items())
        lines.append(f"| Tesseract `jpn_vert` psm {t.get('psm')} (same pages) | "
                     f"{t['f1']['f1']:.4f} | | {books}; detection-only "
                     f"{t['detection_f1']['f1']:.3f}; {t['pages_per_s_wall']} pages/s |")
    if errors := q.get("errors"):
        from bench.errors import describe

        lines += ["", f"Where `{errors['rung']}` goes wrong (`bench/errors.py`):", ""]
        lines += [f"- {line}" for line in describe(errors).splitlines()]
    if shift := q.get("seg_fp_shift"):
        rates = shift["rates"]
        lines += ["", f"- seg_fp shift (the \"shifted\" rungs): {shift['shift']:.2f} logits, "
                  f"fitted without labels on the held-out pages read as an incoming collection: "
                  f"seg_fp won by at most {shift['within']:g} on {rates['incoming']:.1%} of "
                  f"their boxes, {rates['incoming_shifted']:.1%} after the shift, against "
                  f"{rates['oof']:.1%} on the OOF pages; the bundle carries "
                  f"{shift['bundle']:.2f}"]
    if classes := q.get("class_shift"):
        books = "; ".join(f"{b}: {c['classes_shifted']} classes ({c['up']} up), at most "
                          f"{c['largest']:.2f}" for b, c in classes["books"].items())
        lines += [f"- class shifts (the \"class shares matched\" rungs), fitted per book "
                  f"without labels, at most {classes['max_shift']:g} logits: {books}; the "
                  f"bundle carries them for {len(classes['bundle_books'])} book(s)"]
    if (errors := q.get("errors_class_shares")) and errors["rung"] != q["errors"]["rung"]:
        from bench.errors import describe

        lines += ["", f"Where `{errors['rung']}` goes wrong:", ""]
        lines += [f"- {line}" for line in describe(errors).splitlines()]
    if adapted := r.get("adaptation"):
        ps, l2 = adapted["pseudolabels"], adapted["level2_oof"]
        oof = ps["accuracy_on_labelled_oof_pages"] or {}
        threshold = "none reached" if ps["threshold"] is None else f"{ps['threshold']:.3g}"
        on_chars = ps.get("heldout_seg_fp_on_true_characters")
        seg_fp = ("" if on_chars is None else f", and {on_chars:.1%} of the "
                  f"{ps['heldout_seg_fp_kept']} kept seg_fp are on a true character")
        lines += [
            "",
            f"- pseudolabels ({ps['rule']} rule, threshold {threshold}): kept "
            f"{ps['fraction_kept']:.1%} of {ps['boxes']} incoming boxes ({ps['seg_fp_kept']} "
            f"as seg_fp); the rule on labelled OOF pages keeps {oof.get('fraction_kept', 0):.1%} "
            f"at {oof.get('accuracy_kept') or 0:.1%} accuracy; of the kept characters "
            f"{ps['heldout_precision_of_kept_characters'] or 0:.1%} are right on the held-out "
            f"truth{seg_fp}",
            f"- level 2 out of fold: F1 {l2['level2_oof_f1']:.4f} against the blend's "
            f"{l2['blend_oof_f1']:.4f} (argmax rule {l2['argmax_oof_f1']:.4f}; fitted cut "
            f"{'none beat argmax' if l2['threshold'] is None else l2['threshold']}; "
            "the true class among the candidates for "
            f"{l2['candidate_recall']:.1%} of boxes)",
        ]
    if read_time := r.get("read_time_adaptation"):
        lines += ["", "`kzjobs recognize` on the held-out pages, as books the retraining run "
                  "adapted to and as books scanned after it (`bench.pipeline."
                  "read_time_adaptation`):", "", "| class shifts | F1 | per book | seconds |",
                  "| --- | --- | --- | --- |"]
        for name, fig in read_time.items():
            books = ", ".join(f"{b} {f:.3f}" for b, f in fig["by_book"].items())
            lines.append(f"| {name} | {fig['f1']:.4f} | {books} | {fig['seconds']} |")
    if speed := r.get("recognize_speed"):
        lines += ["", "| recognize | pages/s (job) | pages/s (wall, with model load) "
                  "| peak RSS MB |", "| --- | --- | --- | --- |"]
        for s in speed:
            shards = s.get("shards", 1)
            where = f" in {shards} shards side by side" if shards > 1 else ""
            lines.append(f"| {s['pages']} pages{where} | {s['pages_per_second_job']} | "
                         f"{s['pages_per_second_wall']} | {s['peak_rss_mb']} |")
    return lines


def inference_section(r: dict[str, Any]) -> list[str]:
    lines = ["### Inference settings of the trained blend (`bench.inference`)", "",
             f"- command: `{r['command']}`", f"- machine: {_machine(r['machine'])}",
             f"- each variant read {r.get('rounds', 1)} time(s) in turn; the seconds are of "
             "its fastest reading", "",
             "| variant | F1 | per book | detect s/page | classify s/page | decide s/page "
             "| pages/s | every reading |", "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for v in r["variants"]:
        sec = v["seconds_per_page"]
        books = ", ".join(f"{b} {f:.3f}" for b, f in v["by_book"].items())
        each = ", ".join(map(str, v.get("pages_per_second_readings", [v["pages_per_second"]])))
        lines.append(f"| {v['name']} | {v['f1']:.4f} | {books} | {sec['detect']} | "
                     f"{sec['classify']} | {sec['decide']} | {v['pages_per_second']} | {each} |")
    return [*lines, ""]


def networks_section(r: dict[str, Any]) -> list[str]:
    lines = [f"### The networks' cost a page, random weights (`bench.networks`, profile "
             f"`{r['profile']}`)", "",
             f"- command: `{r['command']}`", f"- machine: {_machine(r['machine'])}",
             f"- {r['pages']} generated pages ({r['boxes_per_page']} boxes a page), each "
             f"variant read {r['rounds']} time(s) in turn; the seconds are of its fastest "
             "reading", "",
             "| variant | torch threads | detect s/page | classify s/page (one classifier) "
             "| classifiers | pages/s the networks allow |",
             "| --- | --- | --- | --- | --- | --- |"]
    for v in r["variants"]:
        sec = v["seconds_per_page"]
        lines.append(f"| {v['name']} | {v['torch_threads']} | {sec['detect']} | "
                     f"{sec['classify']} | {v['classifiers']} | {v['pages_per_second_bound']} |")
    return [*lines, ""]


SECTIONS = {"pipeline": pipeline_section, "inference": inference_section,
            "networks": networks_section}


def generic_section(name: str, r: dict[str, Any]) -> list[str]:
    figures = {k: v for k, v in r.items() if k not in ("machine", "command")}
    lines = [f"### {name}", ""]
    if "command" in r:
        lines.append(f"- command: `{r['command']}`")
    if "machine" in r:
        lines.append(f"- machine: {_machine(r['machine'])}")
    text = json.dumps(figures, indent=1, ensure_ascii=False)
    if len(text) > 2500:
        text = text[:2500] + "\n..."
    return [*lines, "", "```json", text, "```", ""]


def render(parts: list[str]) -> str:
    lines = [f"## Run of {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}", ""]
    for part in parts:
        path = RESULTS / f"{part}.json"
        if not path.exists():
            lines += [f"### {part}", "", "not measured in this run", ""]
            continue
        data = json.loads(path.read_text())
        lines += SECTIONS[part](data) if part in SECTIONS else generic_section(part, data)
    return "\n".join(lines)


def record(parts: list[str]) -> None:
    old = RECORD.read_text() if RECORD.exists() else TITLE
    body = old.removeprefix(TITLE).lstrip("\n")
    RECORD.write_text(f"{TITLE}\n{render(parts)}\n{body}")


if __name__ == "__main__":
    import sys

    record(sys.argv[1:] or ["pipeline", "synth", "validate", "level2"])
