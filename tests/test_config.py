import subprocess
import sys
from pathlib import Path

import pytest

from core.config import ConfigError, Settings, load_settings
from core.model import TradingMode

REPO = Path(__file__).resolve().parent.parent
CLI = [sys.executable, "-m", "tui.commands.cli"]


def run_cli(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    """The command line of the tree under test (PYTHONPATH), not an installed copy, in ``cwd``
    (so no ./.env is read) with nothing but ``env``: no PATH, no settings from this shell."""
    return subprocess.run(
        [*CLI, *args],
        env={"PATH": "", "PYTHONPATH": str(REPO), **env},
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_defaults_run_sim_with_nothing_configured(monkeypatch: pytest.MonkeyPatch) -> None:
    s = load_settings(env_file=None)
    assert s.trading_mode is TradingMode.SIM
    assert s.symbols and s.sim_quotes_per_second == 4.0
    assert s.stop_file == Path("STOP")


def test_symbols_are_split_and_normalised() -> None:
    s = load_settings(env_file=None, symbols=" aapl, msft ,spy")
    assert s.symbols == ("AAPL", "MSFT", "SPY")


def test_env_file_is_read(tmp_path: Path) -> None:
    env = tmp_path / ".env"
    env.write_text('SYMBOLS=IBM\nMAX_LEVERAGE=1.5\nSTRATEGY_PARAMS={"fast": 3, "slow": 9}\n')
    s = load_settings(env_file=env)
    assert s.symbols == ("IBM",) and s.max_leverage == 1.5
    assert s.strategy_params == {"fast": 3, "slow": 9}


@pytest.mark.parametrize(
    ("key", "value", "expect"),
    [
        ("trading_mode", "real", "TRADING_MODE: got 'real'"),
        ("symbols", " , ", "SYMBOLS: got ' , '"),
        ("max_leverage", "0.5", "MAX_LEVERAGE: got '0.5' — allowed: a number >= 1"),
        ("daily_loss_limit", "-100", "DAILY_LOSS_LIMIT: got '-100' — allowed: a number > 0"),
        ("max_position_size", "lots", "MAX_POSITION_SIZE: got 'lots' — allowed: a number"),
        ("sim_seed", "x", "SIM_SEED: got 'x' — allowed: a whole number"),
        ("strategy_params", "{bad", "STRATEGY_PARAMS: got '{bad'"),
        ("exchange_calendar", "MARS", "EXCHANGE_CALENDAR: got 'MARS'"),
    ],
)
def test_bad_values_name_key_value_and_allowed(key: str, value: str, expect: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(env_file=None, **{key: value})
    assert any(line.startswith(expect) for line in info.value.lines), info.value.lines


def test_every_bad_key_gets_its_own_line() -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(env_file=None, max_leverage="0", daily_loss_limit="0", symbols="")
    keys = sorted(line.split(":")[0] for line in info.value.lines)
    assert keys == ["DAILY_LOSS_LIMIT", "MAX_LEVERAGE", "SYMBOLS"]


def test_cli_exits_2_before_anything_starts(tmp_path: Path) -> None:
    env = {"MAX_LEVERAGE": "0.2", "TRADING_MODE": "moon", "DATA_DIR": str(tmp_path / "d")}
    proc = run_cli(["--headless"], env, tmp_path)
    assert proc.returncode == 2
    assert "MAX_LEVERAGE: got '0.2'" in proc.stderr
    assert "TRADING_MODE: got 'moon'" in proc.stderr
    assert not (tmp_path / "d").exists()  # nothing was created


def test_check_prints_effective_settings(tmp_path: Path) -> None:
    proc = run_cli(["check"], {"SYMBOLS": "IBM,T"}, tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "SYMBOLS" in proc.stdout and "IBM,T" in proc.stdout
    assert "settings OK" in proc.stdout


def test_cli_subprocesses_import_the_tree_under_test(tmp_path: Path) -> None:
    # What run_cli runs is this checkout's tui, whatever copy is installed elsewhere.
    code = "import tui.commands.cli as m; print(m.__file__)"
    proc = subprocess.run(
        [sys.executable, "-c", code],
        env={"PATH": "", "PYTHONPATH": str(REPO)},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert Path(proc.stdout.strip()).resolve() == REPO / "tui" / "commands" / "cli.py"


def test_settings_are_frozen() -> None:
    s = Settings(_env_file=None)  # type: ignore[call-arg]
    with pytest.raises(Exception):  # noqa: B017 - pydantic raises ValidationError
        s.max_leverage = 5  # type: ignore[misc]


def test_env_example_lists_every_setting_with_its_default() -> None:
    example = Path(__file__).resolve().parent.parent / ".env.example"
    text = example.read_text()
    for name in Settings.model_fields:
        assert f"{name.upper()}=" in text, f"{name.upper()} missing from .env.example"
    assert load_settings(env_file=example) == load_settings(env_file=None)


def test_env_example_is_generated_from_the_settings() -> None:
    from core.config import render_env_example

    example = Path(__file__).resolve().parent.parent / ".env.example"
    assert example.read_text() == render_env_example(), "run: python -m core.config > .env.example"


def test_secrets_are_masked_by_check() -> None:
    s = load_settings(env_file=None, twilio_auth_token="tok-123", smtp_password="pw-456")
    shown = s.masked()
    assert shown["TWILIO_AUTH_TOKEN"] == "****" and shown["SMTP_PASSWORD"] == "****"
    assert "tok-123" not in str(shown) and "pw-456" not in str(shown)


def test_a_misspelt_key_in_the_env_file_is_refused_by_name(tmp_path: Path) -> None:
    env = tmp_path / "x.env"
    env.write_text("DAILY_LOS_LIMIT=500\nSYMBOLS=IBM\n")
    with pytest.raises(ConfigError) as info:
        load_settings(env_file=env, must_exist=True)
    assert info.value.lines == [
        f"DAILY_LOS_LIMIT: not a setting — did you mean DAILY_LOSS_LIMIT? (in {env})"
    ]


def test_other_unknown_keys_in_the_env_file_warn_by_name(tmp_path: Path) -> None:
    env = tmp_path / "x.env"
    env.write_text("COMPOSE_PROJECT_NAME=desk\nSYMBOLS=IBM\n")
    warnings: list[str] = []
    s = load_settings(env_file=env, must_exist=True, warnings=warnings)
    assert s.symbols == ("IBM",)
    assert warnings == [
        f"COMPOSE_PROJECT_NAME: not a setting of trading-console, ignored (in {env})"
    ]


def test_environment_variables_that_are_not_ours_are_left_alone(tmp_path: Path) -> None:
    # The environment holds everyone's variables; only the .env file is checked for typos.
    env = {"DAILY_LOS_LIMIT": "5", "MAX_LEVERAG": "9", "DATA_DIR": str(tmp_path / "d")}
    proc = run_cli(["check"], env, tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""


def test_a_non_utf8_env_file_names_the_file_and_the_byte(tmp_path: Path) -> None:
    env = tmp_path / "latin1.env"
    env.write_bytes("SYMBOLS=IBM\nIB_ACCOUNT=Zürich\n".encode("latin-1"))
    proc = run_cli(["--env-file", str(env), "check"], {}, tmp_path)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert f"{env}: not UTF-8 text — byte 0xfc at offset 24 (line 2)" in proc.stderr


def test_a_misspelt_key_stops_the_command_line(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text(f"DAILY_LOS_LIMIT=500\nDATA_DIR={tmp_path / 'd'}\n")
    proc = run_cli(["--headless"], {}, tmp_path)
    assert proc.returncode == 2
    assert "DAILY_LOS_LIMIT: not a setting — did you mean DAILY_LOSS_LIMIT?" in proc.stderr
    assert not (tmp_path / "d").exists()


def test_a_utf8_byte_order_mark_is_not_part_of_the_first_key(tmp_path: Path) -> None:
    env = tmp_path / "bom.env"
    env.write_bytes(b"\xef\xbb\xbfSYMBOLS=IBM\n")
    assert load_settings(env_file=env, must_exist=True).symbols == ("IBM",)
