"""The HTTP edge: routes, request parsing, JSON replies, the OpenAPI description, access
control and the web page. The one room that imports Starlette; it may use every other room."""
