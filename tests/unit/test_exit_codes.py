"""Errors to exit codes (DESIGN.md §6): ``core.errors.exit_code`` for every error class, a
bug, Ctrl-C and the Nagios plugin's UNKNOWN."""

from __future__ import annotations

import pytest

from codecache.core import errors
from codecache.core.errors import NAGIOS_UNKNOWN, CodecacheError, Exit, exit_code
from codecache.ops.check import State
from tests.unit.test_http_errors import _error_classes, _instance

# DESIGN.md §6, by class: 1 verification failed; 2 the request is wrong; 3 refused.
_BY_CLASS = [(errors.IntegrityError, 1), ((errors.ConfigError, errors.InvalidName,
                                           errors.NotFound), 2), (CodecacheError, 3)]


@pytest.mark.parametrize("cls", _error_classes(), ids=lambda cls: cls.__name__)
def test_exit_code_of_every_error_class(cls: type[CodecacheError]) -> None:
    err = _instance(cls)
    assert exit_code(err) == next(code for base, code in _BY_CLASS if isinstance(err, base))
    assert exit_code(err, nagios=True) == State.UNKNOWN


@pytest.mark.parametrize("err", [RuntimeError("x"), KeyError("x"), OSError(5, "EIO"),
                                 ValueError("x"), AssertionError()], ids=repr)
def test_a_bug_exits_70_not_3(err: Exception) -> None:
    assert exit_code(err) == Exit.SOFTWARE == 70
    assert exit_code(err, nagios=True) == State.UNKNOWN == NAGIOS_UNKNOWN


def test_ctrl_c_is_130_for_every_command() -> None:
    assert exit_code(KeyboardInterrupt()) == 130
    assert exit_code(KeyboardInterrupt(), nagios=True) == 130


def test_the_codes_are_plain_integers() -> None:
    # A JSON log line carries the exit code: a number, not an enum's name.
    assert type(exit_code(RuntimeError())) is int
    assert [int(e) for e in Exit] == [0, 1, 2, 3, 70, 130]
