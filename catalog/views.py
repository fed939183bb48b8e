"""Public, unauthenticated catalog endpoints: ``GET /models`` and ``GET /prices``."""

from __future__ import annotations

import hashlib

import orjson
from django.db.models import Max
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.utils import timezone
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_safe

from catalog.models import CatalogModel, Price
from catalog.pricing import PriceTable, price_row


@csrf_exempt  # no cookie, no side effect: an unsafe method gets 405 rather than CSRF's 403
@require_safe
def public_models(request: HttpRequest) -> JsonResponse:
    """``GET /models``: the minting catalog with today's price of each model, no authentication."""
    prices = list(Price.objects.all())
    table = PriceTable(price_row(p) for p in prices)
    by_key = {(p.pattern, p.effective_from): p for p in prices}
    today = timezone.now().date()
    data = []
    for model in CatalogModel.objects.enabled():
        row = table.row_for(model.slug, today)
        price = by_key.get((row.pattern, row.effective_from)) if row is not None else None
        data.append(model.as_public_dict(price))
    return JsonResponse({"object": "list", "data": data})


@csrf_exempt  # as /models: an unsafe method gets 405
@require_safe
def public_prices(request: HttpRequest) -> HttpResponse:
    """``GET /prices``: the dated price table, row for row in ``catalog/data/prices.json``'s shape.

    Clients (the ccas CLI) cache it: the answer carries an ETag and honours ``If-None-Match``.
    """
    prices = Price.objects.all()
    updated = prices.aggregate(latest=Max("updated_at"))["latest"]
    body = orjson.dumps(
        {
            "object": "list",
            "unit": "USD per million tokens",
            "updated_at": updated.isoformat() if updated else None,
            "prices": [p.as_public_dict() for p in prices],
        }
    )
    etag = f'"{hashlib.sha256(body).hexdigest()[:32]}"'
    headers = {"ETag": etag, "Cache-Control": "public, max-age=300"}
    if etag in request.headers.get("If-None-Match", ""):
        return HttpResponse(status=304, headers=headers)
    return HttpResponse(body, content_type="application/json", headers=headers)
