"""What the paper-figures notebook ``notebooks/paper-figures.ipynb`` needs.

The notebook loads runs and builds panels with this package (imported as ``fd``) and
draws them with :mod:`experiments.plot`. Modules:

* :mod:`experiments.figure_settings` (outside this package, so that
  ``scripts/run_figures.py`` reads it without importing the plotting code): settings read from the ``INFLUENCE_*``
  environment variables (:func:`settings_from_env`) and the figures' fixed tables
  (dataset names, plotted fixed-test columns, regularisation values);
* :mod:`~experiments.figures.runs`: the run registry (:class:`RunSpec`; run ids and
  command lines derived from the experiment classes and their ``build_config``) and the
  loading of runs and supplements;
* :mod:`~experiments.figures.panels`: the panels of each figure and the Spearman tables;
* :mod:`~experiments.figures.output`: writing figures (PDF) and tables (CSV).
"""
from experiments.figure_settings import (
                                        DEFAULT_DATASETS,
                                        DEFAULT_REG_DATASETS,
                                        FIXED_TEST_EXTRA_DATASETS,
                                        FIXED_TEST_IDX,
                                        FIXED_TEST_IDX_MEDIAN,
                                        GENERATED_SUFFIX,
                                        Settings,
                                        display_name,
                                        reg_values,
                                        settings_from_env,
)
from experiments.figures.output import FigureLog, save_figure, save_table
from experiments.figures.panels import (
                                        CdrLFs,
                                        cdr_acc_panels,
                                        cdr_lfs,
                                        cdr_vs_panels,
                                        cex_panel,
                                        combined_apps_panels,
                                        figure4_panels,
                                        fixed_test_column,
                                        fixed_test_table,
                                        group_grid,
                                        lf_statistics,
                                        mnli_acc_panels,
                                        mnli_genre_contrib_panels,
                                        mnli_genre_effect,
                                        mnli_genres,
                                        mnli_size_panel,
                                        reg_grid,
                                        reg_spearman_table,
                                        regs_spearman_series,
                                        rho_table,
)
from experiments.figures.runs import (
                                        MNLI_NONFIRES_GENRES,
                                        MNLI_TEST_GENRES,
                                        LoadedRun,
                                        RunSpec,
                                        counterexamples_run,
                                        credit_assignment_run,
                                        data_dir_of,
                                        data_valuation_run,
                                        generated_settings,
                                        load,
                                        load_cdr_labeling_info,
                                        load_counterexamples,
                                        load_credit_assignment,
                                        load_data_valuation,
                                        load_main_runs,
                                        load_mnli_train_genres,
                                        load_reg_sweep,
                                        load_run,
                                        load_ss_logreg,
                                        reg_sweep_message,
                                        ss_logreg_run,
)

__all__ = [
    "CdrLFs", "DEFAULT_DATASETS", "DEFAULT_REG_DATASETS", "FIXED_TEST_EXTRA_DATASETS", "FIXED_TEST_IDX",
    "FIXED_TEST_IDX_MEDIAN", "FigureLog", "GENERATED_SUFFIX", "LoadedRun", "MNLI_NONFIRES_GENRES", "MNLI_TEST_GENRES",
    "RunSpec", "Settings",
    "cdr_acc_panels", "cdr_lfs", "cdr_vs_panels", "cex_panel", "combined_apps_panels", "counterexamples_run",
    "credit_assignment_run", "data_dir_of", "data_valuation_run", "display_name", "figure4_panels",
    "fixed_test_column", "fixed_test_table", "generated_settings", "group_grid", "lf_statistics", "load",
    "load_cdr_labeling_info",
    "load_counterexamples", "load_credit_assignment", "load_data_valuation", "load_main_runs",
    "load_mnli_train_genres", "load_reg_sweep", "load_run", "load_ss_logreg", "mnli_acc_panels",
    "mnli_genre_contrib_panels", "mnli_genre_effect", "mnli_genres", "mnli_size_panel", "reg_grid",
    "reg_spearman_table", "reg_sweep_message", "reg_values", "regs_spearman_series", "rho_table", "save_figure",
    "save_table", "settings_from_env", "ss_logreg_run",
]
