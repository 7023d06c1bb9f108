"""Structured output: generation held to a JSON Schema, a regex, a grammar (Lark or llama.cpp's GBNF)
or a fixed list of choices.

spec.py turns what the caller passes into one grammar and refuses what cannot be supported before
anything is generated; constraint.py follows a generation through that grammar token by token
(llguidance's Earley parser over a trie of the vocabulary) and gives the sampler its verdict on a
sampled token, the mask of every allowed token when the sampled one is refused, and the tokens the
grammar forces.
"""
from .constraint import Constraint, ConstraintStats, vocabulary
from .spec import CONSTRAINT_OPTIONS, ConstraintSpec, spec_from_options

__all__ = ["Constraint", "ConstraintStats", "ConstraintSpec", "CONSTRAINT_OPTIONS", "spec_from_options", "vocabulary"]
