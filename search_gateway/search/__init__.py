"""One search, stage by stage: candidates -> downloads -> embedding in batches -> ranking
-> patch attention, run by ``pipeline.SearchPipeline``; the typed values passed between
the stages are in ``types``.

Nothing is imported here, so that the backend clients can import ``search.types``
without pulling in the stages that use those clients.
"""
