-- Walk-forward break-model predictions (ml/break_predictions, written by ml/break_predictions): each
-- session's episodes scored by the model as of that session (trained on earlier sessions only).
-- Empty until the model has been trained and has scored a session.
{%- set columns = {
    'episode_id': 'varchar', 'session': 'date', 'ts_ns': 'bigint', 'level_kind': 'varchar', 'direction': 'varchar',
    'time_bucket': 'varchar', 'tier': 'varchar', 'label': 'varchar',
    'p_break': 'double', 'p_break_decisive': 'double', 'p_reject': 'double', 'p_chop': 'double',
    'base_break': 'double', 'base_break_decisive': 'double', 'base_chop': 'double',
    'model_as_of': 'date', 'trained_on_first': 'date', 'trained_on_last': 'date',
    'p_break_baseline': 'double', 'baseline_feature': 'varchar',
} %}

select
    {{ typed_columns(columns) }},
    cast(label = 'BREAK' as integer) as is_break,
    label in ('BREAK', 'REJECT') as is_decisive
from {{ lake_source('ml', 'break_predictions', columns) }}
where label is not null
