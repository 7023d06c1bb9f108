#!/usr/bin/env python3
"""Benchmark pyllm against llama.cpp on the same weights in the same run (when llama-cpp-python is
installed): prompt processing (pp) and token generation (tg) like llama-bench, tokens/s; pyllm's
side is `pyllm bench`'s (pyllm/bench.py).

    python tools/bench.py                       # the default model (SmolLM2-135M-Instruct Q4_1)
    python tools/bench.py model.bin ...         # weights.bin files
    python tools/bench.py --gguf a.gguf ...     # GGUFs: converted for pyllm, and run by llama.cpp

pp evaluates a prompt of --pp random tokens from an empty cache in one call; tg generates --tg
tokens one at a time from an empty cache, through the C core (`eval` + argmax) and through
`Model.generate` (the Python sampling loop users call). Each figure is the median of --reps runs,
after one run of each to warm up; pyllm's and llama.cpp's runs alternate within each repetition,
and the ratio is the median of each repetition's ratio, so a machine that speeds up or slows
down during the benchmark (shared virtual machines do: memory bandwidth can halve for seconds)
shifts both alike. llama.cpp runs through llama-cpp-python if it is installed, else through
tools/llama_cpp_ref.c's bench mode (built here against the llama.cpp build that holds
--llama-bench; it keeps the model loaded, as llama-cpp-python does), else through llama-bench
itself (which loads the model for every run). With --membw the bandwidth is also measured before
each repetition, and listed with that repetition's ratios. With --phases N each GGUF is also
decoded in N short runs per engine taken in turn, the bandwidth measured between pairs, and the
paired ratio given for the pairs of each bandwidth phase (this host's bandwidth can halve for
seconds at a time; a repetition of tg128 spans several phases).
"""
import argparse
import atexit
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Callable

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from pyllm import Model  # noqa: E402
from pyllm.bench import (interleaved_rate_lists, interleaved_rates, machine, model_runs, prompt_tokens,  # noqa: E402
                         timed_rate, weight_type)
from paired import membw_program, phases, take_turns, two_thread_bandwidth  # noqa: E402
from pyllm.convert import convert  # noqa: E402
from pyllm.fetch import cache_dir, default_model  # noqa: E402


HERE = os.path.dirname(os.path.abspath(__file__))
BUILD = tempfile.mkdtemp(prefix="pyllm-bench-")  # the helper programs built for this run
atexit.register(shutil.rmtree, BUILD, True)


def memory_bandwidth() -> str:
    """What tools/membw.c measures here (read bandwidth on 1 and 2 threads)."""
    out = subprocess.run([membw_program(BUILD)], check=True, capture_output=True, text=True).stdout
    return "; ".join(out.split("\n")).strip("; ")


def median_rate(n: int, reps: int, run) -> float:
    return interleaved_rates({"run": (n, run)}, reps)["run"]


def llama_cpp_runs(llm, args) -> dict:
    """pp and tg of llama.cpp (llama-cpp-python's low-level eval), as {name: (tokens, fn)}."""
    toks = prompt_tokens(args.pp, llm.n_vocab())

    def pp() -> None:
        llm.reset()
        llm.eval(toks)

    def tg() -> None:
        llm.reset()
        for i in range(args.tg):
            llm.eval([toks[i]])

    return {"pp": (args.pp, pp), "tg": (args.tg, tg)}


def llama_bench_runs(program: str, gguf: str, args) -> dict:
    """pp and tg of llama.cpp's own llama-bench, one repetition per call, as {name: (tokens, fn)};
    each fn returns the seconds llama-bench measured (model loading and its warm-up excluded)."""
    threads = args.threads or len(os.sched_getaffinity(0))

    def measure(pp: int, tg: int) -> float:
        cmd = [program, "-m", gguf, "-p", str(pp), "-n", str(tg), "-r", "1", "-t", str(threads), "-o", "json"]
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
        return json.loads(out)[0]["avg_ns"] / 1e9

    return {"pp": (args.pp, lambda: measure(args.pp, 0)), "tg": (args.tg, lambda: measure(0, args.tg))}


