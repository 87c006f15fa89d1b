"""A tiny dataclass base shared by every config (train, model, diffusion)."""
import json
import os
from copy import deepcopy
from dataclasses import dataclass


@dataclass
class BaseConfig:
    def clone(self):
        return deepcopy(self)

    def inherit(self, another):
        """Copy the values of the keys this config shares with ``another``."""
        common = set(self.__dict__) & set(another.__dict__)
        for k in common:
            setattr(self, k, getattr(another, k))

    def propagate(self):
        """Push this config's values down into its nested configs."""
        for v in self.__dict__.values():
            if isinstance(v, BaseConfig):
                v.inherit(self)
                v.propagate()

    def save(self, save_path):
        """Write the JSON-able part of the config to ``save_path``."""
        dirname = os.path.dirname(save_path)
        if dirname:
            os.makedirs(dirname, exist_ok=True)
        with open(save_path, 'w') as f:
            json.dump(self.as_dict_jsonable(), f)

    def load(self, load_path):
        with open(load_path) as f:
            self.from_dict(json.load(f))

    def from_dict(self, dict, strict=False):
        for k, v in dict.items():
            if not hasattr(self, k):
                if strict:
                    raise ValueError(f"unknown config key '{k}'")
                print(f"ignoring unknown config key '{k}'")
                continue
            if isinstance(self.__dict__[k], BaseConfig):
                self.__dict__[k].from_dict(v)
            else:
                self.__dict__[k] = v

    def as_dict_jsonable(self):
        """The config as a dict, nested configs included; values that JSON
        cannot hold (enums, objects) are left out, as the reference does."""
        conf = {}
        for k, v in self.__dict__.items():
            if isinstance(v, BaseConfig):
                conf[k] = v.as_dict_jsonable()
            elif jsonable(v):
                conf[k] = v
        return conf


def jsonable(x):
    try:
        json.dumps(x)
        return True
    except (TypeError, ValueError):
        return False
