"""Stored feedback marks (issue 22, item 2): a tenant's "relevant / not relevant" on a
result of one of its searches, kept in the gallery store, listed, deleted, and read by
the search (search/feedback_boost.py, through the Protocol it defines) to nudge later
results. This room imports gallery/ only.
"""
