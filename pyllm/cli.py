"""The `pyllm` command: one entry point, a subcommand per job.

    pyllm run [weights.bin] [-p PROMPT | --chat] ...   complete a prompt or chat (default model if none)
    pyllm convert SOURCE weights.bin [--type ...]       GGUF / Hugging Face / llama2.c -> weights.bin
    pyllm perplexity weights.bin text.txt [--ctx 512]   perplexity as llama.cpp computes it
    pyllm fetch [MODEL] [--type ...]                    fetch and convert a known model (default SmolLM2)
    pyllm bench [weights.bin ...]                       prompt and generation speed
    pyllm serve [MODEL] [--port 8080] ...               an OpenAI-compatible HTTP server (pyllm[server])

`python -m pyllm` is the same command; `pyllm COMMAND --help` lists a command's options.
"""
from __future__ import annotations

import argparse
import sys

from . import __version__, bench, fetch, perplexity, run
from .convert import cli as convert_cli
from .errors import PyllmError, describe
from .server import command as serve

COMMANDS = {  # name -> the module that defines its DESCRIPTION, add_arguments(parser) and run(args)
    "run": run,
    "convert": convert_cli,
    "perplexity": perplexity,
    "fetch": fetch,
    "bench": bench,
    "serve": serve,
}


def parser() -> argparse.ArgumentParser:
    """The command line: one subparser per command."""
    ap = argparse.ArgumentParser(prog="pyllm", description=__doc__.split("\n\n")[0],
                                 epilog=__doc__.split("\n\n", 1)[1],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--version", action="version", version=f"pyllm {__version__}")
    sub = ap.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, module in COMMANDS.items():
        module.add_arguments(sub.add_parser(name, help=module.DESCRIPTION, description=module.DESCRIPTION))
    return ap


def main(argv: list[str] | None = None) -> int:
    """Parse the command line and run the command; returns the exit status. An error no command
    reported itself (a PyllmError or an OSError) is one line on stderr, never a traceback."""
    args = parser().parse_args(argv)
    try:
        return COMMANDS[args.command].run(args)
    except (PyllmError, OSError) as exc:
        print(f"pyllm: error: {describe(exc)}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
