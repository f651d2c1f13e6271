#!/usr/bin/env python3
"""The same workflow shapes in LangGraph and in this runtime, one after the
other on one machine, and the ratios between them.

    python3 benches/peers/compare.py [--tasks 200] [--runs 5]

Each task computes `1 + 1`: a LangGraph node in Python, a built-in
`transform` task (a Rhai script in the WebAssembly sandbox) here. Shapes:
a chain (each task needs the one before) and a fan-out (every task
independent). Per-task time is the run's wall time divided by the task
count, the median of `--runs` runs after one warm-up run; process start,
imports and graph compilation are left out on both sides (this runtime's
figure is the `duration_us` its JSON report gives for the run).

LangGraph runs without a checkpointer and with its in-memory one; this
runtime records every run in its redb store, with `durability: batched`
(commits grouped behind the run) and `strict` (a task's dependents start
once its result is on disk).

Set-up is the script's own: it makes a virtual environment under
`target/peers/venv`, installs the pinned LangGraph from PyPI into it, and
builds the runtime with `cargo build --release`.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

LANGGRAPH = "langgraph==1.2.24"
ROOT = Path(__file__).resolve().parents[2]
VENV = ROOT / "target" / "peers" / "venv"


def in_venv() -> bool:
    return Path(sys.prefix).resolve() == VENV.resolve()


def ensure_venv() -> None:
    """Re-runs this script inside the virtual environment, made on first use."""
    python = VENV / "bin" / "python"
    if not python.exists():
        print(f"making {VENV} and installing {LANGGRAPH} ...", file=sys.stderr)
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
        subprocess.run(
            [str(python), "-m", "pip", "install", "--quiet", LANGGRAPH], check=True
        )
    os.execv(str(python), [str(python), *sys.argv])


def langgraph_per_task(shape: str, tasks: int, runs: int, checkpointer: bool) -> float:
    """Median µs per task of `shape` in LangGraph."""
    import operator
    from typing import Annotated, TypedDict

    from langgraph.checkpoint.memory import InMemorySaver
    from langgraph.graph import END, START, StateGraph

    class State(TypedDict):
        x: Annotated[int, operator.add]

    def node(state: State) -> dict:
        return {"x": 1 + 1}

    graph = StateGraph(State)
    names = [f"t{i}" for i in range(tasks)]
    for name in names:
        graph.add_node(name, node)
    if shape == "chain":
        graph.add_edge(START, names[0])
        for before, after in zip(names, names[1:]):
            graph.add_edge(before, after)
        graph.add_edge(names[-1], END)
    else:
        for name in names:
            graph.add_edge(START, name)
            graph.add_edge(name, END)
    compiled = graph.compile(checkpointer=InMemorySaver() if checkpointer else None)

    def once(i: int) -> float:
        config = {"recursion_limit": tasks + 10}
        if checkpointer:
            config["configurable"] = {"thread_id": f"{shape}-{i}"}
        started = time.perf_counter()
        result = compiled.invoke({"x": 0}, config)
        took = time.perf_counter() - started
        assert result["x"] == 2 * tasks, result
        return took

    once(-1)
    return statistics.median(once(i) for i in range(runs)) / tasks * 1e6


def runtime_binary() -> Path:
    subprocess.run(
        ["cargo", "build", "--release", "--quiet", "-p", "runtime"], cwd=ROOT, check=True
    )
    target = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))
    return target / "release" / "runtime"


def workflow(shape: str, tasks: int, durability: str) -> str:
    lines = [f"name: {shape}_{durability}", f"durability: {durability}", "tasks:"]
    for i in range(tasks):
        lines.append(f"  - id: t{i}")
        lines.append("    uses: transform")
        lines.append("    with: { script: '1 + 1' }")
        if shape == "chain" and i > 0:
            lines.append(f"    needs: [t{i - 1}]")
    return "\n".join(lines) + "\n"


def runtime_per_task(
    binary: Path, home: Path, shape: str, tasks: int, runs: int, durability: str
) -> float:
    """Median µs per task of `shape` in this runtime."""
    flow = home / f"{shape}-{durability}.yaml"
    flow.write_text(workflow(shape, tasks, durability))
    env = dict(os.environ)
    env["ORCHESTRATOR_STORE"] = str(home / "store.redb")
    env["ORCHESTRATOR_CONFIG"] = str(ROOT / "tests" / "fixtures" / "no-config.yaml")
    env.pop("RUST_LOG", None)

    def once() -> float:
        out = subprocess.run(
            [str(binary), "run", str(flow), "--output", "json"],
            cwd=ROOT,
            env=env,
            check=True,
            capture_output=True,
        )
        report = json.loads(out.stdout)
        assert report["status"] == "succeeded", report
        assert all(t["output"] == 2 for t in report["tasks"]), report
        return report["duration_us"]

    once()
    return statistics.median(once() for _ in range(runs)) / tasks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=200)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    if not in_venv():
        ensure_venv()
    binary = runtime_binary()
    import langgraph  # noqa: F401  (installed above)

    rows = []
    with tempfile.TemporaryDirectory() as home:
        home = Path(home)
        for shape in ("chain", "fanout"):
            peer = langgraph_per_task(shape, args.tasks, args.runs, False)
            peer_saved = langgraph_per_task(shape, args.tasks, args.runs, True)
            batched = runtime_per_task(binary, home, shape, args.tasks, args.runs, "batched")
            strict = runtime_per_task(binary, home, shape, args.tasks, args.runs, "strict")
            rows.append((shape, peer, peer_saved, batched, strict))

    print(
        f"{args.tasks} tasks computing 1 + 1, µs per task (median of {args.runs} runs); "
        f"ratio = LangGraph / this runtime, above 1 means this runtime is faster\n"
    )
    print(
        "| shape | LangGraph | LangGraph + InMemorySaver | runtime, batched | runtime, strict "
        "| ratio batched | ratio strict | ratio strict vs InMemorySaver |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for shape, peer, peer_saved, batched, strict in rows:
        print(
            f"| {shape}-{args.tasks} | {peer:.0f} | {peer_saved:.0f} | {batched:.0f} | {strict:.0f} "
            f"| {peer / batched:.2f} | {peer / strict:.2f} | {peer_saved / strict:.2f} |"
        )


if __name__ == "__main__":
    main()
