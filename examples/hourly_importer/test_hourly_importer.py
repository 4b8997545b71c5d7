"""The importer against a fake API: paging, the cursor in storage, the key in a header, and a
failed page that leaves storage as it was."""

from pathlib import Path

from runtime.testing.pytest_plugin import FakeHttp, PluginRunner, assert_ok, assert_outcome

HERE = Path(__file__).parent
CONFIG = {"base_url": "https://api.example.com/v1", "api_key": "k-123", "max_pages": 1}


def test_pages_through_the_api_with_a_cursor(plugin_runner: PluginRunner, fake_http: FakeHttp) -> None:
    fake_http.add("GET", "https://api.example.com/v1/items",
                  json={"items": [1, 2], "next_cursor": "p2"})
    fake_http.add("GET", "https://api.example.com/v1/items?cursor=p2",
                  json={"items": [3], "next_cursor": None})
    first = plugin_runner.run(HERE, config=CONFIG, http=fake_http, keep_storage=True)
    assert_ok(first)
    assert first.storage["cursor"] == "p2" and first.storage["total"] == 2
    second = plugin_runner.run(HERE, config=CONFIG, http=fake_http, keep_storage=True)
    assert_ok(second)
    assert second.storage == {"cursor": "p2", "total": 3, "done": True}
    assert [call.query.get("cursor") for call in fake_http.calls] == [None, "p2"]
    assert all(call.headers["X-Api-Key"] == "k-123" for call in fake_http.calls)


def test_a_failed_page_changes_nothing(plugin_runner: PluginRunner, fake_http: FakeHttp) -> None:
    fake_http.add("GET", "https://api.example.com/v1/items*", status=500, body="down")
    result = plugin_runner.run(HERE, config=CONFIG, http=fake_http, storage={"cursor": "p7", "total": 10})
    assert_outcome(result, "error")
    assert "answered 500" in result.error.message if result.error else False
    assert result.storage == {"cursor": "p7", "total": 10}


def test_hosts_outside_allowed_hosts_are_refused(plugin_runner: PluginRunner, fake_http: FakeHttp) -> None:
    config = dict(CONFIG, base_url="https://evil.example.net")
    result = plugin_runner.run(HERE, config=config, http=fake_http)
    assert_outcome(result, "error")
    assert fake_http.calls == []
