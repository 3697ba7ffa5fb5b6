"""Run every `benchmarks/bench_*.py` module, print one table and write the figures as JSON.

Each module exposes `run() -> list[Figure]`. A figure is a dict with at least `name`, `value` and
`unit`; optionally `target` (text such as "< 2 ms"), `met` (bool) and `note`. Baselines measured in
the same run are figures of their own, named so that they sort beside what they compare with.
"""

from __future__ import annotations

import argparse
import importlib
import json
import platform
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

    report = {
        "machine": {
            "python": sys.version.split()[0],
            "platform": platform.platform(),
            "processor": platform.machine(),
        },
        "results": results,
        "failures": failures,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(f"figures written to {args.out}")
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
