from __future__ import annotations

from django.http import HttpRequest, JsonResponse

from catalog.models import CatalogModel


def public_models(request: HttpRequest) -> JsonResponse:
    """``GET /models``: the minting catalog, no authentication."""
    data = [m.as_public_dict() for m in CatalogModel.objects.enabled()]
    return JsonResponse({"object": "list", "data": data})
