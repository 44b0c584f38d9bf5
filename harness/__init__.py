"""trainspec's harness: spec-driven end-to-end tests for ML training code.

The core (spec, plan, devices, leases, runner, logs, checks, results, report, cli) never
imports torch or transformers; only the perplexity scorer does.
"""

__version__ = "0.1.0"
