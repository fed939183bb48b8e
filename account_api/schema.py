"""The account API's OpenAPI description: response shapes and refusals for drf-spectacular.

Kept out of ``views.py`` (``OpenApiViewExtension`` decorates each view from here) so that a view
reads as what it does. Every operation names the ``masterToken`` scheme and documents the
contract's one error body, ``{"error": "<message>"}``. A new view is one more entry in ``_VIEWS``.
"""

from __future__ import annotations

from typing import Any

from drf_spectacular.extensions import (
    OpenApiAuthenticationExtension,
    OpenApiSerializerFieldExtension,
    OpenApiViewExtension,
)
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import (
    OpenApiParameter,
    OpenApiResponse,
    extend_schema,
    inline_serializer,
)
from rest_framework import serializers

from account_api.serializers import (
    ApiKeySerializer,
    MachineSerializer,
    MintKeySerializer,
    RegisterMachineSerializer,
    SyncEventsQuerySerializer,
    SyncUploadSerializer,
    UsageQuerySerializer,
)


class MasterTokenScheme(OpenApiAuthenticationExtension):
    target_class = "accounts.authentication.MasterTokenAuthentication"
    name = "masterToken"

    def get_security_definition(self, auto_schema: Any) -> dict[str, str]:
        return {
            "type": "http",
            "scheme": "bearer",
            "bearerFormat": "hyd_…",
            "description": "The account's master token (issued by the dashboard or "
            "`manage.py create_account`); opens `/me`, `/keys`, `/sync/*` and `/usage`.",
        }


class DateOrDateTimeSchema(OpenApiSerializerFieldExtension):
    target_class = "account_api.serializers.DateOrDateTimeField"

    def map_serializer_field(self, auto_schema: Any, direction: str) -> dict[str, Any]:
        return {
            "type": "string",
            "description": "A date (YYYY-MM-DD, midnight UTC) or an ISO 8601 time.",
            "examples": ["2026-11-01", "2026-11-01T12:00:00Z"],
        }


Error = inline_serializer("AccountApiError", fields={"error": serializers.CharField()})

_TOTAL_FIELDS = {
    "requests": serializers.IntegerField(),
    "input_tokens": serializers.IntegerField(),
    "output_tokens": serializers.IntegerField(),
    "cache_creation_input_tokens": serializers.IntegerField(),
    "cache_read_input_tokens": serializers.IntegerField(),
    "cost_usd": serializers.FloatField(allow_null=True),
}
UsageTotals = inline_serializer("UsageTotals", fields=_TOTAL_FIELDS)

Me = inline_serializer(
    "Me",
    fields={
        "id": serializers.UUIDField(),
        "email": serializers.EmailField(),
        "created_at": serializers.DateTimeField(),
        "active_keys": serializers.IntegerField(),
        "active_machines": serializers.IntegerField(),
        "usage_30d": UsageTotals,
    },
)
MintedKey = inline_serializer(
    "MintedKey",
    fields={
        "id": serializers.UUIDField(),
        "key": serializers.CharField(help_text="sk-hyd-…, shown only in this response"),
        "model": serializers.CharField(),
        "name": serializers.CharField(allow_blank=True),
        "prefix": serializers.CharField(),
        "created_at": serializers.DateTimeField(),
    },
)
RegisteredMachine = inline_serializer(
    "RegisteredMachine",
    fields={
        "id": serializers.UUIDField(),
        "proxy_token": serializers.CharField(help_text="pt_…, shown only in this response"),
        "base_url": serializers.URLField(),
        "hostname": serializers.CharField(),
        "prefix": serializers.CharField(),
        "created_at": serializers.DateTimeField(),
    },
)
KeyList = inline_serializer("ApiKeyList", fields={"data": ApiKeySerializer(many=True)})
MachineList = inline_serializer("MachineList", fields={"data": MachineSerializer(many=True)})
UsageReport = inline_serializer(
    "UsageReport",
    fields={
        "group_by": serializers.CharField(),
        "data": inline_serializer(
            "UsageBucket",
            fields={"bucket": serializers.CharField(allow_null=True), **_TOTAL_FIELDS},
            many=True,
        ),
        "totals": UsageTotals,
    },
)

SyncOutcome = inline_serializer(
    "SyncOutcome",
    fields={
        "accepted": serializers.IntegerField(),
        "duplicates": serializers.IntegerField(),
        "rejected": inline_serializer(
            "SyncRejected",
            fields={"index": serializers.IntegerField(), "error": serializers.CharField()},
            many=True,
        ),
    },
)
SyncEvents = inline_serializer(
    "SyncEventsPage",
    fields={
        "data": serializers.ListField(child=serializers.DictField()),
        "next_cursor": serializers.CharField(allow_null=True),
    },
)
RateLimits = inline_serializer(
    "MachineRateLimits",
    fields={"data": serializers.ListField(child=serializers.DictField())},
)


def _refusals(*statuses: int) -> dict[int, OpenApiResponse]:
    described = {
        400: "Invalid input; the message names the field.",
        401: "Missing or wrong credential; the message says a master token (hyd_…) is expected.",
        403: "The machine is revoked.",
        404: "No such object in this account.",
        413: "Request body too large.",
        429: "Too many failed authentications from this address; see `Retry-After`.",
    }
    return {s: OpenApiResponse(Error, description=described[s]) for s in (401, 429, *statuses)}


_PUBLIC_ID = OpenApiParameter("public_id", OpenApiTypes.UUID, OpenApiParameter.PATH)

_VIEWS: dict[str, dict[str, Any]] = {
    "MeView": {"get": extend_schema(responses={200: Me, **_refusals()})},
    "KeysView": {
        "get": extend_schema(responses={200: KeyList, **_refusals()}),
        "post": extend_schema(
            request=MintKeySerializer, responses={201: MintedKey, **_refusals(400, 413)}
        ),
    },
    "KeyDetailView": {
        "delete": extend_schema(parameters=[_PUBLIC_ID], responses={204: None, **_refusals(404)}),
    },
    "MachinesView": {
        "get": extend_schema(responses={200: MachineList, **_refusals()}),
        "post": extend_schema(
            request=RegisterMachineSerializer,
            responses={201: RegisteredMachine, **_refusals(400, 413)},
        ),
    },
    "MachineDetailView": {
        "delete": extend_schema(parameters=[_PUBLIC_ID], responses={204: None, **_refusals(404)}),
    },
    "UsageView": {
        "get": extend_schema(
            parameters=[UsageQuerySerializer], responses={200: UsageReport, **_refusals(400)}
        ),
    },
    "SyncUsageView": {
        "post": extend_schema(
            request=SyncUploadSerializer,
            responses={200: SyncOutcome, **_refusals(400, 403, 404, 413)},
        ),
        "get": extend_schema(
            parameters=[SyncEventsQuerySerializer], responses={200: SyncEvents, **_refusals(400)}
        ),
    },
    "SyncRateLimitsView": {"get": extend_schema(responses={200: RateLimits, **_refusals()})},
}


def _extension(view_name: str, methods: dict[str, Any]) -> type[OpenApiViewExtension]:
    def view_replacement(self: OpenApiViewExtension) -> type:
        decorated = type(view_name, (self.target_class,), {})
        for method, decorator in methods.items():
            setattr(decorated, method, decorator(getattr(self.target_class, method)))
        return decorated

    return type(
        f"{view_name}Schema",
        (OpenApiViewExtension,),
        {"target_class": f"account_api.views.{view_name}", "view_replacement": view_replacement},
    )


EXTENSIONS = [_extension(name, methods) for name, methods in _VIEWS.items()]
