"""The issuing dashboard: accounts, their credentials, and the one page that shows a new secret.

A new secret is rendered straight into the response of the POST that issued it (never stored, not
even in the session or a flash message), on a page that says it will not be shown again; a reload
of that page cannot show it a second time because nothing kept it.
"""

from __future__ import annotations

from typing import Any

from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db.models import Count, Q, QuerySet
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import path, reverse

from accounts.models import Account, ApiKey, Machine, MasterToken, SkillsAccessKey
from accounts.services import (
    ModelUnavailable,
    account_create,
    api_key_mint,
    master_token_rotate,
    skills_key_issue,
)
from catalog.models import CatalogModel
from hepgg.lib import csp
from hepgg.lib.admin import ReadOnlyInline
from hepgg.lib.sites import capability_url


class CreateAccountForm(forms.Form):
    email = forms.EmailField()

    def clean_email(self) -> str:
        email = self.cleaned_data["email"].strip()
        if Account.objects.filter(email__iexact=email).exists():
            raise forms.ValidationError("An account with this email already exists.")
        return email


class MintKeyForm(forms.Form):
    model = forms.ModelChoiceField(
        queryset=CatalogModel.objects.enabled(), to_field_name="slug", empty_label=None
    )
    name = forms.CharField(max_length=100, required=False)


class LabelForm(forms.Form):
    name = forms.CharField(max_length=100, required=False)


class MasterTokenInline(ReadOnlyInline):
    model = MasterToken
    fields = ["prefix", "created_at", "revoked_at"]
    readonly_fields = fields
    show_change_link = False


class ApiKeyInline(ReadOnlyInline):
    model = ApiKey
    fields = ["name", "model", "prefix", "active", "created_at", "last_used_at"]
    readonly_fields = fields


class MachineInline(ReadOnlyInline):
    model = Machine
    fields = ["hostname", "platform", "ccas_version", "prefix", "active", "last_seen_at"]
    readonly_fields = fields


class SkillsAccessKeyInline(ReadOnlyInline):
    model = SkillsAccessKey
    fields = ["name", "prefix", "created_at", "revoked_at"]
    readonly_fields = fields


@admin.register(Account)
class AccountAdmin(admin.ModelAdmin):
    list_display = ["email", "created_at", "active_keys", "active_machines"]
    search_fields = ["email", "public_id"]
    readonly_fields = ["public_id", "user", "email", "created_at"]
    fields = readonly_fields
    inlines = [MasterTokenInline, ApiKeyInline, MachineInline, SkillsAccessKeyInline]
    change_form_template = "admin/accounts/account/change_form.html"

    def get_queryset(self, request: HttpRequest) -> QuerySet[Account]:
        return (
            super()
            .get_queryset(request)
            .annotate(
                n_keys=Count(
                    "api_keys", filter=Q(api_keys__revoked_at__isnull=True), distinct=True
                ),
                n_machines=Count(
                    "machines", filter=Q(machines__revoked_at__isnull=True), distinct=True
                ),
            )
        )

    @admin.display(description="active API keys", ordering="n_keys")
    def active_keys(self, account: Account) -> int:
        return account.n_keys  # type: ignore[attr-defined]

    @admin.display(description="active machines", ordering="n_machines")
    def active_machines(self, account: Account) -> int:
        return account.n_machines  # type: ignore[attr-defined]

    def get_urls(self) -> list[Any]:
        wrap = self.admin_site.admin_view
        return [
            path(
                "<int:pk>/rotate-master-token/",
                wrap(self.rotate_master_token_view),
                name="accounts_account_rotate_master_token",
            ),
            path(
                "<int:pk>/mint-api-key/",
                wrap(self.mint_api_key_view),
                name="accounts_account_mint_api_key",
            ),
            path(
                "<int:pk>/issue-skills-key/",
                wrap(self.issue_skills_key_view),
                name="accounts_account_issue_skills_key",
            ),
            *super().get_urls(),
        ]

    # -- issuing views ---------------------------------------------------------------------
    def add_view(self, request: HttpRequest, form_url: str = "", extra_context: Any = None):
        if not self.has_add_permission(request):
            raise PermissionDenied
        form = CreateAccountForm(request.POST or None)
        if request.method == "POST" and form.is_valid():
            account, secret = account_create(email=form.cleaned_data["email"])
            self.log_addition(request, account, "Created account with its first master token")
            return self._show_secret(
                request, account, kind="master token", secret=secret, onboarding=True
            )
        return self._form_page(request, None, form, "Create an account", "Create account")

    def rotate_master_token_view(self, request: HttpRequest, pk: int) -> HttpResponse:
        account = self._account_for_issue(request, pk)
        if request.method == "POST":
            _token, secret = master_token_rotate(account=account)
            self.log_change(request, account, "Rotated the master token")
            return self._show_secret(request, account, kind="master token", secret=secret)
        return self._form_page(
            request,
            account,
            forms.Form(),
            "Rotate the master token",
            "Rotate (the current token stops working at once)",
        )

    def mint_api_key_view(self, request: HttpRequest, pk: int) -> HttpResponse:
        account = self._account_for_issue(request, pk)
        form = MintKeyForm(request.POST or None)
        if request.method == "POST" and form.is_valid():
            try:
                key, secret = api_key_mint(
                    account=account,
                    model=form.cleaned_data["model"].slug,
                    name=form.cleaned_data["name"],
                )
            except ModelUnavailable:
                form.add_error("model", "This model is not available.")
            else:
                self.log_change(request, account, f"Minted API key {key.prefix}…")
                return self._show_secret(
                    request, account, kind="API key", secret=secret, model=key.model.slug
                )
        return self._form_page(request, account, form, "Mint an API key", "Mint key")

    def issue_skills_key_view(self, request: HttpRequest, pk: int) -> HttpResponse:
        account = self._account_for_issue(request, pk)
        form = LabelForm(request.POST or None)
        if request.method == "POST" and form.is_valid():
            key, secret = skills_key_issue(account=account, name=form.cleaned_data["name"])
            self.log_change(request, account, f"Issued skills access key {key.prefix}…")
            return self._show_secret(request, account, kind="skills access key", secret=secret)
        return self._form_page(request, account, form, "Issue a skills access key", "Issue key")

    # -- helpers ---------------------------------------------------------------------------
    def _account_for_issue(self, request: HttpRequest, pk: int) -> Account:
        if not self.has_change_permission(request):
            raise PermissionDenied
        return get_object_or_404(Account, pk=pk)

    def _form_page(
        self,
        request: HttpRequest,
        account: Account | None,
        form: forms.Form,
        title: str,
        submit: str,
    ) -> HttpResponse:
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "title": title,
            "account": account,
            "form": form,
            "submit_label": submit,
        }
        return TemplateResponse(request, "admin/accounts/issue_form.html", context)

    def _show_secret(
        self,
        request: HttpRequest,
        account: Account,
        *,
        kind: str,
        secret: str,
        onboarding: bool = False,
        model: str = "",
    ) -> HttpResponse:
        public = settings.GATEWAY_PUBLIC_URL
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "title": f"New {kind} for {account.email}",
            "account": account,
            "kind": kind,
            "secret": secret,
            "onboarding": onboarding,
            "model": model or "cf-gpt-oss-20b",
            "gateway_url": public,
            "skills_url": capability_url(secret) if kind == "skills access key" else "",
            "account_url": reverse("admin:accounts_account_change", args=[account.pk]),
            "csp_nonce": (nonce := csp.new_nonce()),
        }
        response = TemplateResponse(request, "admin/accounts/secret_once.html", context)
        return csp.with_strict_csp(response, nonce)


