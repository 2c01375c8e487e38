"""A study's report: win rates per question, rater consistency, attention checks, and how
often each reward model picks the side people picked.

    python -m orchestration.studies.human report STUDY_DIR    # writes report.md, .json, .png there

- Win rate of A over B per question over first showings (repeats excluded): a win counts 1,
  a tie 1/2; 95% Wilson interval (orchestration/evaluation/stats.py).
- Consistency of a rater: share of (repeated item, question) whose second answer, sides
  swapped, names the same image (or tie) as the first.
- Attention checks: share passed, a pass being the real image on all three questions.
- Agreement with a reward model: over first answers that are not ties, the share where the
  model scored the side people picked strictly higher (a tie of the model disagrees).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from orchestration.evaluation.stats import wilson_interval
from orchestration.studies.human.design import QUESTION_KEYS, QUESTIONS

TITLES = {key: title for key, title, _ in QUESTIONS}


def win_rates(study: dict, answers: list[dict], confidence: float = 0.95) -> list[dict]:
    """Per (pair, question): counts, win rate of A with ties half, Wilson interval."""
    items = {i["id"]: i for i in study["items"]}
    out = []
    for a, b in study["pairs"]:
        firsts = [r for r in answers if not r["repeat"] and items[r["item"]]["kind"] == "pair"
                  and (items[r["item"]]["a"], items[r["item"]]["b"]) == (a, b)]
        for q in QUESTION_KEYS:
            wins, ties = sum(r[q] == "a" for r in firsts), sum(r[q] == "tie" for r in firsts)
            n = len(firsts)
            low, high = wilson_interval(wins + ties / 2, n, confidence) if n else (None, None)
            out.append({"a": a, "b": b, "question": q, "wins": wins, "ties": ties,
                        "losses": n - wins - ties, "n": n,
                        "win_rate": (wins + ties / 2) / n if n else None,
                        "ci_low": low, "ci_high": high, "confidence": confidence})
    return out


def rater_summary(study: dict, answers: list[dict]) -> list[dict]:
    """Per rater: answers given, consistency on repeats, attention checks passed."""
    kinds = {i["id"]: i["kind"] for i in study["items"]}
    out = []
    for rater in sorted({r["rater"] for r in answers}):
        mine = [r for r in answers if r["rater"] == rater]
        first = {r["item"]: r for r in mine if not r["repeat"]}
        pairs = [(first[r["item"]], r) for r in mine if r["repeat"] and r["item"] in first]
        agree = [x[q] == y[q] for x, y in pairs for q in QUESTION_KEYS]
        checks = [r for r in mine if kinds[r["item"]] == "attention" and not r["repeat"]]
        passed = [all(r[q] == "a" for q in QUESTION_KEYS) for r in checks]
        out.append({
            "rater": rater, "answered": len(mine),
            "repeats": len(pairs), "consistency": sum(agree) / len(agree) if agree else None,
            "attention_checks": len(checks),
            "attention_pass_rate": sum(passed) / len(passed) if passed else None,
        })
    return out


def _reward_side(scores: list) -> str | None:
    a, b = scores
    if a is None or b is None or not (math.isfinite(a) and math.isfinite(b)):
        return None
    return "a" if a > b else "b" if b > a else "tie"


def reward_agreement(study: dict, answers: list[dict]) -> list[dict]:
    """Per scorer and question: how often the reward's higher side is the side people picked."""
    items = {i["id"]: i for i in study["items"]}
    scorers = sorted({s for i in study["items"] if i["kind"] == "pair" for s in i["scores"]})
    out = []
    for scorer in scorers:
        row = {"scorer": scorer, "trained_on_by": sorted(
            r for r, names in study.get("trained_on", {}).items() if scorer in names)}
        for q in QUESTION_KEYS:
            votes = [(r[q], _reward_side(items[r["item"]]["scores"].get(scorer, [None, None])))
                     for r in answers if not r["repeat"] and items[r["item"]]["kind"] == "pair"
                     and r[q] != "tie"]
            votes = [(h, m) for h, m in votes if m is not None]
            row[q] = {"agree": sum(h == m for h, m in votes), "n": len(votes),
                      "rate": sum(h == m for h, m in votes) / len(votes) if votes else None}
        out.append(row)
    return out


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}%"


