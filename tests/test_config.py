"""gzmorph.config: one strict to_dict/from_dict for every config, and build for user input."""

import json
from dataclasses import dataclass, field

import pytest

from gzmorph.config import Config, build, int_tuple
from gzmorph.errors import ConfigError
from gzmorph.models.trainconfig import TrainConfig
from gzmorph.options import DataOptions
from gzmorph.training.options import RunOptions
from gzmorph.training.recipes import get_preset


@dataclass(frozen=True)
class Inner(Config):
    k: int = 3

    def __post_init__(self):
        if self.k < 1:
            raise ValueError(f"k must be >= 1, got {self.k}")


@dataclass(frozen=True)
class Outer(Config):
    name: str = "a"
    inner: Inner = field(default_factory=Inner)
    sizes: tuple[int, ...] = (1, 2)


def test_round_trip_through_json_with_nested_configs():
    cfg = Outer("b", Inner(5), (3, 4))
    data = json.loads(json.dumps(cfg.to_dict()))
    assert data == {"name": "b", "inner": {"k": 5}, "sizes": [3, 4]}
    back = Outer.from_dict(data)
    assert back.inner == Inner(5) and back.name == "b"


def test_unknown_keys_and_bad_values_are_one_line_errors():
    with pytest.raises(ConfigError, match=r"unknown Outer fields \['nme'\]"):
        Outer.from_dict({"nme": "typo"})
    with pytest.raises(ConfigError, match="Inner: k must be >= 1"):
        build(Inner, {"k": 0})
    with pytest.raises(ValueError, match="Outer.sizes must be a sequence of integers"):
        int_tuple("Outer", "sizes", "12")


def test_every_package_config_uses_the_mixin():
    from gzmorph.evaluation.analyze import AnalyzeConfig
    from gzmorph.evaluation.results import EvaluationConfig
    from gzmorph.inference.config import PredictConfig
    from gzmorph.nn.augment import AugmentConfig
    from gzmorph.nn.model import ModelConfig
    from gzmorph.nn.symmetric import SymmetricConfig

    for cls in (TrainConfig, RunOptions, DataOptions, PredictConfig, AnalyzeConfig, EvaluationConfig,
                AugmentConfig, ModelConfig, SymmetricConfig):
        assert issubclass(cls, Config), cls
    for name in ("paper", "p4m", "cyclic", "small"):
        cfg = get_preset(name)
        assert TrainConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg


def test_data_options_are_validated():
    assert DataOptions().id_column == "GalaxyID"
    with pytest.raises(ConfigError, match="workers"):
        build(DataOptions, {"workers": -1})
    with pytest.raises(ConfigError, match="processes"):
        build(RunOptions, {"processes": 0})
