"""A simulated crash in the middle of training, shared by the resume tests."""

from __future__ import annotations

import pytest

from neggen_model.trainer import Trainer


class Interrupted(Exception):
    """Stands for a kill between two epochs."""


def crash_at(monkeypatch: pytest.MonkeyPatch, crash_epoch: int):
    """Every Trainer in this test raises Interrupted when it reaches `crash_epoch` (earlier epochs
    run and checkpoint as usual); returns the real epoch, for the test to put back."""
    run_epoch = Trainer._run_epoch

    def crashing(self, epoch):
        if epoch == crash_epoch:
            raise Interrupted
        return run_epoch(self, epoch)

    monkeypatch.setattr(Trainer, "_run_epoch", crashing)
    return run_epoch
