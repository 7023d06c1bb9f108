"""Sampling: the options (declared once, options.py), the steps as processors (processors.py), and
the Sampler that chains them (sampler.py)."""
from .options import OPTION_NAMES, SamplingParams
from .processors import (CandidateFilter, LogitsProcessor, apply_logit_bias, apply_penalties, draw, min_p, softmax,
                         top_k, top_p)
from .sampler import Sampler

__all__ = ["Sampler", "SamplingParams", "OPTION_NAMES", "LogitsProcessor", "CandidateFilter", "apply_logit_bias",
           "apply_penalties", "draw", "min_p", "softmax", "top_k", "top_p"]
