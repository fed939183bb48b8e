"""Admin: each machine's latest subscription limits (read-only; the proxy writes them)."""

from __future__ import annotations

from django.contrib import admin

from proxy.models import MachineRateLimit


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.0f}%"


@admin.register(MachineRateLimit)
class MachineRateLimitAdmin(admin.ModelAdmin):
    list_display = ["machine", "account", "status_display", "five_hour", "weekly", "observed_at"]
    list_select_related = ["machine__account"]
    search_fields = ["machine__hostname", "machine__account__email"]
    readonly_fields = ["machine", "observed_at", "values"]
    ordering = ["-observed_at"]

    @admin.display(description="account", ordering="machine__account__email")
    def account(self, obj: MachineRateLimit) -> str:
        return obj.machine.account.email

    @admin.display(description="status")
    def status_display(self, obj: MachineRateLimit) -> str:
        return obj.status or "-"

    @admin.display(description="5-hour window")
    def five_hour(self, obj: MachineRateLimit) -> str:
        reset = obj.five_hour_reset
        used = _percent(obj.five_hour_utilization)
        return used if reset is None else f"{used} (resets {reset:%Y-%m-%d %H:%M} UTC)"

    @admin.display(description="weekly window")
    def weekly(self, obj: MachineRateLimit) -> str:
        reset = obj.weekly_reset
        used = _percent(obj.weekly_utilization)
        return used if reset is None else f"{used} (resets {reset:%Y-%m-%d %H:%M} UTC)"

    def has_add_permission(self, request: object) -> bool:
        return False

    def has_change_permission(self, request: object, obj: object = None) -> bool:
        return False
