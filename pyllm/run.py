"""Run a model from the command line: complete a prompt, or chat.

    pyllm run [weights.bin] [-p PROMPT | -f FILE] [--chat] [options]     (or python -m pyllm.run)

Without a weights file it runs the default model (SmolLM2-135M-Instruct, fetched and converted
into the cache once). Completion text streams to stdout and nothing else goes there; timings go to
stderr. With no prompt it chats when stdin is a terminal and completes stdin otherwise.
Ctrl-C stops a generation (in chat, back to the prompt); a second Ctrl-C exits.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any

from .errors import ConstraintError, PyllmError, describe
from .fetch import DEFAULT_MODEL, KNOWN_MODELS, add_model_arguments, model_path, use_mmap
from .generation import DEFAULT_MAX_TOKENS
from .sampling import options as sampling_options

DESCRIPTION = __doc__.split("\n\n")[0]


def add_arguments(ap: argparse.ArgumentParser) -> None:
    """The command's arguments: model, prompt source, generation and sampling options, output."""
    add_model_arguments(ap)
    src = ap.add_mutually_exclusive_group()
    src.add_argument("-p", "--prompt", help="prompt text")
    src.add_argument("-f", "--file", help="read the prompt from a file")
    ap.add_argument("-n", "--max-tokens", type=int, default=DEFAULT_MAX_TOKENS,
                    help=f"tokens to generate (default {DEFAULT_MAX_TOKENS})")
    sampling_options.add_arguments(ap)
    ap.add_argument("-t", "--threads", type=int, default=None, help="threads (default: physical cores)")
    ap.add_argument("--ctx", type=int, default=None,
                    help="context length in tokens (default: the model's own, within its sliding window)")
    ap.add_argument("--stop", action="append", default=[], help="stop string (repeatable)")
    shape = ap.add_mutually_exclusive_group()
    shape.add_argument("--json-schema", metavar="FILE", help="hold the output to the JSON Schema in FILE")
    shape.add_argument("--grammar", metavar="FILE", help="hold the output to the grammar in FILE (Lark, or "
                                                         "llama.cpp's GBNF, e.g. its grammars/json.gbnf)")
    ap.add_argument("--chat", action="store_true", help="interactive chat with the model's template")
    ap.add_argument("--system", help="system message for --chat")
    ap.add_argument("--template", help="chat template: chatml, llama2, llama3, mistral (default: the model's)")
    ap.add_argument("--echo", action="store_true", help="print the prompt before the completion")
    ap.add_argument("-q", "--quiet", action="store_true", help="no timings or progress on stderr")


def say(args: argparse.Namespace, msg: str) -> None:
    """A status line on stderr, unless --quiet."""
    if not args.quiet:
        print(msg, file=sys.stderr, flush=True)


def stream(gen: Any) -> tuple[str, bool]:
    """Print a generation's pieces as they come; (text, interrupted)."""
    out = []
    try:
        for piece in gen:
            sys.stdout.write(piece)
            sys.stdout.flush()
            out.append(piece)
    except KeyboardInterrupt:
        gen.close()
        return "".join(out), True
    return "".join(out), False


def stats(args: argparse.Namespace, gen: Any) -> None:
    """A generation's token counts, speeds and finish reason on stderr, unless --quiet."""
    if args.quiet:
        return
    pp = gen.n_evaluated_prompt / gen.prompt_seconds if gen.prompt_seconds else 0.0
    tg = len(gen.tokens) / gen.generate_seconds if gen.generate_seconds else 0.0
    print(f"[prompt: {gen.n_prompt} tokens ({gen.n_evaluated_prompt} evaluated, {pp:.1f} tok/s) | "
          f"generated: {len(gen.tokens)} tokens ({tg:.1f} tok/s) | stop: {gen.finish_reason or 'interrupted'}]",
          file=sys.stderr, flush=True)


