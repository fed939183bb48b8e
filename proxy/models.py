"""What the proxy keeps beyond usage events: each machine's latest subscription limits."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from django.db import models
from django.db.models import Q

from accounts.models import Machine


class MachineRateLimitQuerySet(models.QuerySet["MachineRateLimit"]):
    def record_latest(
        self, *, machine_id: int, observed_at: datetime, values: dict[str, str]
    ) -> None:
        """Store ``values`` unless a newer observation is already stored (several processes
        write, in any order, and an older snapshot must never overwrite a newer one)."""
        updated = (
            self.filter(machine_id=machine_id)
            .filter(Q(observed_at__lt=observed_at))
            .update(observed_at=observed_at, values=values)
        )
        if updated or self.filter(machine_id=machine_id).exists():
            return
        # The first snapshot of this machine; a concurrent writer may win the insert.
        self.get_or_create(
            machine_id=machine_id, defaults={"observed_at": observed_at, "values": values}
        )


class MachineRateLimit(models.Model):
    """The latest ``anthropic-ratelimit-unified-*`` response headers seen for a machine.

    Subscription (claude.ai) logins get these on every response; they are the only source of a
    subscription's real 5-hour and weekly utilisation. ``values`` maps the header name less the
    ``anthropic-ratelimit-unified-`` prefix (``5h-utilization``, ``7d-reset``, ``status``, …) to
    its value as sent.
    """

    machine = models.OneToOneField(Machine, on_delete=models.CASCADE, related_name="rate_limit")
    observed_at = models.DateTimeField()
    values = models.JSONField(default=dict)

    objects = MachineRateLimitQuerySet.as_manager()

    class Meta:
        verbose_name = "machine rate limit"
        ordering = ["-observed_at"]

    def __str__(self) -> str:
        return f"{self.machine}: {self.status or 'unknown'}"

    def _number(self, key: str) -> float | None:
        try:
            return float(self.values[key])
        except (KeyError, TypeError, ValueError):
            return None

    def _reset(self, key: str) -> datetime | None:
        seconds = self._number(key)
        return None if seconds is None else datetime.fromtimestamp(seconds, tz=UTC)

    @property
    def status(self) -> str:
        return str(self.values.get("status", ""))

    @property
    def five_hour_utilization(self) -> float | None:
        """Share of the 5-hour window used, 0.0 to 1.0 (as Anthropic reports it)."""
        return self._number("5h-utilization")

    @property
    def weekly_utilization(self) -> float | None:
        return self._number("7d-utilization")

    @property
    def five_hour_reset(self) -> datetime | None:
        return self._reset("5h-reset")

    @property
    def weekly_reset(self) -> datetime | None:
        return self._reset("7d-reset")

    def as_dict(self) -> dict[str, Any]:
        return {
            "observed_at": self.observed_at.isoformat(),
            "status": self.status,
            "five_hour_utilization": self.five_hour_utilization,
            "weekly_utilization": self.weekly_utilization,
            "values": self.values,
        }
