"""Every setting in `.env.example` against wrong types, out-of-range, empty, inf/nan and huge
values: each is refused naming the key, the value given and the rule, never a traceback.

The bulk runs in-process through ``load_settings`` reading a real `.env` file (the same
loader the command line uses); the command line itself is run a few times with every key
bad at once, so exit code 2, the lines on stderr and "nothing created" are the process's.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from core.config import ConfigError, Settings, load_settings

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / ".env.example"
HUGE_INT = "9" * 30

# Keys as `.env.example` lists them (commented-out ones included: they are settings too).
EXAMPLE_KEYS = re.findall(r"^(?:# )?([A-Z][A-Z0-9_]+)=", EXAMPLE.read_text(), flags=re.M)

# Bad values of the keys the type alone does not describe: (value, part of the rule shown).
TEXT_CASES: dict[str, list[tuple[str, str]]] = {
    "TRADING_MODE": [("demo", "one of"), ("", "one of")],
    "SYMBOLS": [("", "at least one symbol"), ("-1", "not a ticker"), ("A,A", "must not repeat")],
    "STRATEGY": [("nomodule", "dotted path"), ("", "dotted path")],
    "STRATEGY_PARAMS": [("[1]", "JSON object"), ("{bad", "not valid JSON")],
    "IB_HOST": [("", "host name"), ("http://x", "host name"), ("a" * 300, "host name")],
    "IB_ACCOUNT": [("DU 12", "account id"), ("x" * 40, "account id")],
    "IB_PRIMARY_EXCHANGE": [("NAS DAQ", "exchange code")],
    "EXCHANGE_CALENDAR": [("MARS", "exchange-calendars code"), ("", "exchange-calendars code")],
    "TWILIO_ACCOUNT_SID": [("AC123", "32 hex digits"), ("sid", "32 hex digits")],
    "TWILIO_AUTH_TOKEN": [("tok en", "without spaces"), ("x" * 2000, "at most 1024")],
    "TWILIO_WHATSAPP_FROM": [("+14155238886", "E.164"), ("whatsapp:+0123", "E.164")],
    "ALERT_WHATSAPP_TO": [("whatsapp:5551234567", "E.164"), ("whatsapp:+1" + "5" * 20, "E.164")],
    "TWILIO_BASE_URL": [("ftp://relay", "http"), ("relay.example", "http"), ("http://", "http")],
    "TELEGRAM_BOT_TOKEN": [("not-a-token", "bot token")],
    "TELEGRAM_CHAT_ID": [("chat 1", "chat id"), ("1" * 30, "chat id")],
    "TELEGRAM_BASE_URL": [("", "http"), ("https://x:99999", "http"), ("mailto:a@b.c", "http")],
    "SMTP_HOST": [("smtp example", "host name"), ("-bad-", "host name")],
    "SMTP_USER": [("a user", "user name"), ("u" * 300, "user name")],
    "SMTP_PASSWORD": [("x" * 2000, "at most 1024")],
    "ALERT_EMAIL_FROM": [("alerts", "e-mail address"), ("a@b", "e-mail address")],
    "ALERT_EMAIL_TO": [("ops@example.com,nobody", "e-mail addresses")],
    "STOP_FILE": [("", "STOP file cannot be switched off"), ("x" * 2000, "at most 1024")],
    "DATA_DIR": [("", "a directory path is required"), ("x" * 2000, "at most 1024")],
}
for _key in ("HEARTBEAT_FILE", "SIM_STATE_FILE", "DATABASE_FILE", "LOG_DIR", "ARCHIVE_DIR"):
    TEXT_CASES[_key] = [("x/" * 600, "at most 1024"), ("y" * 300, "each name at most 255")]
SECRET_KEYS = {"TWILIO_AUTH_TOKEN", "TELEGRAM_BOT_TOKEN", "SMTP_PASSWORD"}


def _numeric_cases(name: str) -> list[tuple[str, str]]:
    """Wrong type, below the minimum, huge, and (floats) inf / nan, from the field itself."""
    field = Settings.model_fields[name]
    lower = upper = None
    for meta in field.metadata:
        lower = getattr(meta, "gt", None) if getattr(meta, "gt", None) is not None else lower
        lower = getattr(meta, "ge", None) if getattr(meta, "ge", None) is not None else lower
        upper = getattr(meta, "lt", None) if getattr(meta, "lt", None) is not None else upper
        upper = getattr(meta, "le", None) if getattr(meta, "le", None) is not None else upper
    assert upper is not None, f"{name.upper()} has no upper bound: huge values would pass"
    cases = [("lots", "number"), ("", "number"), (HUGE_INT, "<")]
    if lower is not None:
        cases.append((str(lower - 1), ">"))
    if field.annotation is float:
        cases += [("inf", "finite"), ("-inf", "finite"), ("nan", "finite"), ("1e400", "finite")]
        cases.append(("1e300", "<="))
    else:
        cases.append(("1.5", "whole number"))
    return cases


def cases_for(key: str) -> list[tuple[str, str]]:
    name = key.lower()
    annotation = Settings.model_fields[name].annotation
    if key in TEXT_CASES:
        return TEXT_CASES[key]
    if annotation in (int, float):
        return _numeric_cases(name)
    if annotation is bool:
        return [("maybe", "true or false"), ("", "true or false"), ("2", "true or false")]
    if key.endswith("_MIN_SEVERITY"):
        return [("loud", "one of"), ("", "one of")]
    raise AssertionError(f"{key}: no bad values in the table; add a row to TEXT_CASES")


ALL_CASES = [(key, value, rule) for key in EXAMPLE_KEYS for value, rule in cases_for(key)]


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in Settings.model_fields:
        monkeypatch.delenv(name.upper(), raising=False)


def test_example_lists_every_setting_and_every_one_is_in_the_table() -> None:
    assert sorted(EXAMPLE_KEYS) == sorted(name.upper() for name in Settings.model_fields)
    for key in EXAMPLE_KEYS:
        assert cases_for(key), key


def test_every_bad_value_is_refused_naming_key_value_and_rule(
    tmp_path: Path, clean_env: None
) -> None:
    env = tmp_path / "bad.env"
    failures = []
    for key, value, rule in ALL_CASES:
        env.write_text(f"{key}={value}\n", encoding="utf-8")
        try:
            load_settings(env_file=env, must_exist=True)
        except ConfigError as exc:
            shown = "****" if key in SECRET_KEYS else value
            if len(shown) > 80:
                shown = shown[:60]  # long values are shortened in the line
            ours = [line for line in exc.lines if line.startswith(f"{key}: got ")]
            if not any(repr(shown).rstrip("'") in line and rule in line for line in ours):
                failures.append(f"{key}={value[:40]!r}: want {rule!r}, got {exc.lines}")
        else:
            failures.append(f"{key}={value[:40]!r} was accepted")
    assert not failures, "\n".join(failures)


def test_secrets_are_never_echoed_in_an_error(clean_env: None) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(env_file=None, twilio_auth_token="s3cret value", smtp_password="p\x01w")
    text = "\n".join(info.value.lines)
    assert "TWILIO_AUTH_TOKEN: got '****'" in text and "SMTP_PASSWORD: got '****'" in text
    assert "s3cret" not in text and "p\x01w" not in text


def test_limits_refuse_inf_naming_the_rule(clean_env: None) -> None:
    # DAILY_LOSS_LIMIT=inf used to pass "> 0" and switch the breaker off.
    with pytest.raises(ConfigError) as info:
        load_settings(env_file=None, daily_loss_limit="inf")
    assert info.value.lines == [
        "DAILY_LOSS_LIMIT: got 'inf' — allowed: a finite number > 0 and <= 1e+15 "
        "(inf and nan are not limits)"
    ]


def test_empty_optional_paths_mean_the_default(tmp_path: Path, clean_env: None) -> None:
    env = tmp_path / ".env"
    keys = ("ARCHIVE_DIR", "HEARTBEAT_FILE", "SIM_STATE_FILE", "DATABASE_FILE", "LOG_DIR")
    env.write_text("".join(f"{k}=\n" for k in keys) + f"DATA_DIR={tmp_path / 'd'}\n")
    s = load_settings(env_file=env, must_exist=True)
    assert s.archive_dir is None  # not the working directory
    assert s.database_path == tmp_path / "d" / "trading.db"
    assert s.log_path == tmp_path / "d" / "logs"


def test_paths_of_the_wrong_kind_are_refused(tmp_path: Path, clean_env: None) -> None:
    a_file = tmp_path / "file"
    a_file.write_text("x")
    with pytest.raises(ConfigError) as info:
        load_settings(env_file=None, stop_file=tmp_path, database_file=tmp_path, data_dir=a_file)
    lines = "\n".join(info.value.lines)
    assert "STOP_FILE: got" in lines and "a file path, not a directory" in lines
    assert "DATABASE_FILE: got" in lines
    assert "DATA_DIR: got" in lines and "a directory path, not a file" in lines


def test_good_values_of_the_validated_kinds_are_accepted(clean_env: None) -> None:
    s = load_settings(
        env_file=None,
        ib_host="gateway.internal",
        smtp_host="2001:db8::1",
        twilio_base_url="https://relay.example/twilio/",
        twilio_account_sid="AC" + "a1" * 16,
        twilio_whatsapp_from="whatsapp:+14155238886",
        alert_whatsapp_to="whatsapp:+15551234567, whatsapp:+447700900123",
        alert_email_from="alerts@example.com",
        alert_email_to="ops@example.com,o.p+s@sub.example.org",
        telegram_chat_id="-1001234567890",
        telegram_bot_token="123456789:AAH-bot_token",
        ib_account=" DU1234567 ",
    )
    assert s.twilio_base_url == "https://relay.example/twilio"
    assert s.alert_whatsapp_to == ("whatsapp:+15551234567", "whatsapp:+447700900123")


def _bad_env(column: int) -> str:
    """A .env with a bad value for every key (the ``column``-th case of its row, or the last)."""
    lines = []
    for key in EXAMPLE_KEYS:
        cases = cases_for(key)
        lines.append(f"{key}={cases[min(column, len(cases) - 1)][0]}")
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize("column", [0, 1, 2, 4])
def test_check_exits_2_listing_every_bad_key_before_anything_starts(
    tmp_path: Path, column: int
) -> None:
    env = tmp_path / "bad.env"
    data_dir = tmp_path / "data"
    # DATA_DIR's own bad value is in the file; the environment must not rescue any key.
    env.write_text(_bad_env(column), encoding="utf-8")
    proc = subprocess.run(
        [sys.executable, "-m", "tui.commands.cli", "--env-file", str(env), "check"],
        env={"PATH": os.environ.get("PATH", ""), "PYTHONPATH": str(REPO)},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    assert proc.stderr.startswith("trading-console: invalid settings, nothing was started:")
    for key in EXAMPLE_KEYS:
        assert re.search(rf"^  {key}: got .* — allowed: ", proc.stderr, flags=re.M), key
    assert not data_dir.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["bad.env"]
