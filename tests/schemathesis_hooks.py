"""Schemathesis hooks for tests/test_server_contract.py (loaded through SCHEMATHESIS_HOOKS): two failures that
are not contract violations are dropped, each matched narrowly; every other failure still fails the run.

1. vLLM's /score takes one query and N documents, or N queries and N documents (pairs), and refuses N
   queries for M documents (N > 1, M != N) with a 422, as vLLM does. JSON Schema cannot compare the lengths
   of two arrays, so such a body is schema-valid: dropped is ST202 on /score for a body whose lengths break
   the rule, with the server's 422 saying so.
2. A list over `maxItems` (the served --max-inputs) is refused with 413 and `limit: max_inputs_per_request`,
   the server's status for every limit (docs/server.md). schemathesis's default list of rejection statuses
   for schema-invalid bodies has no 413, so it reads that refusal as an acceptance: dropped is ST201 answered
   with 413 naming a limit.
"""

from __future__ import annotations

import re
from typing import Any

import schemathesis

SCORE_PATHS = ("/score", "/v1/score")
SCORE_PAIRS = (("text_1", "text_2"), ("queries", "documents"), ("queries", "items"), ("data_1", "data_2"))
PAIRS_REFUSAL = re.compile(r"^\d+ queries for \d+ documents: give one query, or one per document")


def _count(value: Any) -> int:
    return 1 if isinstance(value, str) else len(value)


def breaks_the_pairs_rule(body: Any) -> bool:
    """Whether a /score body gives N > 1 queries for M != N documents (in the one pair of fields it gives)."""
    if not isinstance(body, dict):
        return False
    given = [(body[a], body[b]) for a, b in SCORE_PAIRS if body.get(a) is not None and body.get(b) is not None]
    if len(given) != 1:
        return False
    queries, documents = map(_count, given[0])
    return queries not in (1, documents)


def is_limit_refusal(response) -> bool:
    """A 413 whose body names the limit that was hit (the server's refusal of a list over maxItems)."""
    return response.status_code == 413 and bool(response.json().get("limit"))


@schemathesis.hook
def filter_failure(context, failure, case, response) -> bool:
    """False (drop) only for the two cases of the module docstring; True (keep) for every other failure."""
    if failure.code == "ST201":
        return not is_limit_refusal(response)
    if failure.code != "ST202" or case.path not in SCORE_PATHS or response.status_code != 422:
        return True
    detail = response.json().get("detail", "")
    return not (breaks_the_pairs_rule(case.body) and PAIRS_REFUSAL.match(detail))
