"""Keep loguru quiet in tests (pytest shows captured logs of failures anyway)."""

from collections.abc import Iterator

import pytest
from loguru import logger


@pytest.fixture(autouse=True)
def _quiet_loguru() -> Iterator[None]:
    logger.remove()
    handler = logger.add(lambda _msg: None, level="WARNING")
    yield
    logger.remove(handler)
