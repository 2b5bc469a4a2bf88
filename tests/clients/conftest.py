"""The demo trust space (two operators) the client tests run against."""

from tests.smtp.test_federation import space

__all__ = ["space"]
