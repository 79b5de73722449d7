-- Walk-forward retrieval answers (reports/retrieval_predictions, written by reports/retrieval_evaluation):
-- p(BREAK/REJECT/CHOP) of each labelled episode from its session's as-of index. Empty until the
-- evaluation has run.
{%- set columns = {
    'episode_id': 'varchar', 'session': 'date', 'ts_ns': 'bigint', 'level_kind': 'varchar', 'direction': 'varchar',
    'time_bucket': 'varchar', 'label': 'varchar', 'p_break': 'double', 'p_reject': 'double', 'p_chop': 'double',
    'base_break': 'double', 'p_break_low': 'double', 'p_break_high': 'double', 'effective_n': 'double',
    'insufficient_history': 'boolean', 'granularity': 'varchar',
} %}

select
    {{ typed_columns(columns) }},
    cast(label = 'BREAK' as integer) as is_break
from {{ lake_source('reports', 'retrieval_predictions', columns) }}
