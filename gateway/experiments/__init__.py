"""Experiments on the request path: declarations (`spec`) and variant assignment (`assign`).
The analysis (metrics, always-valid verdicts) is off the request path, in collectors/experiments."""

from gateway.experiments.assign import Assigner, Assignment
from gateway.experiments.spec import METRICS, Experiment, Match, Variant, parse_experiments

__all__ = [
    "METRICS",
    "Assigner",
    "Assignment",
    "Experiment",
    "Match",
    "Variant",
    "parse_experiments",
]
