"""POST /feedback, GET /feedback, DELETE /feedback/{id}, DELETE /feedback: a tenant's relevant / not relevant
marks (feedback/marks.py), and the ``query_ref`` every search reply carries
(feedback/query_refs.py).

Every route is the caller's tenant's only: another tenant's query_ref is refused as a forged
one is (404), another tenant's mark is not listed and is 404 to DELETE, and a result the
caller may not see (another tenant's private image) is 404 as an unknown one is.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
from pydantic import BaseModel, StrictBool, StrictStr, ValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from search_gateway.errors import BadRequest, Conflict, GatewayError, NotFound, QuotaReached, storage_error
from search_gateway.feedback.marks import MAX_PAGE, BadCursor, MarkStore, TooManyMarks
from search_gateway.feedback.query_refs import MAX_LENGTH, QueryRefs, UnknownQueryRef
from search_gateway.gallery.base import GalleryError
from search_gateway.gallery.spaces import space_of
from search_gateway.search.gallery_source import GallerySource
from search_gateway.search.types import SearchOutcome
from search_gateway.tenants import tenant_of

LIST_DEFAULT = 100
_ID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
_EXAMPLE = '{"query_ref": "<the query_ref of a search reply>", "result": "<a result\'s id>", "relevant": true}'
UNKNOWN_REF = ("This query_ref is unknown: send the query_ref of one of your own searches' replies, unchanged "
               "(a gateway restarted without GATEWAY_THUMBNAIL_SECRET no longer knows earlier ones).")


class FeedbackOff(NotFound):
    code = "feedback_off"


class StaleQueryRef(Conflict):
    code = "stale_query_ref"


@dataclass(frozen=True)
class FeedbackDeps:
    refs: QueryRefs
    # None: the routes answer 404 feedback_off, with ``off`` as the sentence.
    marks: MarkStore | None
    gallery: GallerySource | None
    off: str = ""


class NewMark(BaseModel):
    query_ref: StrictStr
    result: StrictStr
    relevant: StrictBool


def feedback_deps(request: Request) -> FeedbackDeps:
    deps: FeedbackDeps = request.app.state.feedback
    return deps


def query_ref(request: Request, outcome: SearchOutcome) -> str:
    """The reply's query_ref: the caller's tenant, the query's model space and vector, sealed."""
    deps = feedback_deps(request)
    vector = outcome.query_vector
    # Without a vector (no embed reply) the token still stands for the search, and POST
    # /feedback says why it cannot be marked (no weights to keep it under).
    space = space_of(outcome.model, outcome.provenance, int(vector.size)) if vector is not None else None
    if vector is None:
        vector = np.zeros(1, dtype=np.float32)
    return deps.refs.issue(tenant_of(request.scope), outcome.model, space, vector)


def _on(request: Request) -> tuple[MarkStore, GallerySource]:
    deps = feedback_deps(request)
    if deps.marks is None or deps.gallery is None:
        raise FeedbackOff(deps.off)
    return deps.marks, deps.gallery


async def add_mark(request: Request) -> Response:
    marks, gallery = _on(request)
    tenant = tenant_of(request.scope)
    try:
        body = NewMark.model_validate_json(await request.body())
    except ValidationError:
        raise BadRequest(f"Send a JSON body such as {_EXAMPLE}: 'query_ref' and 'result' are strings, "
                         "'relevant' is true or false.") from None
    if not _ID.fullmatch(body.result):
        raise BadRequest("'result' is the 'id' of a search result (a UUID), unchanged.")
    if len(body.query_ref) > MAX_LENGTH:
        raise NotFound(UNKNOWN_REF)
    try:
        ref = feedback_deps(request).refs.open(body.query_ref, tenant)
    except UnknownQueryRef:
        raise NotFound(UNKNOWN_REF) from None
    if ref.space is None:
        raise StaleQueryRef(f"The search this query_ref is of got no weights fingerprint from the embed server for "
                            f"{ref.model!r}; marks are kept per model weights, so it cannot be marked.")
    try:
        current = await gallery.space_for(ref.model)
        if current != ref.space:
            raise StaleQueryRef(f"Model {ref.model!r} serves other weights since this search, so its query means "
                                "nothing now: search again and mark the new results.")
        if await gallery.like(ref.model, body.result, tenant) is None:
            raise NotFound(f"No result {body.result!r} that you can see for model {ref.model!r}. (A web result "
                           "is kept moments after its search; one just found may need a second.)")
        mark = await marks.put(tenant, ref.space, ref.vector, ref.digest, body.result, body.relevant)
    except TooManyMarks:
        raise QuotaReached(f"You have the most feedback marks this service keeps for one customer "
                           f"({marks.max_marks}); delete some (DELETE /feedback/{{id}}) to add others.") from None
    except GalleryError as exc:
        raise storage_error(exc) from exc
    return JSONResponse(mark.describe(), status_code=201)


async def list_marks(request: Request) -> Response:
    marks, _ = _on(request)
    raw = request.query_params.get("limit")
    if raw is None or raw == "":
        limit = LIST_DEFAULT
    elif raw.isdigit() and 1 <= int(raw) <= MAX_PAGE:
        limit = int(raw)
    else:
        raise BadRequest(f"Parameter 'limit' is a whole number from 1 to {MAX_PAGE}, not {raw[:40]!r}.")
    after = request.query_params.get("after")
    try:
        found, following = await marks.page(tenant_of(request.scope), limit, after)
    except BadCursor:
        raise BadRequest("Parameter 'after' takes the 'next' value of the previous page, unchanged "
                         "(a model's new weights end a listing begun before them: start again).") from None
    except GalleryError as exc:
        raise storage_error(exc) from exc
    return JSONResponse({"marks": [m.describe() for m in found], "next": following})


async def delete_mark(request: Request) -> Response:
    marks, _ = _on(request)
    id = request.path_params["id"]
    gone: GatewayError = NotFound(f"You have no feedback mark {id[:60]!r}.")
    if not _ID.fullmatch(id):
        raise gone
    try:
        deleted = await marks.delete(tenant_of(request.scope), id.lower())
    except GalleryError as exc:
        raise storage_error(exc) from exc
    if not deleted:
        raise gone
    return Response(status_code=204)


async def delete_all_marks(request: Request) -> Response:
    """Every mark of the caller's, in one filtered delete per model space: a customer's way to
    take back all it told the service (the marks of weights no longer served are out of reach
    of every route, this one included, and used by none)."""
    marks, _ = _on(request)
    try:
        await marks.forget_tenant(tenant_of(request.scope))
    except GalleryError as exc:
        raise storage_error(exc) from exc
    return Response(status_code=204)
