-- Per session, every outright ES contract's RTH volume share (bronze/front_month_contract);
-- `is_front` marks the contract every downstream table reads.
{%- set columns = {
    'symbol': 'varchar', 'instrument_id': 'ubigint', 'rth_volume': 'ubigint', 'share': 'double', 'is_front': 'boolean',
    'dominance': 'double', 'roll_contaminated': 'boolean', 'volume_source': 'varchar', 'date': 'date',
} %}

select
    cast(date as date) as session,
    {{ typed_columns(columns, exclude=['date']) }}
from {{ lake_source('bronze', 'front_month_contract', columns) }}
