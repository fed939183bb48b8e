"""The account API: ``/me``, ``/keys``, ``/sync/machines``, ``/usage`` (master token only)."""

from __future__ import annotations

import uuid
from datetime import timedelta

from django.conf import settings
from django.utils import timezone
from rest_framework import status
from rest_framework.exceptions import APIException, NotFound, PermissionDenied, ValidationError
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from account_api.parsers import BODY_LIMIT, BoundedJSONParser
from account_api.serializers import (
    ApiKeySerializer,
    MachineSerializer,
    MintKeySerializer,
    RegisterMachineSerializer,
    SyncEventsQuerySerializer,
    SyncUploadSerializer,
    UsageQuerySerializer,
)
from accounts.authentication import MasterTokenAuthentication
from accounts.models import Account, ApiKey, Machine
from accounts.services import ModelUnavailable, api_key_mint, machine_register
from proxy.models import MachineRateLimit
from usage.reports import usage_summarize
from usage.sync import MAX_RECORDS as MAX_SYNC_RECORDS
from usage.sync import BadCursor, usage_events_page, usage_sync


def _public_id(value: str, missing: str) -> uuid.UUID:
    """The UUID in a detail URL; anything else is the same 404 as an id of another account."""
    try:
        return uuid.UUID(value)
    except ValueError:
        raise NotFound(missing) from None


class AccountView(APIView):
    authentication_classes = [MasterTokenAuthentication]
    parser_classes = [BoundedJSONParser]
    body_limit = BODY_LIMIT

    @property
    def account(self) -> Account:
        return self.request.user  # set by MasterTokenAuthentication

    def perform_authentication(self, request: Request) -> None:
        request.user  # noqa: B018 - authenticate up front so a missing token is a 401 first


class MeView(AccountView):
    def get(self, request: Request) -> Response:
        account = Account.objects.get(pk=self.account.pk)
        since = timezone.now() - timedelta(days=30)
        return Response(
            {
                "id": str(account.public_id),
                "email": account.email,
                "created_at": account.created_at,
                "active_keys": ApiKey.objects.active().filter(account=account).count(),
                "active_machines": Machine.objects.active().filter(account=account).count(),
                "usage_30d": usage_summarize(account=account, since=since)["totals"],
            }
        )


class KeysView(AccountView):
    def get(self, request: Request) -> Response:
        keys = ApiKey.objects.filter(account=self.account).select_related("model")
        return Response({"data": ApiKeySerializer(keys, many=True).data})

    def post(self, request: Request) -> Response:
        form = MintKeySerializer(data=request.data)
        form.is_valid(raise_exception=True)
        try:
            key, secret = api_key_mint(account=self.account, **form.validated_data)
        except ModelUnavailable as exc:
            raise ValidationError(
                f"Unknown or disabled model {exc.args[0]!r}; see GET /models."
            ) from exc
        return Response(
            {
                "id": str(key.public_id),
                "key": secret,
                "model": key.model.slug,
                "name": key.name,
                "prefix": key.prefix,
                "created_at": key.created_at,
            },
            status=status.HTTP_201_CREATED,
        )


class KeyDetailView(AccountView):
    def delete(self, request: Request, public_id: str) -> Response:
        public_id = _public_id(public_id, "No such API key.")
        key = ApiKey.objects.filter(account=self.account, public_id=public_id).first()
        if key is None:
            raise NotFound("No such API key.")
        key.disable()
        return Response(status=status.HTTP_204_NO_CONTENT)


class MachinesView(AccountView):
    def get(self, request: Request) -> Response:
        machines = Machine.objects.filter(account=self.account)
        return Response({"data": MachineSerializer(machines, many=True).data})

    def post(self, request: Request) -> Response:
        form = RegisterMachineSerializer(data=request.data)
        form.is_valid(raise_exception=True)
        machine, secret = machine_register(account=self.account, **form.validated_data)
        return Response(
            {
                "id": str(machine.public_id),
                "proxy_token": secret,
                "base_url": f"{settings.GATEWAY_PUBLIC_URL}/anthropic/{secret}",
                "hostname": machine.hostname,
                "prefix": machine.prefix,
                "created_at": machine.created_at,
            },
            status=status.HTTP_201_CREATED,
        )


