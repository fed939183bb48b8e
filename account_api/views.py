"""The account API: ``/me``, ``/keys``, ``/sync/machines``, ``/usage`` (master token only)."""

from __future__ import annotations

import uuid
from datetime import timedelta

from django.conf import settings
from django.utils import timezone
from rest_framework import status
from rest_framework.exceptions import NotFound, ValidationError
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from account_api.parsers import BoundedJSONParser
from account_api.serializers import (
    ApiKeySerializer,
    MachineSerializer,
    MintKeySerializer,
    RegisterMachineSerializer,
    UsageQuerySerializer,
)
from accounts.authentication import MasterTokenAuthentication
from accounts.models import Account, ApiKey, Machine
from accounts.services import ModelUnavailable, api_key_mint, machine_register
from usage.models import UsageEvent


def _public_id(value: str, missing: str) -> uuid.UUID:
    """The UUID in a detail URL; anything else is the same 404 as an id of another account."""
    try:
        return uuid.UUID(value)
    except ValueError:
        raise NotFound(missing) from None


class AccountView(APIView):
    authentication_classes = [MasterTokenAuthentication]
    parser_classes = [BoundedJSONParser]

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
                "usage_30d": UsageEvent.objects.filter(account=account)
                .between(since, None)
                .totals(),
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
        events = UsageEvent.objects.filter(account=self.account).between(
            params.get("since"), params.get("until")
        )
        if "source" in params:
            events = events.filter(source=params["source"])
        return Response(
            {
                "group_by": params["group_by"],
                "data": events.summary(params["group_by"]),
                "totals": events.totals(),
            }
        )
