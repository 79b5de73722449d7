-- Outcome mix of every episode (primary horizon) by level kind × approach direction × time bucket,
-- pooled over all sessions, with a Wilson 90% interval for the break share.
{%- set z = var('wilson_z_90') %}

with episodes as (
    select * from {{ ref('stg_episodes') }}
),

segments as (
    select
        level_kind,
        direction,
        time_bucket,
        count(*) as episodes,
        count(distinct session) as sessions,
        count(label) as labelled,
        count(*) filter (where label = 'BREAK') as breaks,
        count(*) filter (where label = 'REJECT') as rejects,
        count(*) filter (where label = 'CHOP') as chops,
        avg(time_to_barrier_s) filter (where label in ('BREAK', 'REJECT')) as mean_time_to_barrier_s,
        avg(mfe_atr) as mean_mfe_atr,
        avg(mae_atr) as mean_mae_atr
    from episodes
    group by 1, 2, 3
)

select
    level_kind || '_' || direction || '_' || time_bucket as segment_id,
    level_kind,
    direction,
    time_bucket,
    episodes,
    sessions,
    labelled,
    breaks,
    rejects,
    chops,
    breaks::double / nullif(labelled, 0) as break_share,
    rejects::double / nullif(labelled, 0) as reject_share,
    chops::double / nullif(labelled, 0) as chop_share,
    {{ wilson_bound('breaks', 'labelled', z, 'lower') }} as break_share_lo90,
    {{ wilson_bound('breaks', 'labelled', z, 'upper') }} as break_share_hi90,
    mean_time_to_barrier_s,
    mean_mfe_atr,
    mean_mae_atr
from segments
order by level_kind, direction, time_bucket
