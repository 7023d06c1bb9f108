#!/usr/bin/env python3
"""Serving benchmark: `pyllm serve` against llama.cpp's `llama-server` on the same GGUF, in one run.

    python tools/bench_serve.py --gguf model.gguf --llama-server PATH/llama-server [--model weights.bin]

For each server in turn (started here on a free loopback port with --parallel/-np set to the most
clients, 2 threads, and stopped afterwards) and each number of concurrent clients (1, 2, 4, 8, 16
by default), every client sends streaming /v1/completions requests with its own prompt, greedy, and
max_tokens generated tokens (end of text banned through logit_bias, so every request generates all
of them). Reported per server and client count:
  - aggregate generated tokens per second (all clients' tokens over the wall time of the round);
  - time to first token, p50 and p99 (request sent -> first chunk with text);
  - time between tokens, p50 and p99 (gaps between a stream's successive chunks).
pyllm's single-stream speed (`Model.generate`, in this process, the same weights and the one-client
round's prompts) is measured too, for the 1-client comparison: in --pairs alternations with a
one-client round through pyllm's server, which stays up (idle) meanwhile. The output is a markdown table for docs/performance.md.
"""
from __future__ import annotations

import argparse
import http.client
import json
import os
import socket
import subprocess
import sys
import threading
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