class MachineDetailView(AccountView):
    def delete(self, request: Request, public_id: str) -> Response:
        public_id = _public_id(public_id, "No such machine.")
        machine = Machine.objects.filter(account=self.account, public_id=public_id).first()
        if machine is None:
            raise NotFound("No such machine.")
        machine.revoke()
        return Response(status=status.HTTP_204_NO_CONTENT)


class UsageView(AccountView):
    def get(self, request: Request) -> Response:
        query = UsageQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        params = query.validated_data
        report = usage_summarize(
            account=self.account,
            group_by=params["group_by"],
            since=params.get("since"),
            until=params.get("until"),
            source=params.get("source"),
        )
        return Response({"group_by": params["group_by"], **report})


# -- ccas: transcript usage and subscription limits (issue 10) ----------------------------------
class BatchTooLarge(APIException):
    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    default_detail = f"Too many records: send at most {MAX_SYNC_RECORDS} per request."
    default_code = "batch_too_large"


class SyncUsageView(AccountView):
    """``POST /sync/usage`` stores what ``ccas sync`` read from the transcripts of one of the
    account's machines; ``GET /sync/usage`` lists the account's events for ``ccas report``."""

    def post(self, request: Request) -> Response:
        if not isinstance(request.data, dict):
            raise ValidationError('Expected a JSON object: {"machine_id": …, "records": […]}.')
        records = request.data.get("records")
        if isinstance(records, list) and len(records) > MAX_SYNC_RECORDS:
            raise BatchTooLarge()
        form = SyncUploadSerializer(data=request.data)
        form.is_valid(raise_exception=True)
        machine = Machine.objects.filter(
            account=self.account, public_id=form.validated_data["machine_id"]
        ).first()
        if machine is None:
            raise NotFound("No such machine: register it with POST /sync/machines (ccas init).")
        if not machine.active:
            raise PermissionDenied("This machine is revoked: run `ccas init` to register again.")
        outcome = usage_sync(
            account_id=self.account.id,
            machine_id=machine.id,
            records=form.validated_data["records"],
        )
        return Response(outcome.as_dict())

    def get(self, request: Request) -> Response:
        query = SyncEventsQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        params = query.validated_data
        try:
            page = usage_events_page(
                account_id=self.account.id,
                since=params.get("since"),
                until=params.get("until"),
                sources=params["source"].split(",") if params.get("source") else None,
                cursor=params.get("cursor"),
                limit=params["limit"],
            )
        except BadCursor as exc:
            raise ValidationError(f"cursor: {exc}") from exc
        return Response(page)


class SyncRateLimitsView(AccountView):
    """``GET /sync/rate-limits``: each machine's latest subscription limits, as the proxy saw
    them in ``anthropic-ratelimit-unified-*`` response headers (``ccas report blocks``)."""

    def get(self, request: Request) -> Response:
        limits = MachineRateLimit.objects.filter(machine__account=self.account).select_related(
            "machine"
        )
        data = []
        for limit in limits:
            five_hour_reset, weekly_reset = limit.five_hour_reset, limit.weekly_reset
            data.append(
                {
                    "machine_id": str(limit.machine.public_id),
                    "hostname": limit.machine.hostname,
                    "observed_at": limit.observed_at.isoformat(),
                    "status": limit.status,
                    "five_hour_utilization": limit.five_hour_utilization,
                    "five_hour_reset": five_hour_reset.isoformat() if five_hour_reset else None,
                    "weekly_utilization": limit.weekly_utilization,
                    "weekly_reset": weekly_reset.isoformat() if weekly_reset else None,
                }
            )
        return Response({"data": data})
