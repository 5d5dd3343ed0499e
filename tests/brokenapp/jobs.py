"""Fails on import, as a jobs module with a typo in an import would."""

from tests.testapp.models import NoSuchModel  # noqa: F401