TOPICS = ["the history of the printing press", "how bees make honey", "a walk along a winter beach",
          "the rules of chess", "why the sky is blue", "a recipe for bread", "the life of a lighthouse keeper",
          "how volcanoes form", "a letter to a friend abroad", "the first day at a new school",
          "the workings of a steam engine", "a storm at sea", "the migration of birds", "a busy market square",
          "the invention of the telephone", "a quiet library at night"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def served_model(port: int) -> str:
    """The name a server answers to (its /v1/models' first entry)."""
    import httpx
    return httpx.get(f"http://127.0.0.1:{port}/v1/models", timeout=10).json()["data"][0]["id"]


def wait_ready(port: int, proc: subprocess.Popen, timeout: float = 120.0) -> None:
    import httpx
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited with {proc.returncode}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise RuntimeError("the server did not become ready")


def one_request(port: int, prompt: str, max_tokens: int, bias: dict, model: str) -> tuple[float, list[float], int]:
    """(time to first token, gaps between chunks, chunks) of one streaming completion."""
    body = json.dumps({"prompt": prompt, "max_tokens": max_tokens, "temperature": 0, "stream": True,
                       "logit_bias": bias, "model": model})
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    try:
        t0 = time.perf_counter()
        conn.request("POST", "/v1/completions", body, {"Content-Type": "application/json"})
        resp = conn.getresponse()
        if resp.status != 200:
            raise RuntimeError(f"HTTP {resp.status}: {resp.read()[:200]!r}")
        first, times = None, []
        for line in resp:
            if not line.startswith(b"data: {"):
                continue
            choices = json.loads(line[6:]).get("choices") or []
            if not choices or not choices[0].get("text"):
                continue
            now = time.perf_counter()
            if first is None:
                first = now - t0
            times.append(now)
    finally:
        conn.close()
    return first or 0.0, list(np.diff(times)), len(times)


def round_of(port: int, clients: int, requests_each: int, max_tokens: int, bias: dict) -> dict:
    """Each of `clients` threads sends requests_each streaming requests in turn. The load generator
    is the standard library's blocking http.client, one thread per client: on the two cores the
    servers run on, its cost per token is what it takes from them (0.3 ms against httpx's 0.5 ms)."""
    model = served_model(port)
    results, errors = [], []

    def client_loop(i: int) -> None:
        try:
            for r in range(requests_each):
                prompt = f"Write a short essay about {TOPICS[(i + r * clients) % len(TOPICS)]}."
                results.append(one_request(port, prompt, max_tokens, bias, model))
        except Exception as exc:  # reported after the round
            errors.append(exc)

    threads = [threading.Thread(target=client_loop, args=(i,)) for i in range(clients)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    if errors:
        raise errors[0]
    ttft = [r[0] for r in results]
    gaps = [g for r in results for g in r[1]]
    return {"clients": clients, "tok_s": clients * requests_each * max_tokens / wall,
            "ttft_p50": float(np.percentile(ttft, 50)), "ttft_p99": float(np.percentile(ttft, 99)),
            "tbt_p50": float(np.percentile(gaps, 50)) if gaps else 0.0,
            "tbt_p99": float(np.percentile(gaps, 99)) if gaps else 0.0,
            "chunks": sum(r[2] for r in results)}


def serve(cmd: list[str], port: int) -> subprocess.Popen:
    """Start a server, its output to a log file (llama-server with its output on /dev/null
    streamed a token every few seconds here), and wait until it answers /health."""
    import tempfile
    log = tempfile.NamedTemporaryFile(prefix="bench-serve-", suffix=".log", delete=False)
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_ready(port, proc)
    except BaseException:
        proc.kill()
        raise
    return proc


def stop(proc: subprocess.Popen) -> None:
    """Stop a server: SIGTERM, then SIGKILL if it has not exited within 30 s."""
    proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()


def single_stream(path: str, requests: int, max_tokens: int, threads: int) -> float:
    """Model.generate's tokens/s over the one-client round's requests (the same prompts, greedy,
    max_tokens each, end of text banned), measured as that round is: all tokens over the wall
    time, prompts included."""
    from pyllm import Model
    with Model(path, n_threads=threads) as m:
        eos = m.tokenizer.eos_id
        bias = {eos: float("-inf")} if eos is not None else None
        m.generate("Write a short essay about the sea.", max_tokens=8, temperature=0, logit_bias=bias).text()
        tokens, t0 = 0, time.perf_counter()
        for r in range(requests):
            m.reset()
            g = m.generate(f"Write a short essay about {TOPICS[r % len(TOPICS)]}.", max_tokens=max_tokens,
                           temperature=0, logit_bias=bias)
            g.text()
            tokens += len(g.tokens)
        return tokens / (time.perf_counter() - t0)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--gguf", required=True, help="the GGUF both servers run (pyllm converts it)")
    ap.add_argument("--model", help="pyllm's weights.bin of that GGUF (default: converted into the cache)")
    ap.add_argument("--llama-server", help="llama-server binary (default: ~/.cache/llama.cpp-ref/build/bin/llama-server)")
    ap.add_argument("--clients", default="1,2,4,8,16")
    ap.add_argument("--requests", type=int, default=2, help="requests per client per round")
    ap.add_argument("-n", "--max-tokens", type=int, default=128)
    ap.add_argument("-t", "--threads", type=int, default=2)
    ap.add_argument("--only", choices=["pyllm", "llama.cpp"], help="run one server only")
    ap.add_argument("--pairs", type=int, default=5,
                    help="alternations of Model.generate and one client through pyllm's server, for their ratio")
    args = ap.parse_args()
    clients = [int(c) for c in args.clients.split(",")]
    parallel = max(clients)
    llama_server = args.llama_server or os.path.expanduser("~/.cache/llama.cpp-ref/build/bin/llama-server")
    path = args.model
    if path is None:
        from pyllm.convert import convert
        from pyllm.fetch import cache_dir
        path = os.path.join(cache_dir(), os.path.basename(args.gguf).rsplit(".", 1)[0] + ".serve.bin")
        if not os.path.exists(path):
            convert(args.gguf, path)
    from pyllm import Model
    with Model(path, n_threads=1, n_ctx=16) as m:
        eos = m.tokenizer.eos_id
    bias = {str(eos): -100} if eos is not None else {}

    servers = []
    if args.only != "llama.cpp":
        servers.append(("pyllm", lambda port: [sys.executable, "-m", "pyllm", "serve", path, "--port", str(port),
                                               "--parallel", str(parallel), "-t", str(args.threads),
                                               "--ctx", "1024", "--max-queued", "1024"]))
    if args.only != "pyllm":
        servers.append(("llama.cpp", lambda port: [llama_server, "-m", args.gguf, "--port", str(port),
                                                   "-np", str(parallel), "-t", str(args.threads),
                                                   "-c", str(1024 * parallel)]))
    rows, pairs = [], []
    for name, cmd in servers:
        port = free_port()
        proc = serve(cmd(port), port)
        try:
            for attempt in range(10):  # warm up (llama-server may drop the first connections after /health is ok)
                try:
                    round_of(port, 1, 1, 8, bias)
                    break
                except Exception:
                    time.sleep(1)
            for c in clients:
                r = round_of(port, c, args.requests, args.max_tokens, bias)
                r["server"] = name
                rows.append(r)
                print(f"{name:10s} clients {c:2d}: {r['tok_s']:7.1f} tok/s  ttft p50 {r['ttft_p50'] * 1e3:6.0f} ms "
                      f"p99 {r['ttft_p99'] * 1e3:6.0f} ms  tbt p50 {r['tbt_p50'] * 1e3:5.1f} ms "
                      f"p99 {r['tbt_p99'] * 1e3:5.1f} ms", file=sys.stderr, flush=True)
            # one stream in this process and one client through the (idle) server in turn, so
            # that both see the same machine: its speed drifts by 10% within minutes here
            for k in range(args.pairs if name == "pyllm" else 0):
                alone = single_stream(path, args.requests, args.max_tokens, args.threads)
                served = round_of(port, 1, args.requests, args.max_tokens, bias)["tok_s"]
                pairs.append((alone, served))
                print(f"pair {k + 1}: Model.generate {alone:.1f} tok/s, one client {served:.1f} tok/s "
                      f"({served / alone:.1%})", file=sys.stderr, flush=True)
        finally:
            stop(proc)

    print("| server | clients | aggregate tok/s | TTFT p50 / p99 (ms) | time between tokens p50 / p99 (ms) |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['server']} | {r['clients']} | {r['tok_s']:.1f} | {r['ttft_p50'] * 1e3:.0f} / {r['ttft_p99'] * 1e3:.0f} "
              f"| {r['tbt_p50'] * 1e3:.1f} / {r['tbt_p99'] * 1e3:.1f} |")
    if pairs:
        alone, served = np.mean(pairs, axis=0)
        ratios = [b / a for a, b in pairs]
        print(f"\npyllm, {len(pairs)} alternating pairs: Model.generate {alone:.1f} tok/s, one client through the "
              f"server {served:.1f} tok/s; ratio: median {np.median(ratios):.1%} of the pairs' "
              f"({min(ratios):.1%} to {max(ratios):.1%})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
