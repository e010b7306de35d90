#!/usr/bin/env python3
"""The performance suite of .ci/bench-perf (issue 14): Capstan's own cost, each figure a ratio
against its comparison measured in the same run, the runs of a group interleaved (the order
rotates each repetition), medians printed with the goal and PASS/MISS.

Groups (FIGURES, default all of them):
  noop    a 6-stage chain and a 6-stage fan-out (1 -> 5) of command stages that each exec `true`,
          warm cache, against bash and `just` running the same commands;
  scale   50-, 200- and 1000-stage chains and a wide DAG (1 -> 200 -> 1): wall time and
          audit.jsonl bytes per stage, the 1000-stage chain against bash running 1000 `true`s;
  output  OUTPUT_BYTES (default 1 GiB) of child output, logged (`-q`), echoed (no `-q`, stderr
          to a file) and unlogged, against `cat` of the same file into a file and into /dev/null;
  load    the five first-party plugins loaded cold (--no-cache), warm, and from a fresh state
          dir after another state dir compiled them (`load_ms` of `run --json`, summed);
  stats   `capstan stats` over STORE_BENCH_RUNS runs (host/benches/store_history.rs).

Peak RSS is each capstan process's own (wait4's ru_maxrss, as `/usr/bin/time -f %M` reads it).
Called by .ci/bench-perf, which installs `just` and builds what this needs.
"""

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import signal
import tempfile
import threading
import time
from pathlib import Path

FIGURES = ("noop", "scale", "output", "load", "stats")
FIVE = ("packer", "terraform", "approval", "ansible", "smoke-test")
MIB = 1 << 20


def env_int(name, default):
    value = os.environ.get(name, "")
    if not value:
        return default
    try:
        n = int(value)
    except ValueError:
        sys.exit(f"bench-perf: {name}={value!r} is not a number (e.g. {name}={default})")
    if n < 1:
        sys.exit(f"bench-perf: {name}={value!r} must be at least 1")
    return n


def env_bytes(name, default):
    """A size such as 1GiB, 100MiB, 1G or 1073741824."""
    value = os.environ.get(name, "") or default
    m = re.fullmatch(r"\s*(\d+)\s*([KMG]?)(?:i?B)?\s*", value, re.IGNORECASE)
    if not m or int(m.group(1)) == 0:
        sys.exit(f"bench-perf: {name}={value!r} is not a size (e.g. {name}=1GiB or {name}=100MiB)")
    return int(m.group(1)) << {"": 0, "K": 10, "M": 20, "G": 30}[m.group(2).upper()]


def toml_str(s):
    # JSON's escapes are valid in TOML basic strings.
    return json.dumps(str(s))


def say(*args):
    print("bench-perf:", *args, file=sys.stderr, flush=True)


def med(xs):
    return statistics.median(xs)


def run_of(result):
    """The Run inside a variant's result (a Run, or a tuple whose last item is one)."""
    return result[-1] if isinstance(result, tuple) else result


class Failed(Exception):
    pass


class Run:
    """One timed process: wall seconds (at least the timeout when it was stopped), peak RSS KiB."""

    def __init__(self, wall, rss, timed_out=False):
        self.wall, self.rss, self.timed_out = wall, rss, timed_out


