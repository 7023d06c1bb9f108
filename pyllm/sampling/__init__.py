"""Sampling: the options (declared once, options.py), the steps as processors (processors.py), the
Sampler that chains them (sampler.py), top-p/min-p/draw over a sorted head when top-k is off
(nucleus.py), and the model's log-probabilities for `logprobs` (logprobs.py)."""
from .logprobs import TokenLogprobs, log_normalizer, token_logprobs, top_logprobs
from .nucleus import sample_untruncated
from .options import OPTION_NAMES, SamplingParams
from .processors import (CandidateFilter, LogitsProcessor, apply_logit_bias, apply_penalties, draw, draw_at, min_p,
                         softmax, top_k, top_p)
from .sampler import Sampler

__all__ = ["Sampler", "SamplingParams", "OPTION_NAMES", "LogitsProcessor", "CandidateFilter", "apply_logit_bias",
           "apply_penalties", "draw", "draw_at", "min_p", "softmax", "top_k", "top_p", "sample_untruncated",
           "TokenLogprobs", "log_normalizer", "token_logprobs", "top_logprobs"]
