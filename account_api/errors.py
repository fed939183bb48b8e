"""The account API's one error shape: ``{"error": "<message>"}``."""

from __future__ import annotations

from typing import Any

from django.db import InterfaceError, OperationalError
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import exception_handler


def _first_message(detail: Any) -> str:
    if isinstance(detail, dict):
        field, value = next(iter(detail.items()))
        inner = _first_message(value)
        return inner if field == "non_field_errors" else f"{field}: {inner}"
    if isinstance(detail, list) and detail:
        return _first_message(detail[0])
    return str(detail)


def account_api_exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    if isinstance(exc, OperationalError | InterfaceError):
        # The database is unreachable: a quick 503 the client may retry, not a 500.
        return Response(
            {"error": "The account API cannot reach its database right now; retry shortly."},
            status=status.HTTP_503_SERVICE_UNAVAILABLE,
            headers={"Retry-After": "1"},
        )
    response = exception_handler(exc, context)
    if response is None:
        return None  # not an API exception: a real bug, let Django report it
    if isinstance(exc, exceptions.ParseError):
        message = f"Malformed JSON body: {exc.detail}"
    elif isinstance(exc, exceptions.APIException):
        message = _first_message(exc.detail)
    else:
        message = "Not found." if response.status_code == status.HTTP_404_NOT_FOUND else "Error."
    response.data = {"error": message}
    return response
