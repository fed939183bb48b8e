from __future__ import annotations

from typing import Any

from django.http import HttpResponse, JsonResponse
from rest_framework import status
from rest_framework.exceptions import APIException, ParseError
from rest_framework.parsers import JSONParser

from hepgg.lib.bodylimit import BodyLimit

MAX_BODY_BYTES = 1024 * 1024


def body_too_large(limit: int, kwargs: dict[str, Any]) -> HttpResponse:
    """The 413 of ``hepgg.lib.bodylimit``, which refuses the body before Django reads it."""
    return JsonResponse({"error": BodyTooLarge.default_detail}, status=413)


# Servers refuse a bigger body before Django reads it (``hepgg.lib.bodylimit``); the parser's own
# check below remains for callers that do not go through ASGI (the test client).
BODY_LIMIT = BodyLimit(lambda: MAX_BODY_BYTES, body_too_large)


class BodyTooLarge(APIException):
    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    default_detail = (
        f"Request body too large (the account API accepts up to {MAX_BODY_BYTES} bytes)."
    )
    default_code = "body_too_large"


class BoundedJSONParser(JSONParser):
    """JSON, refusing a declared length over ``MAX_BODY_BYTES`` (behind a server, a bigger body
    never gets this far: ``BODY_LIMIT`` refuses it while it arrives)."""

    def parse(self, stream: Any, media_type: str | None = None, parser_context: Any = None) -> Any:
        request = (parser_context or {}).get("request")
        length = int(request.META.get("CONTENT_LENGTH") or 0) if request is not None else 0
        if length > MAX_BODY_BYTES:
            raise BodyTooLarge()
        try:
            return super().parse(stream, media_type, parser_context)
        except RecursionError:  # json's decoder recurses per nesting level: 500 otherwise
            raise ParseError("JSON nested too deeply.") from None
