"""The test Django project (settings, urls, wsgi, asgi)."""
