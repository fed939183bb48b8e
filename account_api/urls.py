from django.urls import path, re_path

from account_api import views

urlpatterns = [
    path("me", views.MeView.as_view()),
    path("keys", views.KeysView.as_view()),
    # Any id reaches the view, so that a malformed one is the API's JSON 404, not Django's page.
    re_path(r"^keys/(?P<public_id>[\s\S]*)\Z", views.KeyDetailView.as_view()),
    path("sync/machines", views.MachinesView.as_view()),
    re_path(r"^sync/machines/(?P<public_id>[\s\S]*)\Z", views.MachineDetailView.as_view()),
    path("usage", views.UsageView.as_view()),
]

# ccas (issue 10): transcript usage upload and listing, the machines' subscription limits.
urlpatterns += [
    path("sync/usage", views.SyncUsageView.as_view()),
    path("sync/rate-limits", views.SyncRateLimitsView.as_view()),
]
