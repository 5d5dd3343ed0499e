"""On Django 5.2 the django.tasks backend refuses to load with a message naming the minimum version."""

import sys

import django
import pytest
from django.core.exceptions import ImproperlyConfigured


@pytest.mark.skipif(django.VERSION >= (6, 0), reason="Django 6 has django.tasks")
def test_importing_the_backend_on_django_52_names_django_60() -> None:
    sys.modules.pop("pgqueue.tasks", None)
    with pytest.raises(ImproperlyConfigured, match=r"pgqueue.tasks \(the django.tasks backend\) needs Django 6.0 or "
                                                   r"later; this is Django 5\.2"):
        import pgqueue.tasks  # noqa: F401
    assert "pgqueue.tasks" not in sys.modules
