"""One search, stage by stage: candidates -> downloads -> embedding in batches -> ranking
-> patch attention, run by ``pipeline.SearchPipeline``; the typed values passed between
the stages are in ``types``. Also the embedding cache, the captioner and the attention
pictures. Never imports collections/ (nor collections/ this room): what a search needs of
the private collections is a Protocol in ``gallery_source``, filled in by wiring.py and app.py.

Nothing is imported here, so that importing one module does not pull in the stages.
"""