@admin.register(ApiKey)
class ApiKeyAdmin(admin.ModelAdmin):
    list_display = [
        "prefix_display",
        "name",
        "account",
        "model",
        "active",
        "created_at",
        "last_used_at",
    ]
    list_filter = ["model", ("revoked_at", admin.EmptyFieldListFilter)]
    list_select_related = ["account", "model"]
    search_fields = ["prefix", "name", "account__email"]
    raw_id_fields = ["account"]
    readonly_fields = [
        "public_id",
        "prefix",
        "account",
        "model",
        "created_at",
        "last_used_at",
        "revoked_at",
    ]
    fields = [
        *readonly_fields,
        "name",
        "requests_per_minute",
        "tokens_per_minute",
        "monthly_budget_usd",
    ]
    actions = ["disable_keys"]

    @admin.display(description="key")
    def prefix_display(self, key: ApiKey) -> str:
        return f"{key.prefix}…"

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # minted from the account page, where the secret is shown once

    def save_model(self, request: HttpRequest, obj: ApiKey, form: Any, change: bool) -> None:
        super().save_model(request, obj, form, change)
        obj.forget_cached()  # new limits apply to the next request

    @admin.action(description="Disable selected API keys")
    def disable_keys(self, request: HttpRequest, queryset: QuerySet[ApiKey]) -> None:
        keys = list(queryset.filter(revoked_at__isnull=True))
        for key in keys:
            key.disable()
        self.message_user(request, f"Disabled {len(keys)} API key(s).", messages.SUCCESS)


@admin.register(Machine)
class MachineAdmin(admin.ModelAdmin):
    list_display = [
        "hostname",
        "account",
        "platform",
        "ccas_version",
        "active",
        "last_seen_at",
        "created_at",
    ]
    list_filter = [("revoked_at", admin.EmptyFieldListFilter), "platform"]
    list_select_related = ["account"]
    search_fields = ["hostname", "prefix", "account__email"]
    readonly_fields = [
        "public_id",
        "account",
        "hostname",
        "platform",
        "ccas_version",
        "prefix",
        "created_at",
        "last_seen_at",
        "revoked_at",
    ]
    fields = readonly_fields
    actions = ["revoke_machines"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # machines register themselves with `ccas init`

    @admin.action(description="Revoke selected machines' proxy tokens")
    def revoke_machines(self, request: HttpRequest, queryset: QuerySet[Machine]) -> None:
        machines = list(queryset.filter(revoked_at__isnull=True))
        for machine in machines:
            machine.revoke()
        self.message_user(request, f"Revoked {len(machines)} machine(s).", messages.SUCCESS)


@admin.register(SkillsAccessKey)
class SkillsAccessKeyAdmin(admin.ModelAdmin):
    list_display = ["prefix_display", "name", "account", "active", "created_at"]
    list_filter = [("revoked_at", admin.EmptyFieldListFilter)]
    list_select_related = ["account"]
    search_fields = ["prefix", "name", "account__email"]
    readonly_fields = ["public_id", "account", "prefix", "created_at", "revoked_at"]
    fields = [*readonly_fields, "name"]
    actions = ["revoke_keys"]

    @admin.display(description="key")
    def prefix_display(self, key: SkillsAccessKey) -> str:
        return f"{key.prefix}…"

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # issued from the account page, where the secret is shown once

    @admin.action(description="Revoke selected skills access keys")
    def revoke_keys(self, request: HttpRequest, queryset: QuerySet[SkillsAccessKey]) -> None:
        keys = list(queryset.filter(revoked_at__isnull=True))
        for key in keys:
            key.revoke()
        self.message_user(request, f"Revoked {len(keys)} skills access key(s).", messages.SUCCESS)
