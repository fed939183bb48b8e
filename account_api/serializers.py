from __future__ import annotations

from datetime import UTC, datetime, time
from typing import Any

from django.utils import timezone
from django.utils.dateparse import parse_date, parse_datetime
from rest_framework import serializers

from accounts.models import ApiKey, Machine
from usage.models import Source
from usage.reports import GROUP_BY


class MintKeySerializer(serializers.Serializer):
    model = serializers.CharField(max_length=100)
    name = serializers.CharField(max_length=100, required=False, allow_blank=True, default="")


class ApiKeySerializer(serializers.ModelSerializer):
    id = serializers.UUIDField(source="public_id")
    model = serializers.SlugRelatedField(slug_field="slug", read_only=True)

    class Meta:
        model = ApiKey
        fields = ["id", "name", "model", "prefix", "active", "created_at", "last_used_at"]


class RegisterMachineSerializer(serializers.Serializer):
    hostname = serializers.CharField(max_length=255)
    platform = serializers.CharField(max_length=100, required=False, allow_blank=True, default="")
    ccas_version = serializers.CharField(
        max_length=50, required=False, allow_blank=True, default=""
    )


class MachineSerializer(serializers.ModelSerializer):
    id = serializers.UUIDField(source="public_id")

    class Meta:
        model = Machine
        fields = [
            "id",
            "hostname",
            "platform",
            "ccas_version",
            "prefix",
            "active",
            "created_at",
            "last_seen_at",
        ]


class DateOrDateTimeField(serializers.Field):
    """``2026-11-01`` (midnight UTC) or a full ISO 8601 timestamp."""

    def to_internal_value(self, data: Any) -> datetime:
        text = str(data)
        parsed = parse_datetime(text)
        if parsed is None and (day := parse_date(text)) is not None:
            parsed = datetime.combine(day, time.min)
        if parsed is None:
            raise serializers.ValidationError("Expected a date (YYYY-MM-DD) or an ISO 8601 time.")
        return parsed if timezone.is_aware(parsed) else timezone.make_aware(parsed, UTC)


def _choice(choices: tuple[str, ...], **kwargs: Any) -> serializers.ChoiceField:
    """A choice whose error names the valid values (the field name comes from the handler)."""
    valid = ", ".join(choices)
    return serializers.ChoiceField(
        choices=list(choices),
        error_messages={"invalid_choice": f'"{{input}}" is not valid; use one of: {valid}.'},
        **kwargs,
    )


class UsageQuerySerializer(serializers.Serializer):
    group_by = _choice(GROUP_BY, default="day")
    since = DateOrDateTimeField(required=False)
    until = DateOrDateTimeField(required=False)
    source = _choice(tuple(Source.values), required=False)

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        since, until = attrs.get("since"), attrs.get("until")
        if since is not None and until is not None and since > until:
            raise serializers.ValidationError("since must not be after until.")
        return attrs


class SyncUploadSerializer(serializers.Serializer):
    """``POST /sync/usage``: the envelope; each record is checked on its own by ``usage.sync``."""

    machine_id = serializers.UUIDField()
    records = serializers.ListField(child=serializers.JSONField(), allow_empty=True)


class SyncEventsQuerySerializer(serializers.Serializer):
    """``GET /sync/usage``: one page of the account's Claude events, oldest first."""

    since = DateOrDateTimeField(required=False)
    until = DateOrDateTimeField(required=False)
    source = serializers.RegexField(
        r"^(gateway|proxy|sync)(,(gateway|proxy|sync))*$", required=False
    )
    cursor = serializers.CharField(max_length=200, required=False)
    limit = serializers.IntegerField(min_value=1, max_value=10_000, default=5_000)
