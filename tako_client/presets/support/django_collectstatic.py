"""Tako's Django build step: ``collectstatic`` into ``public/<STATIC_URL path>``.

Run from the app directory with the app's virtualenv Python. The project's settings module
comes from ``DJANGO_SETTINGS_MODULE``, else from ``manage.py``. ``STATIC_ROOT`` is
overridden for this command only (the project's settings are not changed), so the files
land where the edge serves them: ``STATIC_URL = "static/"`` -> ``public/static/``.
"""

import os
import re
import sys
from pathlib import Path

SETTINGS = re.compile(r"""DJANGO_SETTINGS_MODULE['"]\s*,\s*['"]([\w.]+)['"]""")


def settings_module() -> str:
    if os.environ.get("DJANGO_SETTINGS_MODULE"):
        return os.environ["DJANGO_SETTINGS_MODULE"]
    manage = Path("manage.py")
    found = SETTINGS.search(manage.read_text(encoding="utf-8")) if manage.is_file() else None
    if found is None:
        sys.exit("tako django preset: set DJANGO_SETTINGS_MODULE (manage.py does not name it)")
    return found.group(1)


def main() -> None:
    sys.path.insert(0, os.getcwd())
    os.environ["DJANGO_SETTINGS_MODULE"] = settings_module()
    # the app's Django, from the build venv (not a dependency of tako)
    import django  # type: ignore[import-not-found]
    from django.conf import settings  # type: ignore[import-not-found]
    from django.core.management import call_command  # type: ignore[import-not-found]
    from django.test.utils import override_settings  # type: ignore[import-not-found]

    django.setup()
    url = str(settings.STATIC_URL or "static/")
    prefix = "static" if "://" in url else url.strip("/") or "static"
    root = Path("public", prefix).resolve()
    with override_settings(STATIC_ROOT=str(root)):
        call_command("collectstatic", interactive=False, verbosity=1)


if __name__ == "__main__":
    main()
