"""Wall time of each DVC stage: `dvc repro -f -s <stage>` for every stage of dvc.yaml, in order.

    python -m bench.stage_times --repo /path/to/a/copy          # all stages (~20 min for the default config)
    python -m bench.stage_times --repo /path/to/a/copy --stages train,index
    python -m bench.stage_times --repo . --dry-run              # print the commands only

Run it in a copy of the repository (it forces every stage, so it rewrites that copy's outputs and
DVC cache entries). Each stage is forced (`-f`) and run alone (`-s`), in dvc.yaml order, so its
inputs come from the previous stage of the same run. Besides wall time it records the children's
CPU time (user + sys; less sensitive to a busy machine than wall time), the load average around
each stage, and every encode/score pass the stage made (`kd.compute.pass_record` lines in its log:
items, how many were computed rather than taken from kept shards, items/s, and the kernel path:
torch/bfloat16, torch/float32, onnx/float32 or onnx/int8), so a slow stage says why. Results are
written after every stage (an interrupted run keeps what it measured) to bench/results/stage_times.json and .md; each stage's output goes to bench/results/stage_logs/.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # `python bench/stage_times.py`: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import yaml  # noqa: E402

from bench.portable import portable, portable_text  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m bench.stage_times", description=__doc__.split("\n\n")[0])
    ap.add_argument("--repo", type=Path, default=Path("."), help="repository copy to run the stages in")
    ap.add_argument("--stages", default=None, help="comma-separated subset (default: every stage, dvc.yaml order)")
    ap.add_argument("--dvc", default=None, help="dvc executable (default: `dvc` beside this Python, else on PATH)")
    ap.add_argument("--timeout", type=float, default=None, help="seconds per stage before it is killed")
    ap.add_argument("--keep-going", action="store_true", help="continue after a failed stage")
    ap.add_argument("--dry-run", action="store_true", help="print the commands, run nothing")
    ap.add_argument("--out", type=Path, default=RESULTS, help="results folder (default bench/results)")
    return ap.parse_args(argv)


def stage_order(repo: Path) -> list[str]:
    """Stage names upstream first: a stage after every stage whose outs it depends on (dvc.yaml order otherwise).

    `dvc repro -s` runs one stage without its upstream, so the file's order is not enough: `baseline`
    reads `teacher_corpus` (asymmetric mode) though dvc.yaml lists it first."""
    path = repo / "dvc.yaml"
    if not path.is_file():
        raise SystemExit(f"error: {path} not found: --repo must be a DVC repository")
    stages = (yaml.safe_load(path.read_text()) or {}).get("stages") or {}
    if not isinstance(stages, dict) or not stages:
        raise SystemExit(f"error: {path} defines no stages")

    def within(dep: str, out: str) -> bool:
        return dep == out or dep.startswith(out.rstrip("/") + "/") or out.startswith(dep.rstrip("/") + "/")

    outs = {name: [next(iter(o)) if isinstance(o, dict) else str(o) for o in st.get("outs") or []] for name, st in stages.items()}
    needs = {
        name: {up for up in stages if up != name for d in st.get("deps") or [] for o in outs[up] if within(str(d), o)}
        for name, st in stages.items()
    }  # fmt: skip
    order: list[str] = []
    while len(order) < len(stages):
        ready = [name for name in stages if name not in order and needs[name] <= set(order)]
        if not ready:
            raise SystemExit(f"error: {path}: the stages' deps and outs form a cycle")
        order.append(str(ready[0]))
    return order


def dvc_command(explicit: str | None) -> list[str]:
    if explicit:
        return [explicit]
    beside = Path(sys.executable).parent / "dvc"
    if beside.exists():
        return [str(beside)]
    found = shutil.which("dvc")
    if found:
        return [found]
    return [sys.executable, "-m", "dvc"]


def _git_commit(repo: Path) -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 and out.stdout.strip() else None


def _loadavg() -> list[float]:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return []


def _write(out_dir: Path, data: dict[str, Any]) -> None:
    """stage_times.json and .md, paths inside the copy relative to it (`bench.portable`)."""
    repo = Path(data["repo"])
    data = {**portable(data, (repo,)), "repo": portable_text(str(repo))}  # the copy itself: `.../<name>`
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, text in (("stage_times.json", json.dumps(data, indent=2) + "\n"), ("stage_times.md", markdown(data))):
        tmp = out_dir / f".{name}.tmp"
        tmp.write_text(text)
        os.replace(tmp, out_dir / name)


PASS_LINE = re.compile(r"pass: (?P<op>\w+) (?P<fields>(?:\w+=\S+ ?)+)")


def passes(log_text: str) -> list[dict[str, Any]]:
    """The encode/score passes a stage's log reports (`kd.compute.pass_record` lines), as dicts."""
    out = []
    for m in PASS_LINE.finditer(log_text):
        rec: dict[str, Any] = {"op": m["op"]}
        for field in m["fields"].split():
            key, value = field.split("=", 1)
            rec[key] = float(value) if key in ("seconds", "per_s") else int(value) if key in ("items", "computed") else value
        out.append(rec)
    return out


