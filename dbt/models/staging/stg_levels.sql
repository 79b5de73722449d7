-- Level values (silver/levels) with the time each becomes known: PM/OR levels once per session,
-- SMA_90/EMA_20 at every 2-min close (including the overnight warm-up).
{%- set columns = {'level_kind': 'varchar', 'price': 'double', 'known_at_ns': 'bigint', 'date': 'date'} %}

select
    cast(date as date) as session,
    {{ typed_columns(columns, exclude=['date']) }},
    {{ ns_to_et('known_at_ns') }} as known_at_et
from {{ lake_source('silver', 'levels', columns) }}
