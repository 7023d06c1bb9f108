#!/usr/bin/env python3
"""Soak test of `pyllm serve` (`make soak`): many streaming clients for a bounded time, then checks.

    python tools/soak.py [--minutes 10] [--clients 16] [--model smollm2]

Starts `pyllm serve` on a free loopback port (the only address it talks to) and runs --clients
concurrent clients for --minutes. Each client loops: a completion or a chat request with a random
prompt length (a few words to several hundred tokens), random max_tokens, streamed; about one in
five disconnects after a few chunks. Every minute the server's resident memory is sampled.
Afterwards (all clients stopped, the server idle) it checks and prints:
  - no request failed (HTTP errors, broken streams other than the deliberate disconnects);
  - every KV block came back (/metrics: pyllm_kv_blocks_used is 0, no request running or queued);
  - memory is flat: the resident set after the run is within 10% (and 64 MiB) of the one after the
    first minute (warm-up: caches, allocator pools).
Exit status 0 only if all hold. The figures go to docs/performance.md by hand.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from bench_serve import free_port, served_model, stop, wait_ready  # noqa: E402

WORDS = ("the river runs past an old mill where children play and the baker sells warm bread to "
         "travellers who stop on their way to the city by the sea").split()


def rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def metric(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    raise KeyError(name)


async def client(i: int, port: int, deadline: float, stats: dict) -> None:
    import httpx
    rng = random.Random(i)
    model = served_model(port)
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=900) as http:
        while time.time() < deadline:
            words = " ".join(rng.choice(WORDS) for _ in range(rng.choice([3, 20, 80, 300])))
            chat = rng.random() < 0.5
            body = {"model": model, "max_tokens": rng.choice([8, 32, 96]), "stream": True,
                    "temperature": rng.choice([0, 0.8]), "seed": rng.randrange(1 << 30)}
            if chat:
                body["messages"] = [{"role": "user", "content": words}]
            else:
                body["prompt"] = words
            leave_after = rng.choice([2, 5]) if rng.random() < 0.2 else None
            path = "/v1/chat/completions" if chat else "/v1/completions"
            try:
                async with http.stream("POST", path, json=body) as resp:
                    if resp.status_code != 200:
                        stats["errors"].append(f"{resp.status_code}: {(await resp.aread())[:200]!r}")
                        await asyncio.sleep(1)
                        continue
                    chunks, done = 0, False
                    async for line in resp.aiter_lines():
                        if line == "data: [DONE]":
                            done = True
                            break
                        if line.startswith("data: "):
                            json.loads(line[6:])
                            chunks += 1
                            if leave_after is not None and chunks >= leave_after:
                                break
                    if leave_after is not None and not done:
                        stats["disconnects"] += 1
                    elif not done:
                        stats["errors"].append("stream ended without [DONE]")
                    else:
                        stats["requests"] += 1
            except (httpx.HTTPError, json.JSONDecodeError) as exc:
                stats["errors"].append(repr(exc))
                await asyncio.sleep(1)


async def soak(port: int, pid: int, minutes: float, clients: int) -> dict:
    stats = {"requests": 0, "disconnects": 0, "errors": [], "rss": []}
    deadline = time.time() + minutes * 60
    tasks = [asyncio.create_task(client(i, port, deadline, stats)) for i in range(clients)]
    while time.time() < deadline:
        await asyncio.sleep(min(60, max(1, deadline - time.time())))
        stats["rss"].append(rss_bytes(pid))
        print(f"  {len(stats['rss'])} min: {stats['requests']} requests, {stats['disconnects']} disconnects, "
              f"{len(stats['errors'])} errors, RSS {stats['rss'][-1] / 2**20:.0f} MiB", file=sys.stderr, flush=True)
    await asyncio.gather(*tasks)
    return stats


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--minutes", type=float, default=10)
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--model", default="smollm2")
    ap.add_argument("-t", "--threads", type=int, default=2)
    args = ap.parse_args()
    import httpx
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "pyllm", "serve", args.model, "--port", str(port),
                             "--parallel", "8", "-t", str(args.threads), "--ctx", "2048", "--max-queued", "64"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_ready(port, proc, timeout=300)
        stats = asyncio.run(soak(port, proc.pid, args.minutes, args.clients))
        time.sleep(2)  # disconnected requests are cancelled at the engine's next step
        text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
        used, running, queued = (metric(text, n) for n in
                                 ("pyllm_kv_blocks_used", "pyllm_requests_running", "pyllm_requests_queued"))
        rss = stats["rss"] + [rss_bytes(proc.pid)]
    finally:
        stop(proc)
    warm, end = rss[0], rss[-1]
    flat = end <= warm * 1.10 or end - warm <= 64 * 2**20
    print(f"requests {stats['requests']}, disconnects {stats['disconnects']}, errors {len(stats['errors'])}; "
          f"after: KV blocks used {used:.0f}, running {running:.0f}, queued {queued:.0f}; "
          f"RSS after 1 min {warm / 2**20:.0f} MiB, at the end {end / 2**20:.0f} MiB "
          f"(per minute: {', '.join(f'{r / 2**20:.0f}' for r in rss)})")
    for e in stats["errors"][:10]:
        print("  error:", e)
    ok = not stats["errors"] and used == 0 and running == 0 and queued == 0 and flat and stats["requests"] > 0
    print("soak: PASS" if ok else "soak: FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
