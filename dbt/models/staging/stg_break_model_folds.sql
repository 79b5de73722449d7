-- Out-of-fold metrics of break-model training runs (ml/break_model_folds, written by ml/break_model),
-- one partition per test session. Empty until a model has been trained.
{%- set columns = {
    'run_id': 'varchar', 'scheme': 'varchar', 'fold': 'integer', 'test_session': 'date',
    'n_train': 'bigint', 'n_test': 'bigint', 'purged': 'bigint',
    'auc': 'double', 'log_loss': 'double', 'log_loss_base': 'double',
    'brier': 'double', 'brier_base': 'double', 'ece': 'double',
} %}

select
    {{ typed_columns(columns) }}
from {{ lake_source('ml', 'break_model_folds', columns) }}
