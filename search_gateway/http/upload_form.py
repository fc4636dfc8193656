"""An upload's multipart form read within limits: its inputs (files and URLs), tags and
models asked, and a 413 or 400 that names the limit passed. The Starlette side of an
upload; what is done with the inputs is collections/uploads.py's ``Uploader``.
"""

from __future__ import annotations

from python_multipart.multipart import DEFAULT_MAX_HEADER_COUNT, DEFAULT_MAX_HEADER_SIZE
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.requests import Request

from search_gateway.collections.uploads import Input
from search_gateway.config import GatewaySettings
from search_gateway.errors import BadRequest, GatewayError, UploadTooLarge
from search_gateway.http.filenames import MAX_NAME, clean_name

MAX_TAGS = 16
# Text fields (url, tags, embedding_model) allowed beyond GATEWAY_COLLECTION_MAX_FILES.
TEXT_FIELDS = 32


def _parse_failure(exc: BaseException) -> str:
    """The multipart parser's own words under Starlette's generic "Invalid multipart data."."""
    deeper = exc.__cause__ or exc.__context__
    while deeper is not None:
        exc, deeper = deeper, deeper.__cause__ or deeper.__context__
    return str(exc)


def _form_refusal(detail: str, cause: BaseException, s: GatewaySettings, max_fields: int) -> GatewayError:
    """Name the limit that tripped: files, text fields, a part's header (a long file name)."""
    if detail.startswith("Too many files"):
        return UploadTooLarge(f"At most {s.collection_max_files} images per request "
                              "(GATEWAY_COLLECTION_MAX_FILES); send the rest in another request.")
    if detail.startswith("Too many fields"):
        return UploadTooLarge(f"At most {max_fields} text fields per request (url, tags and embedding_model; "
                              f"the url fields count among the {s.collection_max_files} images of "
                              "GATEWAY_COLLECTION_MAX_FILES); send fewer fields.")
    parser = _parse_failure(cause)
    if "header size" in parser:
        # python-multipart's limit on one header line: with a plain name, a file name of
        # about 4,150 characters. Shorter names over MAX_NAME are cut, not refused.
        return BadRequest(f"A part's header is over {DEFAULT_MAX_HEADER_SIZE} bytes: send file names of at most "
                          f"{MAX_NAME} characters (a longer one is cut to {MAX_NAME}).")
    if "header count" in parser:
        return BadRequest(f"A part has more than {DEFAULT_MAX_HEADER_COUNT} header lines; send "
                          "Content-Disposition and Content-Type only.")
    return BadRequest(f"The multipart body could not be read: {detail}")


async def read_inputs(request: Request, s: GatewaySettings) -> tuple[list[Input], tuple[str, ...], tuple[str, ...]]:
    """The inputs in order, the tags and the models asked; 413 naming the limit that was passed."""
    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        raise BadRequest("Send the images as multipart/form-data: 'file' fields and/or 'url' fields.")
    max_fields = s.collection_max_files + TEXT_FIELDS
    try:
        form = await request.form(max_files=s.collection_max_files, max_fields=max_fields, max_part_size=64 * 1024)
    except HTTPException as exc:
        raise _form_refusal(str(exc.detail), exc, s, max_fields) from None
    try:
        inputs: list[Input] = []
        tags: list[str] = []
        models: list[str] = []
        for key, value in form.multi_items():
            if key == "file":
                if not isinstance(value, UploadFile):
                    raise BadRequest("A 'file' field must be a file upload, not a text value.")
                name = clean_name(value.filename or "", f"file {len(inputs) + 1}")
                inputs.append(Input(name.name, data=await value.read(), note=name.note,
                                    content_type=value.content_type or "application/octet-stream"))
            elif key == "url" and isinstance(value, str):
                inputs.append(Input(value[:200], url=value.strip()))
            elif key == "tags" and isinstance(value, str):
                tags.extend(t.strip().lower() for t in value.split(",") if t.strip())
            elif key == "embedding_model" and isinstance(value, str):
                models.append(value.strip())
            else:
                raise BadRequest(f"Unknown field {key[:40]!r}; the fields are file, url, tags and embedding_model.")
    finally:
        await form.close()
    if len(inputs) > s.collection_max_files:
        raise UploadTooLarge(f"At most {s.collection_max_files} images per request (GATEWAY_COLLECTION_MAX_FILES).")
    if not inputs:
        raise BadRequest("Send at least one 'file' or 'url' field.")
    if len(set(tags)) > MAX_TAGS or any(len(t) > 64 for t in tags):
        raise BadRequest(f"At most {MAX_TAGS} tags of at most 64 characters each.")
    return inputs, tuple(dict.fromkeys(tags)), tuple(dict.fromkeys(models))