def llama_cpp_ref_runs(gguf: str, args) -> tuple[dict, subprocess.Popen] | None:
    """pp and tg of llama.cpp through tools/llama_cpp_ref.c's bench mode (the model loaded once), built
    against the llama.cpp build holding --llama-bench, as {name: (tokens, fn)} and the process; None
    if it cannot be built there."""
    bin_dir = os.path.dirname(os.path.abspath(args.llama_bench))
    root = os.path.dirname(os.path.dirname(bin_dir))
    exe = os.path.join(BUILD, "llama_cpp_ref")
    build = ["cc", "-O2", os.path.join(HERE, "llama_cpp_ref.c"), "-I", os.path.join(root, "include"),
             "-I", os.path.join(root, "ggml", "include"), "-L", bin_dir, "-lllama", f"-Wl,-rpath,{bin_dir}", "-o", exe]
    if not os.path.exists(exe) and subprocess.run(build, capture_output=True).returncode:
        return None
    threads = args.threads or len(os.sched_getaffinity(0))
    proc = subprocess.Popen([exe, "bench", gguf, str(threads), str(max(args.pp, args.tg) + 8)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)

    def measure(kind: str, n: int) -> float:
        proc.stdin.write(f"{kind} {n}\n")
        proc.stdin.flush()
        line = proc.stdout.readline()
        if not line:
            raise SystemExit(f"llama_cpp_ref stopped on {gguf}")
        return float(line)

    return {"pp": (args.pp, lambda: measure("pp", args.pp)), "tg": (args.tg, lambda: measure("tg", args.tg))}, proc


def open_llama_cpp(gguf: str, args, loaded_once: bool = False) -> tuple[dict, Callable[[], None]] | None:
    """llama.cpp's pp and tg runs on gguf as {name: (tokens, fn)}, and what closes them: through
    llama-cpp-python if installed, else tools/llama_cpp_ref.c, else (unless loaded_once is asked
    for) llama-bench; None if none is there."""
    try:
        from llama_cpp import Llama
    except ImportError:
        Llama = None
    if Llama:
        threads = args.threads or len(os.sched_getaffinity(0))
        llm = Llama(model_path=gguf, n_ctx=args.pp + args.tg + 8, n_batch=args.pp, n_ubatch=args.pp,
                    n_threads=threads, n_threads_batch=threads, verbose=False)
        return llama_cpp_runs(llm, args), llm.close
    if not os.path.exists(args.llama_bench):
        return None
    built = llama_cpp_ref_runs(gguf, args)
    if built:
        runs, proc = built
        return runs, lambda: (proc.stdin.close(), proc.wait())
    return None if loaded_once else (llama_bench_runs(args.llama_bench, gguf, args), lambda: None)


def bench_pair(path: str, gguf: str | None, args) -> tuple[dict, dict | None, str, int]:
    """Rates of pyllm on `path` and, if given, llama.cpp on `gguf` (llama-cpp-python if installed,
    else tools/llama_cpp_ref.c, else the llama-bench program), interleaved: the medians, and the
    median of each repetition's ratio as "ratio pp" and "ratio tg" in llama.cpp's."""
    opened = open_llama_cpp(gguf, args) if gguf else None
    theirs, close = opened if opened else ({}, lambda: None)
    bandwidth: list[float] = []
    with Model(path, n_threads=args.threads, n_ctx=args.pp + args.tg + 8, kernels=args.kernels) as m:
        ours = model_runs(m, args.pp, args.tg)
        # one repetition: pyllm pp, llama.cpp pp, pyllm tg, llama.cpp tg, pyllm generate()
        order = {"ours pp": ours["pp"], "theirs pp": theirs.get("pp"), "ours tg": ours["tg"],
                 "theirs tg": theirs.get("tg"), "ours tg_py": ours["tg_py"]}
        order = {k: v for k, v in order.items() if v}
        for _, fn in order.values():  # warm-up
            fn()
        lists = interleaved_rate_lists(order, args.reps,
                                       (lambda: bandwidth.append(two_thread_bandwidth(membw_program(BUILD)))) if args.membw else None)
        kernels, threads = m.kernels, m.n_threads
    close()
    rates = {k: statistics.median(v) for k, v in lists.items()}
    mine = {k.split()[1]: v for k, v in rates.items() if k.startswith("ours")}
    other = {k.split()[1]: v for k, v in rates.items() if k.startswith("theirs")} or None
    if other:
        for kind in ("pp", "tg"):
            per_rep = [o / t for o, t in zip(lists[f"ours {kind}"], lists[f"theirs {kind}"])]
            other[f"ratio {kind}"] = statistics.median(per_rep)
            other[f"ratios {kind}"] = per_rep
        other["membw"] = bandwidth
    return mine, other, kernels, threads


def bench_phases(path: str, gguf: str, args) -> None:
    """Decode speed of both engines in many short runs taken in turn (--phases pairs of
    --phase-tokens tokens), membw measured between pairs: the median paired ratio, overall and,
    where the bandwidth moved by more than 30%, for the pairs with high (or low) bandwidth both
    before and after them. Needs llama.cpp loaded once (llama-cpp-python or tools/llama_cpp_ref.c),
    not llama-bench."""
    short = argparse.Namespace(**{**vars(args), "tg": args.phase_tokens, "pp": args.phase_tokens})
    opened = open_llama_cpp(gguf, short, loaded_once=True)
    if not opened:
        print(f"{os.path.basename(gguf)}: no llama.cpp library to pair with")
        return
    theirs, close = opened[0]["tg"][1], opened[1]
    with Model(path, n_threads=args.threads, n_ctx=short.tg + 8, kernels=args.kernels) as m:
        ours = model_runs(m, short.tg, short.tg)["tg"][1]
        ours(), theirs()  # warm-up
        speeds, bandwidth = take_turns(lambda: timed_rate(short.tg, ours), lambda: timed_rate(short.tg, theirs),
                                       args.phases, membw_program(BUILD))
    close()

    def row(label: str, chosen: list[tuple[float, float]]) -> str:
        return (f"| {label} | {len(chosen)} | {statistics.median(o for o, _ in chosen):.1f} | "
                f"{statistics.median(t for _, t in chosen):.1f} | **{statistics.median(o / t for o, t in chosen):.2f}x** |")

    print(f"\nDecoding in pairs ({os.path.basename(gguf)}, {short.tg} tokens per run, membw between pairs)\n")
    print("| pairs | n | pyllm tok/s | llama.cpp tok/s | paired ratio |\n|---|---|---|---|---|")
    print(row("all", speeds))
    for label, idx in phases(bandwidth):
        print(row(label, [speeds[i] for i in idx]))
    print(f"membw (2 threads, GB/s) from {min(bandwidth):.1f} to {max(bandwidth):.1f}", flush=True)


def bench_depths(path: str, gguf: str | None, depths: list[int], args) -> None:
    """Decode speed after `depth` tokens already sit in the cache: attention cost should grow linearly."""
    n = 64
    with Model(path, n_threads=args.threads, n_ctx=max(depths) + n + 8) as m:
        for depth in depths:
            ctx = prompt_tokens(depth, m.config.vocab_size)

            def tg() -> None:
                m.truncate(depth)  # keep the first `depth` tokens, drop what the last run added
                for i in range(n):
                    m.eval([ctx[i % max(depth, 1)] if depth else 1])

            m.reset()
            if depth:
                m.eval(ctx)
            rate = median_rate(n, args.reps, tg)
            theirs = ""
            if gguf:
                try:
                    from llama_cpp import Llama
                    threads = args.threads or len(os.sched_getaffinity(0))
                    llm = Llama(model_path=gguf, n_ctx=max(depths) + n + 8, n_batch=512, n_threads=threads,
                                n_threads_batch=threads, verbose=False)

                    def ltg() -> None:
                        llm.n_tokens = depth
                        for i in range(n):
                            llm.eval([ctx[i % max(depth, 1)] if depth else 1])

                    if depth:
                        llm.eval(ctx)
                    theirs = f" | {median_rate(n, args.reps, ltg):.1f}"
                    llm.close()
                except ImportError:
                    pass
            print(f"| {depth} | {rate:.1f}{theirs} |", flush=True)


def first_token_and_rss(path: str, gguf: str | None, args) -> None:
    """Load-to-first-token time and peak resident memory, each engine in a fresh process."""
    import subprocess
    ours = (f"import time;t=time.perf_counter();import pyllm;m=pyllm.Model({path!r},n_ctx=2048);"
            "g=m.generate('Once upon a time',max_tokens=1,temperature=0);next(iter(g));"
            "print(time.perf_counter()-t);g2=m.generate([1],max_tokens=128,temperature=0,"
            "logit_bias={m.tokenizer.eos_id:-1e9});g2.text();"
            f"print({PEAK_RSS})")
    theirs = (f"import time;t=time.perf_counter();from llama_cpp import Llama;"
              f"l=Llama(model_path={gguf!r},n_ctx=2048,verbose=False);"
              "l.eval(l.tokenize(b'Once upon a time',add_bos=False));l.sample(temp=0);print(time.perf_counter()-t);"
              "l.reset();[l.eval([1]) for _ in range(128)];"
              f"print({PEAK_RSS})")
    for name, code in (("pyllm", ours), ("llama.cpp", theirs if gguf else None)):
        if code is None:
            continue
        r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
        if r.returncode:
            print(f"| {name} | failed: {r.stderr.strip().splitlines()[-1:]} | |")
            continue
        first, rss = r.stdout.split()[-2:]
        print(f"| {name} | {float(first) * 1000:.0f} ms | {int(rss) / 1024:.0f} MiB |", flush=True)


# peak resident set of this process (VmHWM, in kB): unlike ru_maxrss it is not inherited across exec
PEAK_RSS = "[l.split()[1] for l in open('/proc/self/status') if l.startswith('VmHWM')][0]"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("models", nargs="*", help="weights.bin files")
    ap.add_argument("--membw", action="store_true", help="also: memory bandwidth (tools/membw.c) before the table")
    ap.add_argument("--gguf", nargs="+", default=[], help="GGUF files: pyllm runs their conversion, llama.cpp the file")
    ap.add_argument("-t", "--threads", type=int, default=None, help="threads (default: physical cores)")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--pp", type=int, default=512)
    ap.add_argument("--tg", type=int, default=128)
    ap.add_argument("--kernels", default="auto", help="auto, avx2, neon or portable")
    ap.add_argument("--depths", default="", help="also: decode speed at these cache depths, e.g. 0,512,2048")
    ap.add_argument("--startup", action="store_true", help="also: load-to-first-token time and peak memory")
    ap.add_argument("--phases", type=int, default=0, metavar="PAIRS",
                    help="also: for each --gguf, decoding in this many short runs of each engine in turn, "
                         "with membw, by bandwidth phase")
    ap.add_argument("--phase-tokens", type=int, default=64, help="tokens per run for --phases (default 64)")
    ap.add_argument("--llama-bench", default=os.path.expanduser("~/.cache/llama.cpp-ref/build/bin/llama-bench"),
                    help="llama.cpp's llama-bench, used for --gguf files when llama-cpp-python is not installed "
                         "(default: where ../shared/tools/build-llama-cpp.sh builds it)")
    args = ap.parse_args()

    runs = [(p, None) for p in args.models]
    for g in args.gguf:
        out = cache_dir() / "bench" / (os.path.basename(g) + ".bin")
        if not out.exists() or out.stat().st_mtime < os.path.getmtime(g):
            out.parent.mkdir(parents=True, exist_ok=True)
            convert(g, out, progress=False)
        runs.append((str(out), g))
    if not runs:
        runs = [(str(default_model()), None)]

    print(f"machine: {machine()}")
    if args.membw:
        print(f"memory bandwidth: {memory_bandwidth()}")
    print(f"date: {time.strftime('%Y-%m-%d')}; python {platform.python_version()}; "
          f"command: {' '.join(['python'] + sys.argv)}\n")
    print("| model | type | engine | threads | pp{0} tok/s | tg{1} tok/s | tg{1} via generate() |".format(args.pp, args.tg))
    print("|---|---|---|---|---|---|---|")
    notes: list[str] = []
    for path, gguf in runs:
        with Model(path, n_ctx=8) as probe:
            kind = weight_type(probe)
            name = os.path.basename(gguf or path)
        ours, theirs, kernels, threads = bench_pair(path, gguf, args)
        print(f"| {name} | {kind} | pyllm ({kernels}) | {threads} | {ours['pp']:.1f} | "
              f"{ours['tg']:.1f} | {ours['tg_py']:.1f} |", flush=True)
        if theirs:
            print(f"| {name} | {kind} | llama.cpp | {threads} | {theirs['pp']:.1f} | {theirs['tg']:.1f} | |")
            print(f"| {name} | {kind} | **ratio** | | **{theirs['ratio pp']:.2f}x** | "
                  f"**{theirs['ratio tg']:.2f}x** | |", flush=True)
            notes.append(f"{name}: per repetition, pp ratio {' '.join(f'{r:.2f}' for r in theirs['ratios pp'])}; "
                         f"tg ratio {' '.join(f'{r:.2f}' for r in theirs['ratios tg'])}"
                         + (f"; membw (2 threads, GB/s) {' '.join(f'{b:.1f}' for b in theirs['membw'])}"
                            if theirs["membw"] else ""))
    if notes:
        print("\n" + "\n".join(notes))
    if args.phases:
        for path, gguf in runs:
            if gguf:
                bench_phases(path, gguf, args)
    path, gguf = runs[0]
    if args.depths:
        print(f"\nDecode tokens/s by cache depth ({os.path.basename(gguf or path)})\n")
        print("| depth | pyllm | llama.cpp |" if gguf else "| depth | pyllm |")
        print("|---|---|---|" if gguf else "|---|---|")
        bench_depths(path, gguf, [int(d) for d in args.depths.split(",")], args)
    if args.startup:
        print("\nStart-up: load to first token, and peak resident memory (n_ctx 2048, 128 tokens generated)\n")
        print("| engine | load to first token | peak RSS |\n|---|---|---|")
        first_token_and_rss(path, gguf, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
