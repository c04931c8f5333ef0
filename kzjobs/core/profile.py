"""Profiles: one code path, several sizes. A profile is a YAML file, not a code branch.

``kzjobs/profiles/<name>.yaml`` ships tiny, demo, bench and full; a path to any
YAML file works too.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field

from kzjobs.classify.config import ClassifyConfig
from kzjobs.detect.config import DetectConfig
from kzjobs.level2.config import Level2Config
from kzjobs.method.config import PseudoConfig
from kzjobs.pretrain.config import PretrainConfig
from kzjobs.validate.config import ValidateConfig


class DataConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    n_folds: int = 2
    seed: int = 0


class Profile(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_by_name=True)  # bundles: either key

    name: str
    description: str = ""
    data: DataConfig = Field(default_factory=DataConfig)
    detect: DetectConfig = Field(default_factory=DetectConfig)
    classify: ClassifyConfig = Field(default_factory=ClassifyConfig)
    # YAML section `validate`; the attribute is `validation` (BaseModel.validate exists).
    validation: ValidateConfig = Field(default_factory=ValidateConfig, alias="validate")
    pseudo: PseudoConfig = Field(default_factory=PseudoConfig)
    level2: Level2Config = Field(default_factory=Level2Config)
    pretrain: PretrainConfig = Field(default_factory=PretrainConfig)


PROFILE_NAMES = ("tiny", "demo", "bench", "full")


def load_profile(name_or_path: str) -> Profile:
    """Load a shipped profile by name, or any profile YAML by path."""
    if name_or_path in PROFILE_NAMES:
        text = resources.files("kzjobs.profiles").joinpath(f"{name_or_path}.yaml").read_text()
    else:
        path = Path(name_or_path)
        if not path.is_file():
            raise ValueError(
                f"unknown profile {name_or_path!r}: use one of {PROFILE_NAMES} or a YAML path"
            )
        text = path.read_text()
    data = yaml.safe_load(text) or {}
    data.setdefault("name", Path(name_or_path).stem)
    return Profile.model_validate(data)
