"""Errors shared across the package (this module imports nothing of cnnlab's)."""

from __future__ import annotations

__all__ = ["SettingError"]


class SettingError(ValueError):
    """A setting has a value it cannot take.

    Carries the setting's name and the problem separately, so that each front end can name the
    setting its own way (the library by its field name, the command line by its flag).

    Attributes:
        owner: what the setting belongs to, e.g. "TrainConfig" or "Augment".
        setting: the field's name, e.g. "epochs".
        problem: what is wrong, e.g. "must be at least 1, got 0".
    """

    def __init__(self, owner: str, setting: str, problem: str) -> None:
        self.owner, self.setting, self.problem = owner, setting, problem
        super().__init__(f"{owner}: {setting} {problem}")
