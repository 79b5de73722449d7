-- Episode metadata (gold/episodes) without the ~127 vector dimensions: who, when, which level,
-- which way, which tier, and the primary-horizon outcome with its excursions.
{%- set columns = {
    'episode_id': 'varchar', 'session': 'date', 'ts_ns': 'bigint', 'state_t_ns': 'bigint',
    'level_kind': 'varchar', 'level_price': 'double', 'direction': 'varchar', 'dir_sign': 'tinyint',
    'time_bucket': 'varchar', 'tier': 'varchar', 'anchor_atr': 'double',
    'label': 'varchar', 'label_2m': 'varchar', 'label_4m': 'varchar', 'label_8m': 'varchar', 'ambiguous': 'boolean',
    'time_to_barrier_s': 'double', 'mfe_atr': 'double', 'mae_atr': 'double', 'label_end_ns': 'bigint',
    'attempt_index': 'integer',
} %}

select
    {{ typed_columns(columns) }},
    {{ ns_to_et('ts_ns') }} as ts_et
from {{ lake_source('gold', 'episodes', columns) }}