def markdown(data: dict[str, Any]) -> str:
    lines = [
        "# DVC stage wall times (`dvc repro -f -s <stage>`)",
        "",
        f"repo `{data['repo']}` at {data.get('git_commit') or '?'}; {data['started']}; cores {data['cores']}.",
        "Shared machine: compare CPU time as well as wall time.",
        "",
        "| stage | status | wall s | CPU s (user+sys) | load avg before -> after |",
        "|---|---|---:|---:|---|",
    ]
    for s in data["stages"]:
        lines.append(
            f"| {s['stage']} | {s['status']} | {s.get('wall_s', '')} | {s.get('cpu_s', '')} | "
            f"{s.get('loadavg_before', '')} -> {s.get('loadavg_after', '')} |"
        )
    done = [s for s in data["stages"] if s["status"] == "ok"]
    lines.append(f"| **total** | {len(done)}/{len(data['stages'])} ok | {round(sum(s['wall_s'] for s in done), 1)} | "
                 f"{round(sum(s['cpu_s'] for s in done), 1)} | |")  # fmt: skip
    rows = [(s["stage"], r) for s in data["stages"] for r in s.get("passes", [])]
    if rows:
        lines += ["", "Passes (a stage's encode/score work; `computed` excludes shards kept from an earlier run):", "",
                  "| stage | op | model (role) | items | computed | s | items/s | kernel |", "|---|---|---|---:|---:|---:|---:|---|"]
        for stage, r in rows:
            lines.append(f"| {stage} | {r['op']} | {r.get('model')} ({r.get('role')}) | {r.get('items')} | {r.get('computed')} | "
                         f"{r.get('seconds')} | {r.get('per_s')} | {r.get('kernel')} |")  # fmt: skip
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    repo = args.repo.resolve()
    order = stage_order(repo)
    wanted = [s.strip() for s in args.stages.split(",")] if args.stages else order
    unknown = [s for s in wanted if s not in order]
    if unknown:
        raise SystemExit(f"error: unknown stage(s) {', '.join(unknown)}; dvc.yaml has {', '.join(order)}")
    stages = [s for s in order if s in wanted]  # always pipeline order
    dvc = dvc_command(args.dvc)
    commands = {s: [*dvc, "repro", "-f", "-s", s] for s in stages}
    if args.dry_run:
        for s in stages:
            print(f"(cd {repo} && {' '.join(commands[s])})")
        return 0
    logs = args.out / "stage_logs"
    logs.mkdir(parents=True, exist_ok=True)
    data: dict[str, Any] = {
        "repo": str(repo),
        "git_commit": _git_commit(repo),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "cores": os.cpu_count(),
        "dvc": dvc,
        "stages": [{"stage": s, "status": "pending"} for s in stages],
    }
    _write(args.out, data)
    failed = False
    for entry in data["stages"]:
        stage = entry["stage"]
        if failed and not args.keep_going:
            entry["status"] = "skipped"
            continue
        print(f"[stage_times] {stage}: {' '.join(commands[stage])}", flush=True)
        entry["loadavg_before"] = _loadavg()
        usage = resource.getrusage(resource.RUSAGE_CHILDREN)
        log_path = logs / f"{stage}.log"
        start = time.perf_counter()
        with log_path.open("w") as log:
            try:
                rc = subprocess.run(
                    commands[stage], cwd=repo, stdout=log, stderr=subprocess.STDOUT, timeout=args.timeout
                ).returncode
            except subprocess.TimeoutExpired:
                rc = -1
        wall = time.perf_counter() - start
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        entry.update(
            {
                "status": "ok" if rc == 0 else ("timeout" if rc == -1 else f"failed (rc {rc})"),
                "wall_s": round(wall, 1),
                "cpu_s": round((after.ru_utime - usage.ru_utime) + (after.ru_stime - usage.ru_stime), 1),
                "loadavg_after": _loadavg(),
                "log": str(log_path),
                "passes": passes(log_path.read_text(errors="replace")),
            }
        )
        print(f"[stage_times] {stage}: {entry['status']} in {entry['wall_s']} s", flush=True)
        if rc != 0:
            failed = True
            print(log_path.read_text()[-1500:], file=sys.stderr)
        _write(args.out, data)
    print(markdown(data))
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