def complete(model: Any, args: argparse.Namespace, prompt: str, options: dict) -> int:
    """Stream the completion of one prompt; the exit status (130 when interrupted)."""
    if args.echo:
        sys.stdout.write(prompt)
    gen = model.generate(prompt, **options)
    _, interrupted = stream(gen)
    sys.stdout.write("\n")
    sys.stdout.flush()
    stats(args, gen)
    return 130 if interrupted else 0


def read_turn(interactive: bool) -> str | None:
    """The user's next message, or None at the end of input."""
    if interactive:
        return input("> ")
    sys.stderr.write("> ")
    sys.stderr.flush()
    line = sys.stdin.readline()
    return None if not line else line.rstrip("\n")


def chat(model: Any, args: argparse.Namespace, options: dict) -> int:
    """Read user turns and stream the model's replies until the end of input."""
    interactive = sys.stdin.isatty()
    messages = [{"role": "system", "content": args.system}] if args.system else []
    if interactive:
        say(args, "Chatting with the model: Ctrl-C stops a reply, Ctrl-C at the prompt (or Ctrl-D) quits.")
    while True:
        try:
            text = read_turn(interactive)
        except (EOFError, KeyboardInterrupt):
            print(file=sys.stderr)
            return 0
        if text is None:
            return 0
        if not text.strip():
            continue
        messages.append({"role": "user", "content": text})
        gen = model.chat(messages, stream=True, template=args.template, **options)
        reply, _ = stream(gen)
        sys.stdout.write("\n")
        sys.stdout.flush()
        stats(args, gen)
        messages.append({"role": "assistant", "content": reply})


def constraint_options(args: argparse.Namespace) -> dict:
    """The json_schema= or grammar= option from --json-schema / --grammar FILE (read now, so that a
    missing or malformed file is reported before the model loads)."""
    if args.json_schema:
        with open(args.json_schema, encoding="utf-8") as f:
            text = f.read()
        try:
            return {"json_schema": json.loads(text)}
        except ValueError as exc:
            raise ConstraintError(f"{args.json_schema}: not valid JSON: {exc}") from None
    if args.grammar:
        with open(args.grammar, encoding="utf-8") as f:
            return {"grammar": f.read()}
    return {}


def run(args: argparse.Namespace) -> int:
    """The command, on parsed arguments; returns the exit status."""
    from .model import Model

    try:
        path = args.model
        if path is None or (not os.path.exists(path) and path in KNOWN_MODELS):
            path = model_path(path or DEFAULT_MODEL, quiet=args.quiet)
        elif not os.path.exists(path):
            raise PyllmError(f"{path}: no such file")
        prompt = args.prompt
        if args.file:
            with open(args.file, encoding="utf-8") as f:
                prompt = f.read()
        shape = constraint_options(args)  # a missing or malformed file fails before the model loads
        chat_mode = args.chat or (prompt is None and sys.stdin.isatty())
        if prompt is None and not chat_mode:
            prompt = sys.stdin.read()
        if not chat_mode and not prompt:
            raise PyllmError("empty prompt: give -p TEXT, -f FILE, text on stdin, or --chat")
        t0 = time.perf_counter()
        model = Model(path, n_threads=args.threads, n_ctx=args.ctx, use_mmap=use_mmap(args))
        say(args, f"[loaded {os.path.basename(path)} in {(time.perf_counter() - t0) * 1000:.0f} ms: "
                  f"{model.config.n_layers} layers, {model.n_threads} threads, {model.kernels} kernels]")
        options = dict(max_tokens=args.max_tokens, stop=args.stop, **sampling_options.from_arguments(args),
                       **shape)
        with model:
            return chat(model, args, options) if chat_mode else complete(model, args, prompt, options)
    except KeyboardInterrupt:
        print(file=sys.stderr)
        return 130
    except (PyllmError, ValueError, OSError) as exc:
        print(f"pyllm run: {describe(exc)}", file=sys.stderr)
        return 1


def main(argv: list[str] | None = None) -> int:
    """`python -m pyllm.run`: the same command as `pyllm run`."""
    ap = argparse.ArgumentParser(prog="python -m pyllm.run", description=DESCRIPTION)
    add_arguments(ap)
    return run(ap.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
