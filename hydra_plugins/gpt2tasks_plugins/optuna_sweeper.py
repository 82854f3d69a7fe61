"""`hparams_search=...` (conf/hparams_search/ names this sweeper): hydra-optuna-sweeper's Optuna
sweeper, except that a search whose trials all failed ends like any sweep -- with the summary of its
jobs and their errors (sweep.py) -- instead of Optuna's "No trials are completed yet" traceback
when the plugin asks for the best trial. Defines nothing without the plugin (an optional extra).
"""

import logging

try:
    from hydra_plugins.hydra_optuna_sweeper import optuna_sweeper as plugin
except ImportError:  # the plugin is not installed
    plugin = None

log = logging.getLogger("gpt2tasks")

if plugin is not None:
    class OptunaSweeper(plugin.OptunaSweeper):
        def sweep(self, arguments):
            try:
                return super().sweep(arguments)
            except ValueError as err:
                if "No trials are completed yet" not in str(err):
                    raise
                log.error("No trial of the search completed, so Optuna has no best parameters "
                          "(no optimization_results.yaml); the sweep summary lists each trial's error.")
