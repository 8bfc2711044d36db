"""mmengine's LoggerHook with the test metrics' JSON written by one process."""
from __future__ import annotations

import os.path as osp

from mmengine.dist import is_main_process
from mmengine.fileio import dump
from mmengine.hooks import LoggerHook
from mmseg.registry import HOOKS


@HOOKS.register_module()
class MainProcessLoggerHook(LoggerHook):
    """``LoggerHook`` whose ``after_test_epoch`` writes ``<log_dir>/<timestamp>.json`` on the main
    process only.

    mmengine 0.10.7's hook dumps the test metrics from every rank into the same file; under
    ``dist_test.sh`` with two ranks the writes interleave (a shorter document written over a longer
    one leaves the longer one's tail: the file is no longer valid JSON). Every rank still logs the
    metrics line. Arguments as ``LoggerHook``.
    """

    def after_test_epoch(self, runner, metrics: dict[str, float] | None = None) -> None:
        tag, log_str = runner.log_processor.get_log_after_epoch(
            runner, len(runner.test_dataloader), "test", with_non_scalar=True)
        runner.logger.info(log_str)
        if is_main_process():
            dump(self._process_tags(tag), osp.join(runner.log_dir, self.json_log_path))
