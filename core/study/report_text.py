"""The reproduction report as plain text: the table (each column names the attack behind it), the
gradient-masking check's reasons, and one line per finding with its verdict, effect, interval and attack.

Reads only the JSON-able report of `core.study.report.reproduce` (a report loaded from its JSON file
formats the same).
"""

from __future__ import annotations

from typing import Sequence

from core.study.findings import Finding, format_findings

__all__ = ["eps_label", "format_report", "format_sweep"]


def eps_label(eps: float) -> str:
    return f"{eps:g}"


def _iv(d: dict, fmt: str = ".3f") -> str:
    """'0.883 [0.850, 0.914]' from {"estimate", "interval"}."""
    lo, hi = d["interval"]
    return f"{d['estimate']:{fmt}} [{lo:{fmt}}, {hi:{fmt}}]"


def _spread(d: dict, n_seeds: int, fmt: str = ".3f") -> str:
    return f"{d['mean']:{fmt}}" if n_seeds == 1 else f"{d['mean']:{fmt}}±{d['std']:{fmt}}"


def _render(groups: Sequence[tuple[str, int]], head: list[str], rows: list[list[str]]) -> list[str]:
    """A table with a row of group labels above the column heads (a label spans its group's columns)."""
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    i = 0
    for label, n in groups:  # widen a group's last column until its label fits
        span = sum(widths[i:i + n]) + 2 * (n - 1)
        widths[i + n - 1] += max(0, len(label) - span)
        i += n

    def line(cells: list[str]) -> str:
        return "  ".join(c.ljust(w) if k == 0 else c.rjust(w) for k, (c, w) in enumerate(zip(cells, widths))).rstrip()

    top, i = [], 0
    for label, n in groups:
        span = sum(widths[i:i + n]) + 2 * (n - 1)
        top.append(label.rjust(span) if n == 1 else label.center(span))
        i += n
    return ["  ".join(top).rstrip(), line(head), line(["-" * w for w in widths]), *(line(r) for r in rows)]


def _findings(report: dict) -> list[Finding]:
    return [Finding(**{**f, "interval": tuple(f["interval"])}) for f in report.get("findings", [])]


def format_report(report: dict) -> str:
    """The table (estimates with 95% intervals; PGD as mean±std over seeds), the masking check and the findings."""
    summary, seeds = report["summary"], len(report["seeds"])
    names = list(summary)
    aa = [eps_label(e) for e in report["reliable_eps"]]
    pgd = [eps_label(e) for e in report["eps"] if e > 0]
    steps = report["attack"]["steps"]
    head = ["model", "clean"] + [f"@{e}" for e in aa] + [f"@{e}" for e in pgd] + \
           ["max logit", "gap", "conf", "order", "masking"]
    rows = []
    for name in names:
        s = summary[name]
        order = s["incorrect_order_agreement"]
        flagged = s["masking_flagged"]
        mask = "ok" if not flagged else "FLAGGED" if seeds == 1 else f"FLAGGED {flagged}/{s['n_seeds']}"
        rows.append([name, _iv(s["clean_accuracy"])] + [_iv(s["robust_accuracy"][e]) for e in aa]
                    + [_spread(s["pgd_accuracy"][e], s["n_seeds"]) for e in pgd]
                    + [f"{s['mean_max_logit']['estimate']:.2f}", f"{s['mean_logit_gap']['estimate']:.2f}",
                       f"{s['mean_confidence']['estimate']:.3f}", "-" if order is None else f"{order:.2f}", mask])
    groups = [("", 1), ("", 1), ("AutoAttack", len(aa)), (f"PGD-{steps} (upper bound)", len(pgd)), ("", 5)]
    groups = [g for g in groups if g[1]]
    st, workers = report.get("stage_seconds", {}), report.get("workers", 0)
    where = ""
    if workers and st.get("train", 0) + st.get("pgd", 0) + st.get("evidence", 0) >= 1:
        where = (f" (training {st['train']:.0f} s, PGD {st['pgd']:.0f} s, AutoAttack and the masking check "
                 f"{st['evidence']:.0f} s{f', summed over {workers} worker processes' if workers > 1 else ''})")
    over = (f"the {report['n_images']} test images" if seeds == 1 else
            f"seeds, then the {report['n_images']} test images of each")
    out = [f"Logitscope reproduction on {report['dataset']}: {seeds} seed{'s' if seeds > 1 else ''}, "
           f"{report['seconds']:.1f} s{where}",
           f"Robust accuracy (AutoAttack columns): {report['reliable_attack_label']}; clean and robust accuracy "
           f"with 95% intervals (bootstrap over {over}).",
           f"PGD-{steps} columns: {report['attack_label']}, an upper bound on robust accuracy (the fast attack)"
           + (", mean±std over seeds." if seeds > 1 else "."),
           "Statistics on the clean test images; 'order' = Kendall tau of the incorrect-class order against the "
           "teacher; 'masking' = the gradient-masking check (AutoAttack against PGD, margin-loss and unbounded PGD, "
           "AutoAttack's warnings).", ""]
    out += _render(groups, head, rows)
    flagged = [m for m in report["models"] if m["masking"]["flagged"]]
    if flagged:
        out += ["", "Gradient masking flagged (its robust accuracy is not to be trusted):"]
        out += [f"  {m['name']} (seed {m['seed']}): {reason}" for m in flagged for reason in m["masking"]["reasons"]]
    out += ["", f"Findings at eps {eps_label(report['finding_eps'])} (verdict: effect [95% interval], with the "
                "attack behind it; effects are paired by seed and test image):"]
    lines = format_findings(_findings(report))
    out += lines or ["  none: their models are not in this study"]
    return "\n".join(out)


def _maybe(d: dict, fmt: str = ".3f") -> str:
    return "not cached" if d.get("estimate") is None else _iv(d, fmt)


def format_sweep(summary: dict) -> str:
    """A sweep's summary (`core.study.sweep_run.summary`) as a table, the attacks named, then the trends."""
    at = summary["findings_eps"]
    label = None if at is None else eps_label(at)
    lines = [f"{summary['dataset']}: {len(summary['models'])} models; clean and PGD on the evaluation split, "
             f"{summary['pgd_attack'].split(' at ')[0]}; robust accuracy at eps {label}: "
             f"{summary['reliable_attack'] or 'PGD (an upper bound)'}. Intervals: "
             f"{summary['interval_level']:.0%} over test images.", ""]
    header = f"{'model':34s} {'clean accuracy':22s} {'robust accuracy':22s} {'mean max logit':22s} mean logit gap"
    lines += [header, "-" * len(header)]
    for m in summary["models"]:
        robust = m["robust"].get(label, {})
        mark = "" if robust.get("reliable", True) else " *"
        lines.append(f"{m['name'][:34]:34s} {_maybe(m['clean_accuracy']):22s} {(_maybe(robust) + mark):22s} "
                     f"{_maybe(m['mean_max_logit'], '.2f'):22s} {_maybe(m['mean_logit_gap'], '.2f')}")
    if any(not m["robust"].get(label, {}).get("reliable", True) for m in summary["models"]):
        lines.append("* PGD only (AutoAttack not cached for this model): an upper bound on robust accuracy.")
    lines.append("")
    for name, t in summary["trends"].items():
        rho = "n/a" if t["spearman"] is None else f"{t['spearman']:+.2f}"
        iv = "" if t["interval"][0] is None else f" [{t['interval'][0]:+.2f}, {t['interval'][1]:+.2f}]"
        lines.append(f"{name.replace('_', ' ')} vs robust accuracy at eps {label}: Spearman {rho}{iv}; {t['verdict']}")
    return "\n".join(lines)