class Suite:
    def __init__(self, args):
        self.capstan = str(Path(args.capstan).resolve())
        self.wasm = Path(args.wasm_dir).resolve()
        self.just = str(Path(args.just).resolve())
        self.repo = Path(args.repo).resolve()
        self.n = env_int("N", 10)
        self.n_big = env_int("N_BIG", 3)
        self.n_load = env_int("N_LOAD", 5)
        self.timeout = env_int("RUN_TIMEOUT", 120)
        self.output_bytes = env_bytes("OUTPUT_BYTES", "1GiB")
        self.true = shutil.which("true")
        if not self.true:
            sys.exit("bench-perf: no `true` on PATH")
        self.work = Path(tempfile.mkdtemp(prefix="capstan-bench-perf-"))
        self.pipes = self.work / "pipes"
        (self.pipes / "ro").mkdir(parents=True)
        (self.work / "logs").mkdir()
        # The per-user compiled-plugin cache (and its key) starts empty here and stays out of
        # the user's own.
        self.env = dict(os.environ, XDG_CACHE_HOME=str(self.work / "xdg-cache"),
                        XDG_STATE_HOME=str(self.work / "xdg-state"))
        self.env.pop("CAPSTAN_CACHE_DIR", None)
        self.rows = []
        self.serial = 0

    # ── running things ──────────────────────────────────────────────────────────────────────
    def timed(self, what, argv, stdout=None, stderr=None, cwd=None):
        """Run argv; fails naming `what` unless it exits 0. Past RUN_TIMEOUT it is stopped (SIGTERM:
        a capstan run ends as cancelled, its lock released; SIGKILL 30 s later) and the Run says so."""
        self.serial += 1
        err_path = self.work / "logs" / f"{self.serial}.err"
        out = open(stdout, "wb") if stdout else subprocess.DEVNULL
        err = open(stderr or err_path, "wb")
        try:
            t = time.perf_counter()
            p = subprocess.Popen(argv, stdout=out, stderr=err, stdin=subprocess.DEVNULL,
                                 env=self.env, cwd=cwd)
            stops = [threading.Timer(self.timeout, p.send_signal, [signal.SIGTERM]),
                     threading.Timer(self.timeout + 30, p.kill)]
            for stop in stops:
                stop.start()
            _, status, usage = os.wait4(p.pid, 0)
            wall = time.perf_counter() - t
            for stop in stops:
                stop.cancel()
        finally:
            if out is not subprocess.DEVNULL:
                out.close()
            err.close()
        p.returncode = code = os.waitstatus_to_exitcode(status)
        if wall >= self.timeout:
            say(f"{what}: stopped after RUN_TIMEOUT={self.timeout} s; not repeated")
            return Run(wall, usage.ru_maxrss, timed_out=True)
        if code != 0:
            tail = Path(stderr or err_path).read_bytes()[-3000:].decode(errors="replace")
            raise Failed(f"{what}: `{' '.join(map(str, argv))}` exited with {code}:\n{tail}")
        return Run(wall, usage.ru_maxrss)

    def capstan_run(self, what, state, pipeline, *flags, stdout=None, stderr=None):
        argv = [self.capstan, "--state-dir", str(state), "run", str(pipeline), *flags]
        return self.timed(what, argv, stdout=stdout, stderr=stderr)

    def interleaved(self, name, reps, variants):
        """Run each variant once per repetition, rotating their order; returns {variant: [results]}.
        A variant whose run was stopped at RUN_TIMEOUT is not run again."""
        results = {key: [] for key, _ in variants}
        for rep in range(reps):
            say(f"{name}: repetition {rep + 1}/{reps}")
            shift = rep % len(variants)
            for key, fn in variants[shift:] + variants[:shift]:
                if not any(run_of(r).timed_out for r in results[key]):
                    results[key].append(fn())
        return results

    def compare(self, figure, mine, theirs, goal=None, bound=None, goal_text=None, unit="ms",
                scale=1000, digits=1, ratio_digits=2):
        """A row: the medians of `mine` and `theirs` (lists of (value, timed out)) and the median
        of their paired ratios, checked against `goal` (a ratio) or `bound` (a most for the median
        of `mine`), or neither. A value cut at RUN_TIMEOUT is a lower bound, shown with ≥, and
        misses."""
        cut = any(t for _, t in mine)
        ratio = med([a / b for (a, _), (b, _) in zip(mine, theirs)])
        mine_med = med([v for v, _ in mine])
        if goal is not None:
            ok, text = not cut and ratio <= goal, f"≤ {goal}×"
        elif bound is not None:
            ok, text = not cut and mine_med <= bound, f"≤ {bound * scale:g} {unit}"
        else:
            ok, text = None, "—"
        ge = "≥ " if cut else ""
        self.row(figure, f"{ge}{mine_med * scale:.{digits}f} {unit}",
                 f"{med([v for v, _ in theirs]) * scale:.{digits}f} {unit}",
                 f"{ge}{ratio:.{ratio_digits}f}×", goal_text or text, ok)

    def row(self, figure, measured, comparison, ratio, goal, ok):
        result = "—" if ok is None else ("PASS" if ok else "MISS")
        self.rows.append((figure, measured, comparison, ratio, goal, result))

    # ── pipelines ───────────────────────────────────────────────────────────────────────────
    def header(self, name, plugins=("command",), concurrency=None):
        lines = ["[pipeline]", f"name = {toml_str(name)}"]
        if concurrency:
            lines.append(f"concurrency = {concurrency}")
        for plugin in plugins:
            file = self.wasm / f"capstan_{plugin.replace('-', '_')}.wasm"
            if not file.is_file():
                sys.exit(f"bench-perf: {file} is missing: build it with "
                         f"`cargo build --release --target wasm32-wasip2 -p capstan-{plugin}`")
            lines += [f"[plugins.{plugin}]", f"path = {toml_str(file)}"]
        return "\n".join(lines) + "\n"

    def stage(self, name, argv, needs=(), plugin="command", extra_with="", max_output=None):
        program = argv[0]
        grant_env = '\nenv = ["CAPSTAN_OUTPUT"]' if plugin == "command" else ""
        grant_args = "\nargs = [" + ", ".join(['"*"'] * (len(argv) - 1)) + "]" if argv[1:] else ""
        run = ", ".join(toml_str(a) for a in argv)
        lines = [f"[stages.{name}]", f'plugin = "{plugin}"']
        if needs:
            lines.append("needs = [" + ", ".join(toml_str(n) for n in needs) + "]")
        if max_output:
            lines.append(f'max_output = "{max_output}"')
        lines += [
            f"with = {{ run = [{run}]{extra_with} }}",
            f"[[stages.{name}.grants.exec]]",
            f"program = {toml_str(program)}{grant_args}{grant_env}",
            f"[stages.{name}.grants]",
            'read = ["ro"]',
        ]
        return "\n".join(lines) + "\n"

    def write(self, file_name, text):
        path = self.pipes / file_name
        path.write_text(text)
        return path

    def chain(self, n):
        stages = [self.stage(f"s{i:04}", ["true"], needs=[f"s{i - 1:04}"] if i else ())
                  for i in range(n)]
        return self.write(f"chain-{n}.toml", self.header(f"chain-{n}") + "".join(stages))

    def fan(self, leaves, concurrency=None, tail=False, name=None):
        """A root, `leaves` stages that need it, and (with `tail`) one stage that needs them all."""
        stages = [self.stage("root", ["true"])]
        stages += [self.stage(f"l{i:04}", ["true"], needs=["root"]) for i in range(leaves)]
        if tail:
            stages.append(self.stage("sink", ["true"], needs=[f"l{i:04}" for i in range(leaves)]))
        name = name or f"fan-{leaves}"
        return self.write(f"{name}.toml", self.header(name, concurrency=concurrency) + "".join(stages))

    def new_run_dir(self, state, before):
        runs = state / "runs"
        new = set(os.listdir(runs)) - before
        if len(new) != 1:
            raise Failed(f"expected one new run dir in {runs}, found {sorted(new)}")
        return runs / new.pop()

    def run_dirs(self, state):
        runs = state / "runs"
        return set(os.listdir(runs)) if runs.is_dir() else set()

    # ── 1. no-op chain and fan-out against bash and just ────────────────────────────────────
    def noop(self):
        state = self.work / "state-noop"
        chain = self.chain(6)
        fan = self.fan(5, concurrency=5, name="fan-6")
        true = self.true
        bash_chain = self.write("chain-6.sh", "set -e\n" + f"{true}\n" * 6)
        bash_fan = self.write("fan-6.sh", f"set -e\n{true}\n" + f"{true} &\n" * 5 + "wait\n")
        recipes = [f"s1:\n    {true}\n"] + [f"s{i}: s{i - 1}\n    {true}\n" for i in range(2, 7)]
        recipes += [f"root:\n    {true}\n", "[parallel]\nfan: a b c d e\n"]
        recipes += [f"{leaf}: root\n    {true}\n" for leaf in "abcde"]
        justfile = self.write("justfile", "\n".join(recipes))
        just = [self.just, "--justfile", str(justfile), "--working-directory", str(self.pipes)]
        for p in (chain, fan):  # warm: plugins compiled, store created
            self.capstan_run("noop warm-up", state, p, "-q")
        variants = [
            ("capstan chain", lambda: self.capstan_run("6-stage chain", state, chain, "-q")),
            ("bash chain", lambda: self.timed("bash 6-stage chain", ["bash", str(bash_chain)])),
            ("just chain", lambda: self.timed("just 6-stage chain", just + ["s6"])),
            ("capstan fan", lambda: self.capstan_run("6-stage fan-out", state, fan, "-q")),
            ("bash fan", lambda: self.timed("bash 6-stage fan-out", ["bash", str(bash_fan)])),
            ("just fan", lambda: self.timed("just 6-stage fan-out", just + ["fan"])),
        ]
        r = self.interleaved("noop", self.n, variants)
        wall = {k: [(x.wall, x.timed_out) for x in v] for k, v in r.items()}
        for shape, label in (("chain", "no-op 6-stage chain"), ("fan", "no-op 6-stage fan-out (1 → 5)")):
            for other, goal in (("bash", 1.5), ("just", 1.0)):
                self.compare(f"{label} vs {other}", wall[f"capstan {shape}"],
                             wall[f"{other} {shape}"], goal)

    # ── 2. 50/200/1000-stage chains and a wide DAG ──────────────────────────────────────────
    def scale(self):
        state = self.work / "state-scale"
        shapes = {
            "50": (self.chain(50), 50, "50-stage chain"),
            "200": (self.chain(200), 200, "200-stage chain"),
            "1000": (self.chain(1000), 1000, "1000-stage chain"),
            "dag": (self.fan(200, tail=True, name="dag-1-200-1"), 202, "wide DAG 1 → 200 → 1"),
        }
        bash_1000 = self.write("chain-1000.sh", "set -e\n" + f"{self.true}\n" * 1000)
        self.capstan_run("scale warm-up", state, shapes["50"][0], "-q")

        def one(key):
            pipeline, stages, label = shapes[key]
            before = self.run_dirs(state)
            run = self.capstan_run(label, state, pipeline, "-q")
            run_dir = self.new_run_dir(state, before)
            # A run stopped at RUN_TIMEOUT counts the stages it started: its time and audit bytes
            # per stage are then lower bounds (a stage costs more the more stages are before it).
            started = stages
            if run.timed_out:
                started = max(len(os.listdir(run_dir / "logs")), 1)
                say(f"{label}: {started} of {stages} stages started before it was stopped")
            audit = (run_dir / "audit.jsonl").stat().st_size / started
            return run.wall / started, audit, run

        variants = [(key, lambda key=key: one(key)) for key in shapes]
        variants.append(("bash", lambda: self.timed("bash 1000 execs", ["bash", str(bash_1000)])))
        r = self.interleaved("scale", self.n_big, variants)
        per = {k: [(x[0], x[2].timed_out) for x in r[k]] for k in shapes}
        audit = {k: [(x[1], x[2].timed_out) for x in r[k]] for k in shapes}
        base_t, base_a = med([v for v, _ in per["50"]]), med([v for v, _ in audit["50"]])
        self.row("50-stage chain: time per stage", f"{base_t * 1000:.2f} ms", "—", "—", "(base)", None)
        self.row("50-stage chain: audit.jsonl per stage", f"{base_a / 1024:.1f} KiB", "—", "—",
                 "(base)", None)
        for key in ("200", "1000", "dag"):
            label = shapes[key][2]
            self.compare(f"{label}: time per stage vs 50-stage chain", per[key], per["50"], 1.2,
                         digits=2)
            self.compare(f"{label}: audit.jsonl per stage vs 50-stage chain", audit[key],
                         audit["50"], 1.2, unit="KiB", scale=1 / 1024)
        walls = [(x[2].wall, x[2].timed_out) for x in r["1000"]]
        bash = [(x.wall, False) for x in r["bash"]]
        self.compare("1000-stage chain: wall (vs bash, 1000 execs)", walls, bash, bound=1.5,
                     unit="s", scale=1, digits=2, ratio_digits=1)
        rss, worst = max((x[2].rss, k) for k in shapes for x in r[k])
        self.row(f"peak RSS: chains and DAG (max: {shapes[worst][2]})", f"{rss / 1024:.1f} MiB", "—",
                 "—", "< 64 MiB", rss < 64 * 1024)

    # ── 3. 1 GiB of child output ───────────────────────────────────────────────────────────
    def output(self):
        size = self.output_bytes
        data = self.pipes / "ro" / "output.txt"
        line = (b"0123456789 abcdefghijklmnopqrstuvwxyz " * 3)[:99] + b"\n"  # 100-byte log lines
        block = line * 10_486  # ~1 MiB
        with open(data, "wb") as f:
            left = size
            while left > len(block):
                f.write(block)
                left -= len(block)
            f.write(block[: left - 1] + b"\n")
        state = self.work / "state-output"
        cap = f"{size // MIB + 64}MiB"
        argv = ["cat", str(data)]
        logged = self.write("output-logged.toml", self.header("output-logged")
                            + self.stage("out", argv, max_output=cap))
        unlogged = self.write("output-unlogged.toml", self.header("output-unlogged", ("bench-output",))
                              + self.stage("out", argv, plugin="bench-output",
                                           extra_with=", unlogged = true", max_output=cap))
        warm = self.write("output-warm-up.toml", self.header("output-warm-up", ("command", "bench-output"))
                          + self.stage("a", ["true"]) + self.stage("b", ["true"], plugin="bench-output"))
        sink = self.work / "sink"
        label = f"{size / (1 << 30):g} GiB" if size >= 1 << 30 else f"{size / MIB:g} MiB"

        def capstan(pipeline, *flags):
            os.sync()  # each run starts without the previous one's dirty pages
            before = self.run_dirs(state)
            try:
                return self.capstan_run(f"{label} of output", state, pipeline, *flags, stderr=sink)
            finally:
                for run in self.run_dirs(state) - before:
                    shutil.rmtree(state / "runs" / run)
                sink.unlink(missing_ok=True)

        def cat(to):
            os.sync()
            try:
                return self.timed(f"cat {label}", argv, stdout=to)
            finally:
                if to != "/dev/null":
                    Path(to).unlink(missing_ok=True)

        self.capstan_run("output warm-up", state, warm, "-q")  # both plugins compiled
        cat("/dev/null")  # the file in the page cache
        variants = [
            ("logged", lambda: capstan(logged, "-q")),
            ("echoed", lambda: capstan(logged)),
            ("unlogged", lambda: capstan(unlogged, "-q")),
            ("cat file", lambda: cat(str(self.work / "cat.out"))),
            ("cat null", lambda: cat("/dev/null")),
        ]
        r = self.interleaved("output", self.n_big, variants)
        wall = {k: [(x.wall, x.timed_out) for x in v] for k, v in r.items()}
        for mine, theirs, text, goal in (
            ("echoed", "logged", "echoed (stderr to a file) vs logged (-q)", 1.5),
            ("logged", "cat file", "logged (-q) vs cat into a file", 1.2),
            ("unlogged", "cat null", "unlogged vs cat into /dev/null", None),
        ):
            self.compare(f"{label} of output {text}", wall[mine], wall[theirs], goal, unit="s",
                         scale=1, digits=2)
        rss = max(x.rss for k in ("logged", "echoed", "unlogged") for x in r[k])
        self.row(f"peak RSS: {label} logged, echoed, unlogged (max)", f"{rss / 1024:.1f} MiB", "—",
                 "—", "< 64 MiB", rss < 64 * 1024)
        data.unlink()

    # ── 4. loading the five first-party plugins ─────────────────────────────────────────────
    def load(self):
        pipeline = self.write("load-5.toml", self.header("load-5", FIVE + ("command",))
                              + self.stage("s", ["true"]))
        json_out = self.work / "load.json"

        def one(state, *flags):
            run = self.capstan_run("loading five plugins", state, pipeline, "-q", "--json",
                                   *flags, stdout=json_out)
            if run.timed_out:
                raise Failed(f"loading five plugins took more than RUN_TIMEOUT={self.timeout} s")
            plugins = {p["name"]: p for p in json.loads(json_out.read_text())["plugins"]}
            load = sum(plugins[name]["load_ms"] for name in FIVE) / 1000
            return load, {plugins[name]["cache"] for name in FIVE}, run

        warm = self.work / "state-load-warm"
        cold = self.work / "state-load-cold"
        one(warm)  # this machine has compiled them (into another state dir than the fresh ones)
        fresh_dirs = iter(self.work / f"state-load-fresh-{i}" for i in range(self.n_load))

        def fresh():
            state = next(fresh_dirs)
            try:
                return one(state)
            finally:
                shutil.rmtree(state, ignore_errors=True)

        variants = [
            ("cold", lambda: one(cold, "--no-cache")),
            ("warm", lambda: one(warm)),
            ("fresh", fresh),
        ]
        r = self.interleaved("load", self.n_load, variants)
        load = {k: [(x[0], False) for x in v] for k, v in r.items()}
        cache = {k: "/".join(sorted(set().union(*(x[1] for x in v)))) for k, v in r.items()}
        self.compare("cold load of the five plugins (--no-cache) vs warm", load["cold"],
                     load["warm"], bound=0.8, ratio_digits=0)
        self.compare(f"load in a fresh state dir (cache: {cache['fresh']}) vs warm", load["fresh"],
                     load["warm"], goal=2.0, goal_text="≤ 2× (no compile)")
        rss = max(x[2].rss for x in r["cold"])
        self.row("peak RSS: cold load of the five plugins (max)", f"{rss / 1024:.1f} MiB", "—", "—",
                 "< 64 MiB", rss < 64 * 1024)

    # ── 5. stats over 10 000 runs ───────────────────────────────────────────────────────────
    def stats(self):
        say("stats: cargo bench -p capstan --bench store_history (writes the history first)")
        cmd = ["cargo", "bench", "--locked", "-q", "-p", "capstan", "--bench", "store_history"]
        # SQLite only, unless asked: filling PostgreSQL with 10 000 runs takes minutes.
        env = dict(os.environ, STORE_BENCH_STORES=os.environ.get("STORE_BENCH_STORES", "sqlite"))
        p = subprocess.run(cmd, cwd=self.repo, stdout=subprocess.PIPE, text=True, env=env)
        print(p.stdout, end="", flush=True)
        if p.returncode != 0:
            raise Failed(f"stats: `{' '.join(cmd)}` exited with {p.returncode}")
        m = re.search(r"^sqlite\s+(\d+) runs.*?capstan stats --json\s+([\d.]+) ms", p.stdout,
                      re.MULTILINE | re.DOTALL)
        if not m:
            raise Failed("stats: no `sqlite … capstan stats --json … ms` line in store_history's output")
        runs, ms = int(m.group(1)), float(m.group(2))
        self.row(f"stats over {runs} runs (SQLite)", f"{ms:.1f} ms", "—", "—", "≤ 50 ms", ms <= 50)

    # ── the table ───────────────────────────────────────────────────────────────────────────
    def table(self):
        head = ("figure", "measured", "comparison", "ratio", "goal", "result")
        widths = [max(len(str(r[i])) for r in self.rows + [head]) for i in range(len(head))]
        lines = ["| " + " | ".join(str(c).ljust(w) for c, w in zip(row, widths)) + " |"
                 for row in [head] + self.rows]
        lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
        return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--capstan", required=True, help="the release capstan binary")
    ap.add_argument("--wasm-dir", required=True, help="where the release wasm plugins are")
    ap.add_argument("--just", required=True, help="the just binary")
    ap.add_argument("--repo", required=True, help="the workspace root (for cargo bench)")
    args = ap.parse_args()
    chosen = os.environ.get("FIGURES", "").split() or list(FIGURES)
    unknown = [f for f in chosen if f not in FIGURES]
    if unknown:
        sys.exit(f"bench-perf: unknown figure(s) in FIGURES: {' '.join(unknown)} "
                 f"(choose among: {' '.join(FIGURES)})")
    suite = Suite(args)
    started = time.monotonic()
    try:
        for figure in FIGURES:
            if figure in chosen:
                getattr(suite, figure)()
    except Failed as e:
        sys.exit(f"bench-perf: {e}")
    finally:
        if os.environ.get("KEEP"):
            say(f"kept {suite.work}")
        else:
            shutil.rmtree(suite.work, ignore_errors=True)
    print()
    print(f"Capstan performance goals (issue 14): N={suite.n} (no-op), N_BIG={suite.n_big} "
          f"(scale, output), N_LOAD={suite.n_load} (load); medians; a ratio is the median of the "
          f"repetitions' paired ratios")
    print(suite.table())
    misses = sum(1 for r in suite.rows if r[5] == "MISS")
    goals = sum(1 for r in suite.rows if r[5] in ("PASS", "MISS"))
    print(f"{goals - misses} of {goals} goals met; {time.monotonic() - started:.0f} s")


if __name__ == "__main__":
    main()
