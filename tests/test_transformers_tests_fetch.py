import pytest

from scripts.transformers_tests import FetchError, common_tests_path


def test_without_pypi_the_fetch_fails_with_a_reason_that_the_common_tests_skip_with(tmp_path, monkeypatch):
    monkeypatch.setenv("ELASTICAST_CACHE", str(tmp_path))  # an empty cache: nothing fetched before
    monkeypatch.setenv("PIP_INDEX_URL", "http://127.0.0.1:9/simple")  # nothing listens there
    monkeypatch.setenv("PIP_RETRIES", "0")
    monkeypatch.setenv("PIP_FIND_LINKS", str(tmp_path / "no-wheels"))  # no local wheel folder to fall back on
    monkeypatch.delenv("PIP_NO_INDEX", raising=False)
    with pytest.raises(FetchError, match="PyPI unreachable"):
        common_tests_path("5.25.0")
    assert not list(tmp_path.rglob("*.py"))  # nothing half-extracted is left to be mistaken for the tests
