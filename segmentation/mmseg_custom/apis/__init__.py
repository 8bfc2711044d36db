"""Runner set-up shared by the train / test / infer entry points."""
from .runner import (build_runner, common_args, enable_amp, load_config, load_eval_config,
                     set_local_rank, skip_init_weights)

__all__ = ["build_runner", "common_args", "enable_amp", "load_config", "load_eval_config",
           "set_local_rank", "skip_init_weights"]