def markdown(summary: dict) -> str:
    """The report as markdown tables (see the module docstring)."""
    lines = [f"# Human study: {summary['study']}", "",
             f"{len(summary['raters'])} rater(s), {summary['answers']} answers; questions as in "
             "the paper (section 5.1). Win rates over first showings, ties count half.", "",
             "## Win rate of A over B", "",
             "| A | B | question | A wins | ties | B wins | n | win rate of A | 95% CI |",
             "|---|---|---|---|---|---|---|---|---|"]
    for w in summary["win_rates"]:
        ci = "n/a" if w["n"] == 0 else f"[{w['ci_low']:.3f}, {w['ci_high']:.3f}]"
        rate = "n/a" if w["n"] == 0 else f"{w['win_rate']:.3f}"
        lines.append(f"| {w['a']} | {w['b']} | {TITLES[w['question']]} | {w['wins']} | "
                     f"{w['ties']} | {w['losses']} | {w['n']} | {rate} | {ci} |")
    lines += ["", "## Raters", "", "| rater | answers | repeats | consistency | attention "
              "checks | passed |", "|---|---|---|---|---|---|"]
    for r in summary["raters"]:
        lines.append(f"| {r['rater']} | {r['answered']} | {r['repeats']} | "
                     f"{_pct(r['consistency'])} | {r['attention_checks']} | "
                     f"{_pct(r['attention_pass_rate'])} |")
    lines += ["", "## Reward models: share of people's non-tie answers where the model scored "
              "that side higher", "",
              "| scorer | " + " | ".join(TITLES[q] for q in QUESTION_KEYS) + " | trained on by |",
              "|---|" + "---|" * (len(QUESTION_KEYS) + 1)]
    for a in summary["reward_agreement"]:
        cells = [f"{_pct(a[q]['rate'])} (n={a[q]['n']})" for q in QUESTION_KEYS]
        lines.append(f"| {a['scorer']} | " + " | ".join(cells)
                     + f" | {', '.join(a['trained_on_by']) or '-'} |")
    return "\n".join(lines) + "\n"


def plot(summary: dict, path: Path) -> None:
    """Win rate of A over B per pair and question, with its interval; 0.5 = no preference."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [w for w in summary["win_rates"] if w["n"]]
    fig, ax = plt.subplots(figsize=(7, 0.45 * max(len(rows), 1) + 1.2))
    for k, w in enumerate(rows):
        ax.errorbar(w["win_rate"], k, xerr=[[w["win_rate"] - w["ci_low"]],
                                            [w["ci_high"] - w["win_rate"]]], fmt="o", capsize=3)
    ax.set_yticks(range(len(rows)),
                  [f"{w['a']} vs {w['b']}: {TITLES[w['question']]}" for w in rows], fontsize=8)
    ax.axvline(0.5, color="grey", linestyle="--")
    ax.set_xlim(0, 1)
    ax.set_xlabel("win rate of A (ties half), 95% Wilson interval")
    ax.invert_yaxis()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write_report(study_dir: Path, study: dict, answers: list[dict]) -> dict[str, Path]:
    """report.md, report.json and report.png in `study_dir`; returns their paths."""
    summary = {"study": str(study_dir), "answers": len(answers),
               "win_rates": win_rates(study, answers),
               "raters": rater_summary(study, answers),
               "reward_agreement": reward_agreement(study, answers)}
    files = {"markdown": study_dir / "report.md", "json": study_dir / "report.json",
             "plot": study_dir / "report.png"}
    files["markdown"].write_text(markdown(summary), encoding="utf-8")
    files["json"].write_text(json.dumps(summary, indent=1) + "\n", encoding="utf-8")
    plot(summary, files["plot"])
    return files
