from __future__ import annotations

from django.http import HttpRequest, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_safe

from catalog.models import CatalogModel


@csrf_exempt  # no cookie, no side effect: an unsafe method gets 405 rather than CSRF's 403
@require_safe
def public_models(request: HttpRequest) -> JsonResponse:
    """``GET /models``: the minting catalog, no authentication."""
    data = [m.as_public_dict() for m in CatalogModel.objects.enabled()]
    return JsonResponse({"object": "list", "data": data})
