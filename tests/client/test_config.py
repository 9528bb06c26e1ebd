"""The client config file: every key checked, typos and bad URLs refused by name."""

from __future__ import annotations

from pathlib import Path

import pytest

from client.config import parse_client_config
from hushcc.errors import ConfigError

GOOD = """\
relay_url = "http://127.0.0.1:8080"
issuer_url = "http://127.0.0.1:8082/"
log_key = "log.test+01234567+AAAA"
policy = "policy.toml"
issuer_key = "issuer.key.pub"
issuer_name = "issuer.test"
origin_name = "relay.test"
api_key_file = "api.key"
"""


def test_a_good_config_parses_with_paths_beside_it() -> None:
    config = parse_client_config(GOOD, Path("/etc/hushcc"))
    assert config.relay_url == "http://127.0.0.1:8080"
    assert config.issuer_url == "http://127.0.0.1:8082"
    assert config.policy == Path("/etc/hushcc/policy.toml")
    assert config.log_url is None
    assert config.model == "smollm2-135m-instruct"


@pytest.mark.parametrize(("text", "named"), [
    pytest.param(GOOD + 'relay_ulr = "x"\n', "relay_ulr", id="typo"),
    pytest.param(GOOD.replace('relay_url = "http://127.0.0.1:8080"\n', ""), "relay_url",
                 id="missing"),
    pytest.param(GOOD.replace("http://127.0.0.1:8080", "127.0.0.1:8080"), "URL", id="no-scheme"),
    pytest.param(GOOD.replace('"issuer.test"', "7"), "issuer_name", id="not-a-string"),
    pytest.param(GOOD + "[", "TOML", id="bad-toml"),
])
def test_a_bad_config_names_what_is_wrong(text: str, named: str) -> None:
    with pytest.raises(ConfigError, match=named):
        parse_client_config(text, Path("/etc/hushcc"))
