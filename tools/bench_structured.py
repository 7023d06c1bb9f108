"""Decode speed with a JSON Schema constraint against unconstrained decode, and the constraint's costs.

    python tools/bench_structured.py [--model weights.bin] [--threads 2] [--tokens 128] [--rounds 5]

Runs A (unconstrained) and B (json_schema) alternately, `rounds` times each, on the same prompt at
temperature 0, so that a shared or loaded machine slows both alike; prints each run and the medians.
The schema asks for a long list, so both runs generate `tokens` tokens. Then it replays the
constrained output and times the full mask (computing llguidance's bitmask and applying it to the
logits) at every step, which the sampler needs only when the drawn token does not fit.
"""
from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

import pyllm
from pyllm.generation import stop_tokens
from pyllm.structured import Constraint, spec_from_options

SCHEMA = {"type": "object", "properties": {"products": {"type": "array", "minItems": 40, "items": {
    "type": "object", "properties": {"name": {"type": "string", "maxLength": 24}, "price": {"type": "number"},
                                     "in_stock": {"type": "boolean"}},
    "required": ["name", "price", "in_stock"], "additionalProperties": False}}},
    "required": ["products"], "additionalProperties": False}
PROMPT = "List the products of a small grocery shop as JSON, with prices."


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=None, help="weights.bin (default: the default model, SmolLM2 Q4_1)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    path = args.model or pyllm.fetch.default_model(quiet=True)
    with pyllm.Model(path, n_threads=args.threads, n_ctx=1024) as model:
        prompt = model.chat_prompt([{"role": "user", "content": PROMPT}])
        speeds: dict[str, list[float]] = {"unconstrained": [], "json_schema": []}
        costs, gen = [], None
        for r in range(args.rounds):
            for name, options in (("unconstrained", {}), ("json_schema", {"json_schema": SCHEMA})):
                model.reset()  # each run reads the prompt afresh
                g = model.generate(prompt, temperature=0, max_tokens=args.tokens, **options)
                g.text()
                tps = len(g.tokens) / g.generate_seconds
                speeds[name].append(tps)
                line = f"round {r} {name:14s} {len(g.tokens)} tokens {tps:7.1f} tok/s ({g.finish_reason})"
                if options:
                    st = g.constraint.stats
                    own = (st.check_seconds + st.mask_seconds + st.forced_seconds) / len(g.tokens)
                    costs.append(own)
                    line += (f"  sampled {st.sampled}, full masks {st.masked} ({st.mask_rate:.1%}), forced "
                             f"{st.forced}; constraint {own * 1e6:.0f} us/token")
                    gen = g
                print(line, flush=True)
        a, b = statistics.median(speeds["unconstrained"]), statistics.median(speeds["json_schema"])
        print(f"median: unconstrained {a:.1f} tok/s, json_schema {b:.1f} tok/s: {b / a:.1%}; "
              f"constraint's own time {statistics.median(costs) * 1e6:.0f} us/token")

        # the full mask at every step of the constrained output
        assert gen is not None
        c = Constraint(spec_from_options(json_schema=SCHEMA), model.tokenizer, model.config.vocab_size,
                       sorted(stop_tokens(model)))
        logits = np.random.default_rng(0).standard_normal(model.config.vocab_size).astype(np.float32)
        times, i = [], 0
        while i < len(gen.tokens):
            t0 = time.perf_counter()
            c.mask(logits.copy())
            times.append(time.perf_counter() - t0)
            c.accept(gen.tokens[i])
            i += 1
            i += len(c.forced(len(gen.tokens) - i))
        print(f"full mask (compute + apply): median {statistics.median(times) * 1e6:.0f} us, mean "
              f"{statistics.mean(times) * 1e6:.0f} us, max {max(times) * 1e6:.0f} us over {len(times)} steps")


if __name__ == "__main__":
    main()
