-- Pentaview streams (gold/streams) with ET wall-clock time: the five canonical streams, the merged
-- pressure/structure streams, the composites and the slope of smoothed pressure. Orientation:
-- σ_M, σ_F, σ_P > 0 = price up; σ_B, σ_R > 0 = through the level; σ_D > 0 = fuel; σ_S > 0 = good setup.
{%- set columns = {
    'session': 'date', 't_ns': 'bigint', 'level_kind': 'varchar', 'level_price': 'double', 'dir_sign': 'tinyint',
    'time_bucket': 'varchar', 'tier': 'varchar', 'in_approach': 'boolean', 'spot': 'double', 'atr': 'double',
    'd_atr': 'double', 'sigma_m': 'double', 'sigma_f': 'double', 'sigma_b': 'double', 'sigma_d': 'double',
    'sigma_s': 'double', 'sigma_p': 'double', 'sigma_r': 'double', 'alignment': 'double', 'divergence': 'double',
    'alignment_dealer': 'double', 'sigma_p_slope': 'double', 'sigma_p_curvature': 'double',
} %}

select
    {{ typed_columns(columns) }},
    {{ ns_to_et('t_ns') }} as ts_et
from {{ lake_source('gold', 'streams', columns) }}
