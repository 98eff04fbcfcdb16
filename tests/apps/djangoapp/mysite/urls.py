"""One view: who serves the request and where the static file is."""

import os

from django.http import HttpRequest, HttpResponse
from django.templatetags.static import static
from django.urls import path


def index(request: HttpRequest) -> HttpResponse:
    server = request.META.get("SERVER_SOFTWARE", "?")
    build = os.environ.get("TAKO_BUILD", "?")
    return HttpResponse(
        f"hello from django (build {build}, {server}); css at {static('hello/site.css')}\n",
        content_type="text/plain",
    )


urlpatterns = [path("", index)]
