"""Query time, the library half of Serve: what a query is, how it becomes a vector, how results are re-ranked.

    queries.py   the query kinds (text, conversation, composed), their validation, and one encoder for all
                 query text (also used for personas by labelling, training and evaluation); composed and
                 joint scoring
    rerank.py    the teacher re-orders the student's top k in one listwise request, within a time budget
    ranking.py   `rank_catalog`: rank a small catalog in process (the CLI, notebooks)

Serve (serve/) wires these into HTTP deployments; the evaluation uses the same definitions.
"""

from distill.retrieval.queries import (
    ComposedQuery,
    ConversationQuery,
    TextQuery,
    Turn,
    compose,
    encode_queries,
    encode_texts,
    joint_vector,
    parse_query,
    query_text,
)
from distill.retrieval.ranking import rank_catalog
from distill.retrieval.rerank import DescribeResult, Reranker, RerankResult

__all__ = [
    "ComposedQuery", "ConversationQuery", "TextQuery", "Turn", "compose", "encode_queries", "encode_texts",
    "joint_vector", "parse_query", "query_text", "rank_catalog", "DescribeResult", "Reranker", "RerankResult",
]
