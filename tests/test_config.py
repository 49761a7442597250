import pytest

from edgekd.config import build_config
from edgekd.errors import ConfigError


def test_precedence_preset_then_yaml_then_flags(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("preset: smoke\nbudget_ms: 12\nlambda: 0.9\nstudent-epochs: 4\n")
    cfg = build_config({"budget_ms": 5.0, "lambda": None}, f)
    assert cfg.preset == "smoke"
    assert cfg.samples_per_class == 60  # from the smoke preset
    assert cfg.budget_ms == 5.0  # flag beats file
    assert cfg.lambda_ == 0.9  # file beats preset default
    assert cfg.student_epochs == 4


@pytest.mark.parametrize("flags, message", [
    ({"budget_ms": 0.0}, "--budget-ms"),
    ({"budget_ms": -3.0}, "positive"),
    ({"preset": "huge"}, "unknown preset"),
    ({"seed": "x"}, "--seed"),
])
def test_bad_values_name_the_flag(flags, message):
    with pytest.raises(ConfigError, match=message):
        build_config(flags)


def test_bad_config_files(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        build_config({}, tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("budget_ms: [1,\n")
    with pytest.raises(ConfigError, match="YAML"):
        build_config({}, bad)
    unknown = tmp_path / "unknown.yaml"
    unknown.write_text("budgett_ms: 3\n")
    with pytest.raises(ConfigError, match="budgett_ms"):
        build_config({}, unknown)


def test_an_unknown_key_suggests_the_close_one(tmp_path):
    import pytest

    from edgekd.config import build_config
    from edgekd.errors import ConfigError

    cfg = tmp_path / "c.yaml"
    cfg.write_text("budgt_ms: 5\n")
    with pytest.raises(ConfigError, match="unknown option 'budgt_ms' in the configuration; did you mean 'budget_ms'"):
        build_config({}, cfg)
