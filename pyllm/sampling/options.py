"""The sampling options, declared once: their names, defaults, checks and command-line flags.

`generate`, the command line and any later front end read them from here; nothing constructs
them positionally. The defaults follow llama.cpp.
"""
from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, field, fields
from typing import Any, Mapping


def _option(default: Any, flag: str | None, help: str, kind: type | None = None) -> Any:
    """A field with its command-line flag (None: not on the command line) and help text."""
    return field(default=default, metadata={"flag": flag, "help": help, "kind": kind})


@dataclass(frozen=True, kw_only=True)
class SamplingParams:
    """Everything that decides the next token."""

    temperature: float = _option(0.8, "--temp", "temperature; 0 = greedy", float)
    top_k: int = _option(40, "--top-k", "keep the k most likely tokens; 0 = off", int)
    top_p: float = _option(0.95, "--top-p", "keep the most likely tokens up to this probability; 1 = off", float)
    min_p: float = _option(0.05, "--min-p", "drop tokens less likely than this times the top one; 0 = off", float)
    repeat_penalty: float = _option(1.0, "--repeat-penalty", "divide the logits of recent tokens; 1 = off", float)
    repeat_last_n: int = _option(64, "--repeat-last-n", "how many recent tokens the penalties look at", int)
    frequency_penalty: float = _option(0.0, "--frequency-penalty", "subtract count x this from recent tokens", float)
    presence_penalty: float = _option(0.0, "--presence-penalty", "subtract this from recent tokens", float)
    seed: int | None = _option(None, "--seed", "random seed (default: random)", int)
    logit_bias: Mapping[int, float] | None = _option(None, None, "token id -> bias added to its logit (-inf bans)")

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> "SamplingParams":
        """Parameters from keyword options; ValueError naming any that is not a sampling option."""
        unknown = sorted(set(options) - set(OPTION_NAMES))
        if unknown:
            raise ValueError(f"unknown option{'s' if len(unknown) > 1 else ''} {', '.join(unknown)}; "
                             f"the sampling options are {', '.join(OPTION_NAMES)}")
        return cls(**options)

    def check(self, vocab_size: int) -> None:
        """ValueError naming the first parameter of the wrong kind or out of range."""
        for f in fields(self):
            value, kind = getattr(self, f.name), f.metadata["kind"]
            if kind is None or (value is None and f.default is None):
                continue
            allowed = numbers.Real if kind is float else numbers.Integral
            if isinstance(value, bool) or not isinstance(value, allowed):
                raise ValueError(f"{f.name} must be {'a number' if kind is float else 'an integer'}, got {value!r}")
        if self.logit_bias is not None and not isinstance(self.logit_bias, Mapping):
            raise ValueError(f"logit_bias must map token ids to biases, got {self.logit_bias!r}")
        for token, bias in (self.logit_bias or {}).items():
            if isinstance(token, bool) or not isinstance(token, numbers.Integral) or isinstance(bias, bool) or \
                    not isinstance(bias, numbers.Real):
                raise ValueError(f"logit_bias must map integer token ids to numbers, got {token!r}: {bias!r}")
        if not self.temperature >= 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if not 0 <= self.min_p <= 1:
            raise ValueError(f"min_p must be in [0, 1], got {self.min_p}")
        if self.top_k < 0:
            raise ValueError(f"top_k must be >= 0 (0 = off), got {self.top_k}")
        if not 0 < self.repeat_penalty < math.inf:
            raise ValueError(f"repeat_penalty must be > 0 and finite, got {self.repeat_penalty}")
        for name in ("frequency_penalty", "presence_penalty"):
            if not math.isfinite(getattr(self, name)):
                raise ValueError(f"{name} must be finite, got {getattr(self, name)}")
        if self.seed is not None and self.seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {self.seed}")
        if self.repeat_last_n < 0:
            raise ValueError(f"repeat_last_n must be >= 0, got {self.repeat_last_n}")
        for token, bias in (self.logit_bias or {}).items():
            if not 0 <= int(token) < vocab_size:
                raise ValueError(f"logit_bias token {token} is outside the vocabulary")
            if not (math.isfinite(bias) or bias == -math.inf):
                raise ValueError(f"logit_bias of token {token} must be finite or -inf (a ban), got {bias}")


OPTION_NAMES: tuple[str, ...] = tuple(f.name for f in fields(SamplingParams))


def add_arguments(parser: Any) -> None:
    """Add every sampling option that has a flag to an argparse parser (dest = the option's name)."""
    for f in fields(SamplingParams):
        if f.metadata["flag"]:
            default = "random" if f.default is None else f.default
            parser.add_argument(f.metadata["flag"], dest=f.name, type=f.metadata["kind"], default=f.default,
                                help=f"{f.metadata['help']} (default {default})")


def from_arguments(args: Any) -> dict[str, Any]:
    """The sampling options an argparse namespace holds (those add_arguments added)."""
    return {f.name: getattr(args, f.name) for f in fields(SamplingParams) if f.metadata["flag"]}
