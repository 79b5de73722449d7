-- Anchors (silver/events): one row per touch of a level, with its ET wall-clock time.
{%- set columns = {
    'event_id': 'varchar', 'session': 'date', 'ts_ns': 'bigint', 'level_kind': 'varchar',
    'level_price': 'double', 'direction': 'varchar', 'dir_sign': 'tinyint', 'spot': 'double',
    'atr': 'double', 'band_pt': 'double', 'attempt_index': 'integer', 'time_since_last_touch_s': 'double',
} %}

select
    {{ typed_columns(columns) }},
    {{ ns_to_et('ts_ns') }} as ts_et
from {{ lake_source('silver', 'events', columns) }}
