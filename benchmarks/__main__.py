"""Run every `benchmarks/bench_*.py` module, print one table and write the figures as JSON.

Each module exposes `run() -> list[Figure]`. A figure is a dict with at least `name`, `value` and
`unit`; optionally `target` (text such as "< 2 ms"), `met` (bool) and `note`. Baselines measured in
the same run are figures of their own; a figure may name its baseline with `baseline` (another
figure's name), otherwise BASELINE_RULES pair them by name. The final summary table (and the
`summary` key of the JSON) lists every figure with its baseline beside it, target and MET/NOT MET.
"""

from __future__ import annotations

import argparse
import importlib
import json
import platform
import re
import sys
import time
import traceback
from pathlib import Path
from typing import Any

Figure = dict[str, Any]


def _modules(selected: list[str]) -> list[str]:
    here = Path(__file__).parent
    names = sorted(p.stem for p in here.glob("bench_*.py"))
    if selected:
        names = [n for n in names if any(s in n for s in selected)]
    return names


# (pattern for a measured figure's name, replacement giving its baseline's name)
BASELINE_RULES: tuple[tuple[str, str], ...] = (
    (r"\[FULL\]", "[NORMAL]"),  # alert outbox: fsync per alert vs none
    (r"^mih ", "brute "),  # PDQ index vs brute force
    (r" inspected ", " direct "),  # upload through the inspecting proxy vs straight to upstream
    (r" via proxy$", " direct"),  # pass-through download via the proxy vs direct
    (r" held ", " direct "),  # a JSON request held and scanned vs straight to upstream
    (r"\.proxy_cpu$", ".proxy"),  # video hashing: CPU seconds vs wall seconds
    (r"\.proxy$", ".baseline_decode_every_frame"),  # video: 1 fps sampling vs every frame
)


def _is_baseline(fig: Figure) -> bool:
    name = str(fig["name"])
    return fig.get("note") == "baseline" or "baseline" in name or "[NORMAL]" in name


def summarise(results: dict[str, list[Figure]]) -> list[dict[str, Any]]:
    """One row per measured figure (all modules), with its baseline figure where one exists."""
    by_name = {str(f["name"]): f for figures in results.values() for f in figures}
    paired: set[str] = set()
    rows: list[dict[str, Any]] = []
    for module, figures in results.items():
        for fig in figures:
            name = str(fig["name"])
            baseline_name = fig.get("baseline")
            if baseline_name is None:
                for pattern, replacement in BASELINE_RULES:
                    candidate = re.sub(pattern, replacement, name)
                    if candidate != name and candidate in by_name:
                        baseline_name = candidate
                        break
            baseline = by_name.get(str(baseline_name)) if baseline_name else None
            if baseline is not None:
                paired.add(str(baseline["name"]))
            rows.append(
                {
                    "module": module,
                    "name": name,
                    "value": fig["value"],
                    "unit": fig["unit"],
                    "baseline": None
                    if baseline is None
                    else {
                        "name": baseline["name"],
                        "value": baseline["value"],
                        "unit": baseline["unit"],
                    },
                    "target": fig.get("target"),
                    "met": fig.get("met"),
                }
            )
    # A baseline shown beside its figure is not listed again on its own.
    return [r for r in rows if r["name"] not in paired or not _is_baseline(by_name[r["name"]])]


def _print_summary(rows: list[dict[str, Any]]) -> None:
    print("\n== summary (every figure; baseline side by side where one was measured)")
    header = f"  {'figure':<58} {'value':>16}  {'baseline':>16}  {'target':<14} status"
    print(header)
    print("  " + "-" * (len(header) - 2))
    for row in rows:
        value = f"{_format_value(row['value'])} {row['unit']}"
        base = row["baseline"]
        base_text = "" if base is None else f"{_format_value(base['value'])} {base['unit']}"
        met = row["met"]
        status = "" if met is None else ("MET" if met else "NOT MET")
        target = str(row["target"] or "")
        print(f"  {row['name']:<58} {value:>16}  {base_text:>16}  {target:<14} {status}")
    judged = [r for r in rows if r["met"] is not None]
    missed = [r["name"] for r in judged if not r["met"]]
    print(f"  targets: {len(judged) - len(missed)} of {len(judged)} met", end="")
    print(f"; NOT MET: {', '.join(missed)}" if missed else "")


def _format_value(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 1000 else f"{value:,.0f}"
    return str(value)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks")
    parser.add_argument("--out", type=Path, default=Path("build/bench.json"))
    parser.add_argument("only", nargs="*", help="run only modules whose name contains one of these")
    args = parser.parse_args(argv)

    results: dict[str, list[Figure]] = {}
    failures: dict[str, str] = {}
    for name in _modules(args.only):
        started = time.perf_counter()
        print(f"== {name}", flush=True)
        try:
            module = importlib.import_module(f"benchmarks.{name}")
            figures: list[Figure] = module.run()
        except Exception:  # one broken benchmark must not hide the others' figures
            failures[name] = traceback.format_exc()
            print(failures[name], file=sys.stderr)
            continue
        results[name] = figures
        for fig in figures:
            met = fig.get("met")
            mark = "" if met is None else ("  MET" if met else "  NOT MET")
            target = f"  (target {fig['target']})" if fig.get("target") else ""
            value = _format_value(fig["value"])
            print(f"  {fig['name']:<58} {value:>12} {fig['unit']}{target}{mark}")
        print(f"   ({time.perf_counter() - started:.1f} s)", flush=True)

    summary = summarise(results)
    _print_summary(summary)
    report = {
        "machine": {
            "python": sys.version.split()[0],
            "platform": platform.platform(),
            "processor": platform.machine(),
        },
        "results": results,
        "failures": failures,
        "summary": summary,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(f"figures written to {args.out}")
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
