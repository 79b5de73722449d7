-- Triple-barrier outcomes (silver/labels) of each anchor; `label` is the primary (4-min) horizon.
{%- set columns = {
    'event_id': 'varchar', 'threshold_pt': 'double',
    'label_2m': 'varchar', 'ambiguous_2m': 'boolean', 'time_to_barrier_s_2m': 'double',
    'mfe_atr_2m': 'double', 'mae_atr_2m': 'double',
    'label_4m': 'varchar', 'ambiguous_4m': 'boolean', 'time_to_barrier_s_4m': 'double',
    'mfe_atr_4m': 'double', 'mae_atr_4m': 'double',
    'label_8m': 'varchar', 'ambiguous_8m': 'boolean', 'time_to_barrier_s_8m': 'double',
    'mfe_atr_8m': 'double', 'mae_atr_8m': 'double',
    'label': 'varchar', 'label_end_ns': 'bigint', 'date': 'date',
} %}

select
    {{ typed_columns(columns, exclude=['date']) }},
    cast(date as date) as session
from {{ lake_source('silver', 'labels', columns) }}
