"""runtime.run_cli: user errors become one line and exit status 2, other errors propagate."""
from __future__ import annotations

import pytest

from gamma_kit.runtime import run_cli


def test_run_cli_statuses(capsys):
    assert run_cli(lambda: None) == 0
    assert run_cli(lambda: {"a": 1}) == 0          # a function's result that is not a status
    assert run_cli(lambda: 3) == 3

    def missing():
        raise FileNotFoundError("/no/such/file.csv: expected a CSV with columns data,Fovea_X,Fovea_Y")

    assert run_cli(missing) == 2
    err = capsys.readouterr().err
    assert err == "error: /no/such/file.csv: expected a CSV with columns data,Fovea_X,Fovea_Y\n"
    with pytest.raises(ZeroDivisionError):          # a bug keeps its traceback
        run_cli(lambda: 1 / 0)
