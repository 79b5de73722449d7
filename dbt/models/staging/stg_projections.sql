-- Stream projections (ml/projections): per (30 s bar, level, stream, bars ahead) the q10/q50/q90 of
-- the stream's value `horizon` bars (30 s each) after the bar, from models fitted on sessions before
-- the session, using bars at or before it only. Empty until the first models exist.
{%- set columns = {
    'session': 'date', 't_ns': 'bigint', 'level_kind': 'varchar', 'stream': 'varchar', 'horizon': 'tinyint',
    'value_now': 'double', 'q10': 'double', 'q50': 'double', 'q90': 'double',
    'model_as_of': 'date', 'trained_on_last': 'date',
} %}

select
    {{ typed_columns(columns) }},
    q90 - q10 as band_width,
    {{ ns_to_et('t_ns') }} as ts_et
from {{ lake_source('ml', 'projections', columns) }}
