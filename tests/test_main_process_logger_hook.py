"""MainProcessLoggerHook: the test metrics' JSON comes from the main process only, and is valid."""
from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

import mmseg_custom  # noqa: F401  (registers the hook)
from mmseg.registry import HOOKS
from mmseg_custom.engine import main_process_logger_hook


class _LogProcessor:
    def get_log_after_epoch(self, runner, batches, mode, with_non_scalar):
        assert (batches, mode, with_non_scalar) == (3, "test", True)
        return {"mIoU": 52.5, "cloud/ordinary/mIoU": 61.25}, "Iter(test) [3/3] mIoU: 52.5000"


@pytest.mark.parametrize("main", [True, False], ids=["rank0", "other-rank"])
def test_json_written_by_the_main_process_only(tmp_path, monkeypatch, main):
    monkeypatch.setattr(main_process_logger_hook, "is_main_process", lambda: main)
    hook = HOOKS.build(dict(type="MainProcessLoggerHook", interval=50))
    hook.json_log_path = "20261124_000000.json"
    logged = []
    runner = SimpleNamespace(log_processor=_LogProcessor(), test_dataloader=[0, 1, 2], log_dir=str(tmp_path),
                             logger=SimpleNamespace(info=logged.append))
    hook.after_test_epoch(runner, metrics={"mIoU": 52.5})
    assert logged == ["Iter(test) [3/3] mIoU: 52.5000"]  # every rank logs the line
    written = list(tmp_path.glob("*.json"))
    if main:
        assert [p.name for p in written] == ["20261124_000000.json"]
        assert json.loads(written[0].read_text()) == {"mIoU": 52.5, "cloud/ordinary/mIoU": 61.25}
    else:
        assert written == []
